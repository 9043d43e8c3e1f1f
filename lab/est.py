"""A lab EST CA (RFC 7030) over real HTTPS on loopback: cacerts, simpleenroll, simplereenroll,
csrattrs, optional label, HTTP Basic and/or TLS client-certificate auth, and a manual-approval
mode answering 202 + Retry-After until the operator approves.

It behaves like servers built on Cisco libest (`est_server.c`, `est_locl.h`), not like our
client expects:
- the enrollment body is decoded with Debian's `openssl base64 -d`, the same line-oriented
  OpenSSL base64 BIO libest's `est_server_parse_csr` reads through: one unbroken base64 line
  decodes to nothing, and every parse failure answers 400 "Invalid or corrupted pkcs10
  request." (also for a Content-Type other than application/pkcs10, as libest does);
- with HTTP auth on (`http_auth`), a request without an Authorization header is answered
  401 + `WWW-Authenticate: Basic realm="estrealm"` even when a client certificate verified,
  except simplereenroll; with it off, a verified client certificate is required;
- `require_pop` refuses a CSR without the tls-unique challengePassword unless the client
  certificate carries id-kp-cmcRA (libest's RA exemption), with 401 "Proof of Possession
  Mismatch." and no `WWW-Authenticate` (est_tls_uid_auth -> EST_ERR_AUTH_FAIL_TLSUID; seen
  from a running libest 3.2.0 estserver, tests/integration/test_est_libest.py);
- `enforce_csr_attrs` refuses a CSR that lacks an OID of `csr_attrs_der` with 400 "CSR
  Attributes missing in request." (libest `--enforce-csr`: every OID of the CsrAttrs must
  appear somewhere in the CSR; seen from the running server);
- `csr_attrs_nul` ends the csrattrs body with a NUL byte, as libest's example estserver
  does (`sizeof(TEST_CSR)` in estserver.c; seen from the running server);
- 202 carries `Retry-After: <seconds>` and no body; answers are base64 in 64-column LF lines
  under `application/pkcs7-mime` (`smime-type=certs-only` or without, `content_type`);
- `tls12_only` caps TLS at 1.2 (tls-unique exists only up to TLS 1.2, so PoP servers do),
  `require_client_cert` makes the handshake demand a certificate from `client_ca`;
- `drop_sans` issues with the first DNS name only, as a CA profile that ignores the CSR's
  SAN extension does;
- `misorder` answers an enrollment with the issued certificate and its chain in a bag whose
  order is its own (root, leaf, issuing CA) and `/cacerts` root first: a certs-only PKCS#7
  holds its certificates in a SET (RFC 5652 5.1; RFC 7030 4.1.3 and 4.2.3 give no order),
  so a server may send them in any order, and DER writers sort a SET by encoding;
- `other_key` certifies a key of its own instead of the CSR's, as a broken RA or a CA that
  mixed up two requests would.

Also holds `ThreadedHTTPS`, which runs an aiohttp app in its own thread and loop so tests and
subprocesses can talk to a simulator from any event loop. Imports nothing from monitor/,
renewers/ or alerts/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from expressway_certd_lab.pki import CA, CLIENT_AUTH, SERVER_AUTH, write_key_and_chain

PKCS7_MIME = "application/pkcs7-mime"
CERTS_ONLY = PKCS7_MIME + "; smime-type=certs-only"
BAD_PKCS10 = "Invalid or corrupted pkcs10 request.\n"  # libest EST_BODY_BAD_PKCS10
UNAUTHORIZED = "The server was unable to authorize the request.\n"  # EST_BODY_UNAUTHORIZED
POP_MISMATCH = "Proof of Possession Mismatch.\n"  # EST_BODY_POP_MISMATCH
MISSING_CSR_ATTR = "CSR Attributes missing in request.\n"  # EST_BODY_MISSING_CSR_ATTR
CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")  # id-kp-cmcRA
CHALLENGE_PASSWORD = x509.ObjectIdentifier("1.2.840.113549.1.9.7")


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
    ca: CA,
    hostname: str,
    directory: Path,
    client_ca: CA | None = None,
    *,
    tls12_only: bool = False,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A TLS server context with a leaf for `hostname` and 127.0.0.1 signed by `ca`."""
    leaf, key = ca.issue(
        hostname, [hostname, "127.0.0.1"], eku=[SERVER_AUTH], key_kind="ec", key_size=256
    )
    assert key is not None
    cert_file, key_file = write_key_and_chain(directory, hostname, leaf, key, ca.chain()[:-1])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls12_only:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        ctx.load_verify_locations(
            cadata=client_ca.cert.public_bytes(serialization.Encoding.PEM).decode()
        )
    return ctx


def pkcs7_der(certs: list[x509.Certificate]) -> bytes:
    """A certs-only PKCS#7 bag (DER) holding `certs` in the order given, as OpenSSL writes
    one (Debian's `openssl crl2pkcs7 -nocrl -certfile` keeps the file's order; libest builds
    its answers with OpenSSL). cryptography's serializer sorts the SET by encoding instead,
    so its certificates are put back in the given order (same bytes, same length)."""
    der = pkcs7.serialize_certificates(certs, serialization.Encoding.DER)
    written = b"".join(
        c.public_bytes(serialization.Encoding.DER) for c in pkcs7.load_der_pkcs7_certificates(der)
    )
    wanted = b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)
    if der.count(written) != 1 or len(written) != len(wanted):
        raise ValueError("cannot find the certificates in the PKCS#7 encoding")
    return der.replace(written, wanted)


def pkcs7_base64(certs: list[x509.Certificate], line_ending: bytes = b"\n") -> bytes:
    """A certs-only PKCS#7 bag, base64 in 64-column lines as OpenSSL's BIO writes them."""
    der = pkcs7_der(certs)
    text = base64.b64encode(der)
    return b"".join(text[i : i + 64] + line_ending for i in range(0, len(text), 64))


def openssl_base64_decode(body: bytes) -> bytes:
    """What OpenSSL's line-oriented base64 BIO makes of `body`: Debian's `openssl base64 -d`
    (no -A), the decoder libest's est_server_parse_csr reads the CSR through."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the lab EST server needs the openssl binary (Debian: openssl)")
    done = subprocess.run(
        [openssl, "base64", "-d"], input=body, capture_output=True, timeout=10, check=False
    )
    return done.stdout if done.returncode == 0 else b""


def der_oids(der: bytes) -> set[bytes]:
    """Every OBJECT IDENTIFIER anywhere in `der` (its content octets), walking constructed
    values: what libest's est_server_csr_asn1_parse collects from a CSR."""
    found: set[bytes] = set()
    i = 0
    while i + 2 <= len(der):
        tag, length, i = der[i], der[i + 1], i + 2
        if length & 0x80:
            n = length & 0x7F
            length, i = int.from_bytes(der[i : i + n], "big"), i + n
        content = der[i : i + length]
        if tag == 0x06:
            found.add(content)
        elif tag & 0x20:
            found |= der_oids(content)
        i += length
    return found


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
    http_auth: bool = True  # libest: an HTTP auth callback is registered
    require_client_cert: bool = False  # the TLS handshake demands a cert from client_ca
    require_pop: bool = False  # libest server_enable_pop: tls-unique in the CSR, or an RA
    tls12_only: bool = False
    drop_sans: bool = False
    misorder: bool = False  # answers in a bag order of its own (root first)
    other_key: bool = False  # certifies a key of its own, not the CSR's
    content_type: str = CERTS_ONLY
    csr_attrs_der: bytes | None = None
    csr_attrs_nul: bool = False  # libest's example server: the body ends in a NUL byte
    enforce_csr_attrs: bool = False  # libest --enforce-csr: every csrattrs OID in the CSR
    eku: list[x509.ObjectIdentifier] = field(default_factory=lambda: [SERVER_AUTH, CLIENT_AUTH])
    requests: dict[str, ESTRequest] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    # (Content-Type, Content-Transfer-Encoding) of each enrollment request, as received
    enroll_headers: list[tuple[str | None, str | None]] = field(default_factory=list)

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
        ctx = lab_server_context(
            self.root,
            "est.lab.test",
            self.directory,
            self.client_ca,
            tls12_only=self.tls12_only,
            require_client_cert=self.require_client_cert,
        )
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

    @staticmethod
    def _peer_cert(request: web.Request) -> x509.Certificate | None:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return x509.load_der_x509_certificate(der) if der else None

    def _authenticate(self, request: web.Request, reenroll: bool) -> str:
        """libest est_enroll_auth: a verified client certificate, then HTTP auth if enabled."""
        cert = self._peer_cert(request) if self.client_ca is not None else None
        cert_user = "tls:" + cert.subject.rfc4514_string() if cert is not None else None
        if not self.http_auth:
            if cert_user is None:
                raise web.HTTPUnauthorized(text=UNAUTHORIZED)
            return cert_user
        header = request.headers.get("Authorization", "")
        if not header:
            if reenroll and cert_user is not None:
                return cert_user
            raise web.HTTPUnauthorized(
                headers={"WWW-Authenticate": 'Basic realm="estrealm"'}, text=UNAUTHORIZED
            )
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
            if user and self.users.get(user) == password:
                return user
        raise web.HTTPUnauthorized(text=UNAUTHORIZED)

    def _bag(self, certs: list[x509.Certificate]) -> list[x509.Certificate]:
        """Certificates in issuing order (leaf first), or with `misorder` in another order:
        the last one (the root) first, then the rest as they came."""
        return [certs[-1], *certs[:-1]] if self.misorder else certs

    async def _cacerts(self, request: web.Request) -> web.Response:
        self._label(request)
        self.hits.append("cacerts")
        return web.Response(
            body=pkcs7_base64(self._bag(self.issuing.chain())),
            headers={"Content-Type": PKCS7_MIME, "Content-Transfer-Encoding": "base64"},
        )

    async def _csrattrs(self, request: web.Request) -> web.Response:
        self._label(request)
        self.hits.append("csrattrs")
        if self.csr_attrs_der is None:
            return web.Response(status=204)
        body = base64.encodebytes(self.csr_attrs_der)
        if self.csr_attrs_nul:
            body = base64.b64encode(self.csr_attrs_der) + b"\x00"
        return web.Response(
            body=body,
            headers={"Content-Type": "application/csrattrs", "Content-Transfer-Encoding": "base64"},
        )

    def _has_pop(self, request: web.Request, csr: x509.CertificateSigningRequest) -> bool:
        cert = self._peer_cert(request) if self.client_ca is not None else None
        if cert is not None:
            try:
                if CMC_RA in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value:
                    return True  # libest est_check_cmcRA: no PoP check for an RA
            except x509.ExtensionNotFound:
                pass
        try:
            csr.attributes.get_attribute_for_oid(CHALLENGE_PASSWORD)
        except x509.AttributeNotFound:
            return False
        return True  # the lab does not compute tls-unique; presence is what it checks

    async def _enroll(self, request: web.Request) -> web.Response:
        label = self._label(request)
        operation = request.path.rsplit("/", 1)[-1]
        self.hits.append(operation)
        self.enroll_headers.append(
            (request.headers.get("Content-Type"), request.headers.get("Content-Transfer-Encoding"))
        )
        # libest checks the first 18 characters of the Content-Type before anything else.
        if not request.headers.get("Content-Type", "").startswith("application/pkcs10"):
            return web.Response(status=400, text=BAD_PKCS10)
        user = self._authenticate(request, reenroll=operation == "simplereenroll")
        body = await request.read()
        der = await asyncio.to_thread(openssl_base64_decode, body)
        try:
            csr = x509.load_der_x509_csr(der)
        except ValueError:
            return web.Response(status=400, text=BAD_PKCS10)
        if not csr.is_signature_valid:
            return web.Response(status=400, text=BAD_PKCS10)
        if self.require_pop and not self._has_pop(request, csr):
            return web.Response(status=401, text=POP_MISMATCH)
        if self.enforce_csr_attrs and self.csr_attrs_der is not None:
            present = der_oids(csr.public_bytes(serialization.Encoding.DER))
            if not der_oids(self.csr_attrs_der) <= present:
                return web.Response(status=400, text=MISSING_CSR_ATTR)
        key = hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).hexdigest()
        req = self.requests.get(key)
        if req is None:
            req = ESTRequest(key, csr, operation, user, label, approved=not self.manual_approval)
            self.requests[key] = req
        if not req.approved:
            return web.Response(status=202, headers={"Retry-After": str(self.retry_after)})
        if req.cert is None:
            cn = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            try:
                san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                sans = [str(v) for v in san.get_values_for_type(x509.DNSName)]
            except x509.ExtensionNotFound:
                sans = []
            if self.drop_sans:
                sans = sans[:1]
            req.cert, _ = self.issuing.issue(
                str(cn[0].value) if cn else (sans[0] if sans else "est-client"),
                sans,
                public_key=None if self.other_key else csr.public_key(),
                key_kind="ec",
                key_size=256,
                eku=self.eku,
                days=90,
            )
        bag = self._bag([req.cert, *self.issuing.chain()]) if self.misorder else [req.cert]
        return web.Response(
            body=pkcs7_base64(bag),
            headers={"Content-Type": self.content_type, "Content-Transfer-Encoding": "base64"},
        )

    def __enter__(self) -> ESTSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the EST simulator in the foreground: `python -m expressway_certd_lab.est [--manual]`."""

    parser = argparse.ArgumentParser(prog="python -m expressway_certd_lab.est")
    parser.add_argument("--manual", action="store_true", help="answer 202 until approved")
    parser.add_argument("--tls12-only", action="store_true", help="refuse TLS 1.3")
    parser.add_argument("--drop-sans", action="store_true", help="issue with the first SAN only")
    args = parser.parse_args(argv)
    sim = ESTSimulator(
        manual_approval=args.manual, tls12_only=args.tls12_only, drop_sans=args.drop_sans
    ).start()
    print(f"EST CA at {sim.url} (user est / est-secret), trust anchor {sim.trust_anchor}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
