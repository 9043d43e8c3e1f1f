"""A lab EST CA (RFC 7030) over real HTTPS on loopback: cacerts, simpleenroll, simplereenroll,
csrattrs, optional label, HTTP Basic or TLS client-certificate auth, and a manual-approval
mode answering 202 + Retry-After until the operator approves.

Also holds `ThreadedHTTPS`, which runs an aiohttp app in its own thread and loop so tests and
subprocesses can talk to a simulator from any event loop. Imports nothing from monitor/,
renewers/ or alerts/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from lab.pki import CA, CLIENT_AUTH, SERVER_AUTH, write_key_and_chain

PKCS7_MIME = "application/pkcs7-mime"


class ThreadedHTTPS:
    """An aiohttp application served over TLS on 127.0.0.1 from a background thread."""

    def __init__(self, app: web.Application, ssl_context: ssl.SSLContext) -> None:
        self.app = app
        self.ssl_context = ssl_context
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> ThreadedHTTPS:
        self._thread = threading.Thread(target=self._run, name="lab-https", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:  # surfaced to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        if self._runner is not None:
            loop.run_until_complete(self._runner.cleanup())
        loop.close()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> ThreadedHTTPS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def lab_server_context(
    ca: CA, hostname: str, directory: Path, client_ca: CA | None = None
) -> ssl.SSLContext:
    """A TLS server context with a leaf for `hostname` and 127.0.0.1 signed by `ca`."""
    leaf, key = ca.issue(
        hostname, [hostname, "127.0.0.1"], eku=[SERVER_AUTH], key_kind="ec", key_size=256
    )
    assert key is not None
    cert_file, key_file = write_key_and_chain(directory, hostname, leaf, key, ca.chain()[:-1])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(
            cadata=client_ca.cert.public_bytes(serialization.Encoding.PEM).decode()
        )
    return ctx


def pkcs7_base64(certs: list[x509.Certificate]) -> bytes:
    """A certs-only PKCS#7 bag, base64 in 64-column lines as RFC 7030 servers send it."""
    der = pkcs7.serialize_certificates(certs, serialization.Encoding.DER)
    return base64.encodebytes(der).replace(b"\n", b"\r\n")


@dataclass
class ESTRequest:
    """One enrollment request as the CA sees it (keyed by the CSR)."""

    key: str
    csr: x509.CertificateSigningRequest
    operation: str
    user: str
    label: str | None
    approved: bool = False
    cert: x509.Certificate | None = None


@dataclass
class ESTSimulator:
    """The EST CA. `users` maps Basic-auth names to passwords."""

    users: dict[str, str] = field(default_factory=lambda: {"est": "est-secret"})
    manual_approval: bool = False
    retry_after: int = 1
    labels: tuple[str, ...] = ("expressway",)
    client_ca: CA | None = None  # accepts TLS client certs it signed, when set
    csr_attrs_der: bytes | None = None
    eku: list[x509.ObjectIdentifier] = field(default_factory=lambda: [SERVER_AUTH, CLIENT_AUTH])
    requests: dict[str, ESTRequest] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = CA.create("Lab EST Root CA")
        self.issuing = CA.create("Lab EST Issuing CA", parent=self.root)
        self._tmp = tempfile.TemporaryDirectory(prefix="lab-est-")
        self.directory = Path(self._tmp.name)
        self.trust_anchor = self.root.write_bundle(self.directory / "est-root.pem")
        self._server: ThreadedHTTPS | None = None

    # --- operator side -------------------------------------------------------
    @property
    def submissions(self) -> int:
        """How many distinct CSRs reached the CA (a resent pending CSR is not a new one)."""
        return len(self.requests)

    def approve_all(self) -> None:
        for req in self.requests.values():
            req.approved = True

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/.well-known/est"

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.port

    def start(self) -> ESTSimulator:
        app = web.Application()
        for prefix in ("/.well-known/est", "/.well-known/est/{label}"):
            app.router.add_get(prefix + "/cacerts", self._cacerts)
            app.router.add_get(prefix + "/csrattrs", self._csrattrs)
            app.router.add_post(prefix + "/simpleenroll", self._enroll)
            app.router.add_post(prefix + "/simplereenroll", self._enroll)
        ctx = lab_server_context(self.root, "est.lab.test", self.directory, self.client_ca)
        self._server = ThreadedHTTPS(app, ctx).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._tmp.cleanup()

    # --- protocol side -------------------------------------------------------
    def _label(self, request: web.Request) -> str | None:
        label = request.match_info.get("label")
        if label is not None and label not in self.labels:
            raise web.HTTPNotFound(text=f"unknown EST label {label!r}\n")
        return label

    def _authenticate(self, request: web.Request) -> str:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        if self.client_ca is not None and ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                cert = x509.load_der_x509_certificate(der)
                return "tls:" + cert.subject.rfc4514_string()
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
            if self.users.get(user) == password and user:
                return user
        raise web.HTTPUnauthorized(
            headers={"WWW-Authenticate": 'Basic realm="estrealm"'}, text="authentication required\n"
        )

    async def _cacerts(self, request: web.Request) -> web.Response:
        self._label(request)
        self.hits.append("cacerts")
        return web.Response(
            body=pkcs7_base64(self.issuing.chain()),
            headers={"Content-Type": PKCS7_MIME, "Content-Transfer-Encoding": "base64"},
        )

    async def _csrattrs(self, request: web.Request) -> web.Response:
        self._label(request)
        self.hits.append("csrattrs")
        if self.csr_attrs_der is None:
            return web.Response(status=204)
        return web.Response(
            body=base64.encodebytes(self.csr_attrs_der),
            headers={"Content-Type": "application/csrattrs", "Content-Transfer-Encoding": "base64"},
        )

    async def _enroll(self, request: web.Request) -> web.Response:
        label = self._label(request)
        user = self._authenticate(request)
        operation = request.path.rsplit("/", 1)[-1]
        self.hits.append(operation)
        if request.content_type != "application/pkcs10":
            return web.Response(status=415, text="Content-Type must be application/pkcs10\n")
        body = await request.read()
        try:
            csr = x509.load_der_x509_csr(base64.b64decode(b"".join(body.split()), validate=True))
        except ValueError:
            return web.Response(status=400, text="body is not a base64 DER PKCS#10 request\n")
        if not csr.is_signature_valid:
            return web.Response(status=400, text="CSR signature does not verify\n")
        key = hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).hexdigest()
        req = self.requests.get(key)
        if req is None:
            req = ESTRequest(key, csr, operation, user, label, approved=not self.manual_approval)
            self.requests[key] = req
        if not req.approved:
            return web.Response(
                status=202,
                headers={"Retry-After": str(self.retry_after)},
                text="request is waiting for manual approval\n",
            )
        if req.cert is None:
            cn = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            try:
                san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                sans = [str(v) for v in san.get_values_for_type(x509.DNSName)]
            except x509.ExtensionNotFound:
                sans = []
            req.cert, _ = self.issuing.issue(
                str(cn[0].value) if cn else (sans[0] if sans else "est-client"),
                sans,
                public_key=csr.public_key(),
                eku=self.eku,
                days=90,
            )
        return web.Response(
            body=pkcs7_base64([req.cert]),
            headers={
                "Content-Type": PKCS7_MIME + "; smime-type=certs-only",
                "Content-Transfer-Encoding": "base64",
            },
        )

    def __enter__(self) -> ESTSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the EST simulator in the foreground: `python -m lab.est [--manual]`."""
    import argparse  # noqa: PLC0415
    import time  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m lab.est")
    parser.add_argument("--manual", action="store_true", help="answer 202 until approved")
    args = parser.parse_args(argv)
    sim = ESTSimulator(manual_approval=args.manual).start()
    print(f"EST CA at {sim.url} (user est / est-secret), trust anchor {sim.trust_anchor}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
