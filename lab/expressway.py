"""Simulated Cisco Expressway (C or E): the REST API over HTTPS, an SSH CLI and TLS listeners
that serve the ACTIVE server certificate, behaving as reference/expressway.md describes.

Usage (tests, demo)::

    ca = CA.create("Lab Root CA")
    sim = ExpresswaySim("expe-c1", role="c", version="X15.4", ca=ca, restart_seconds=0.3)
    await sim.start()
    sim.api_url, sim.ca_bundle_path, sim.username, sim.password, sim.listeners
    ...
    await sim.stop()

Behaviour: one pending CSR at a time (its private key never leaves the simulator); generating
while one is pending is a Conflict; an uploaded certificate must match the pending CSR's key
(or the current key when no CSR is pending), must be one PEM certificate (no chain, no DER)
and becomes active only after a restart; a restart takes `restart_seconds`, during which the
API and the TLS listeners are down (with `restart_unseen`, it is over before any client can
see it: the poll gap of a starved client); `X-CSRF-Header` is required on restart from X14.2;
`/api/raml` lists the resources served; faults can be injected with `inject_fault`.

EKU sunset (Cisco FN74362, docs 225482 and 225693): before X15.5 one server certificate is
also the TLS client certificate, and an upload without TLS Web Client Authentication is
refused (400 naming the EKU), except on an X15.4 Expressway-E with `xConfiguration XCP TLS
Certificate CVS EnableServerEkuUpload: On` (read and set over SSH; deprecated from X15.5).
From X15.5 the box keeps a separate client certificate store (`client`): the upgrade copies
the server certificate and key there, so that copy keeps the OLD expiry; zones use it when the
box is the TLS client. Its REST resources are this simulator's assumption (Cisco publishes
none): `/provisioning/certs/client` GET (read) and POST (upload, multipart `file`, as for the
server certificate), `/provisioning/certs/client/generate_csr` GET/POST (pending client CSR,
generate one); `client_renew_api=False` hides the upload and CSR resources (read only).
Assumptions, like the server store's documented behaviour: an uploaded client certificate
must match the pending client CSR's key (or the current client key), must carry TLS Web
Client Authentication, and is used after the next restart. The box has ONE CSR slot: while a
server CSR is pending a client CSR is a Conflict, and the other way round. An Expressway-E serves its ACME scheduler state at
`/provisioning/certs/acme` (assumed path; built-in ACME exists on E from X12.5).
Counters for tests: `csr_generated` (CSRs made), `uploads` (server certificates accepted),
`restart_count`, and `restarts` (one `Restart` per restart: when it went down, came back up,
and what it served then).
Imports nothing from monitor/, renewers/ or alerts/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import secrets
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from expressway_certd_lab.pki import CA, PrivateKey, cert_pem, new_key, write_key_and_chain
from expressway_certd_lab.ssh import LabSSHServer
from expressway_certd_lab.tls import LabListener, server_context
from expressway_certd_lab.zones import Zone, expressway_needs_client_auth, parse_version

VERSIONS = ("X14.3", "X15.4", "X15.5")
CSRF_FROM = (14, 2)
PEM_CERT = b"-----BEGIN CERTIFICATE-----"

# Resources the simulator serves, relative to /api (also served under /api/v1).
COMMON_RESOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/provisioning/sysinfo", ("get",)),
    ("/provisioning/certs/server", ("get", "post")),
    ("/provisioning/certs/generate_csr", ("get", "post")),
    ("/provisioning/certs/root", ("get", "post")),
    ("/provisioning/restart", ("post",)),
    ("/provisioning/common/cluster/peers", ("get",)),
    ("/provisioning/common/zone/neighborzone", ("get",)),
    ("/status/common/zone", ("get",)),
)
ROLE_RESOURCES = {
    "c": (("/provisioning/controller/zone/unifiedcommunicationstraversal", ("get",)),),
    "e": (
        ("/provisioning/edge/zone/traversalserver", ("get",)),
        ("/provisioning/certs/acme", ("get",)),
    ),
}
# From X15.5 (separate client certificate store); the path is an assumption.
CLIENT_CERT_RESOURCE = "/provisioning/certs/client"
CLIENT_CSR_RESOURCE = "/provisioning/certs/client/generate_csr"
CLIENT_STORE_FROM = (15, 5)
SERVER_EKU_UPLOAD_AT = (15, 4)  # the CLI switch exists in X15.4 only (deprecated in X15.5)
EKU_SWITCH = "xConfiguration XCP TLS Certificate CVS EnableServerEkuUpload"
# How `xCommand Boot` answers, in the forms public scripts check for.
BOOT_OUTPUTS = {
    "xapi": "*r BootResult (status=OK):\n** end\n\nOK\n",
    "ok": "OK\n",
    "shutdown": "\nBroadcast message from root:\n\nThe system is going down for reboot NOW!\n",
    "error": "*r BootResult (status=Error):\n    Reason: Restart not allowed\n** end\n\nERROR\n",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _message(status: int, text: str, **headers: str) -> web.Response:
    return web.json_response({"Message": text}, status=status, headers=headers or None)


@dataclass
class Fault:
    """An injected fault: `kind` is 'error' (HTTP `status`), 'slow' (answer after `delay`
    seconds) or 'drop' (close the connection without answering)."""

    kind: str
    path: str | None = None  # only requests whose path starts with this; None = all
    count: int = 1  # how many requests it hits; -1 = until cleared
    status: int = 503
    delay: float = 5.0

    def matches(self, path: str) -> bool:
        return self.count != 0 and (self.path is None or path.startswith(self.path))


@dataclass
class _Zone:
    zone: Zone
    peer_name: str


@dataclass(frozen=True)
class Restart:
    """One restart as the box lived it (`time.monotonic()` seconds)."""

    down_at: float
    up_at: float
    served_sha256: str  # the server certificate served once back up


@dataclass
class _Keyed:
    cert: x509.Certificate
    key: PrivateKey


@dataclass
class _PendingCsr:
    csr: x509.CertificateSigningRequest
    key: PrivateKey
    store: str = "server"  # which store the CSR is for: "server" or "client"


@dataclass
class ExpresswaySim:
    """One simulated Expressway node. Construct, then `await start()`; `await stop()` ends it."""

    name: str
    role: str = "c"
    version: str = "X15.4"
    ca: CA | None = None  # issues the initial server cert and the API cert
    fqdn: str | None = None  # default: f"{name}.lab.example"
    sans: Sequence[str] | None = None  # of the initial server cert; default [fqdn]
    cert_eku: Sequence[x509.ObjectIdentifier] | None = None  # default serverAuth + clientAuth
    cert_days: float = 365
    listener_modes: Sequence[str] = ("tls", "tls")  # one LabListener per entry ('tls'/'xmpp')
    listener_ports: Sequence[int] | None = None  # default: random ports
    host: str = "127.0.0.1"
    api_port: int = 0
    ssh_port: int | None = 0  # None: no SSH server
    username: str = "admin"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    restart_seconds: float = 0.3
    # True: a restart is over before a client can see the box down (as when a starved client
    # polls only after a quick restart): the installed certificates become active at once and
    # the API and listeners stay up. A real box is down for minutes; this models the poll gap.
    restart_unseen: bool = False
    peers: Sequence[str] = ()  # other cluster peers' addresses
    without: Iterable[str] = ()  # resources (relative to /api) this box lacks
    eku_checking: bool = True  # X15.5 'ExtendedKeyUsage Checking Mode' (False = Off)
    sysinfo_version_key: str | None = "SoftwareVersion"  # None: sysinfo omits the version
    server_eku_upload: bool = False  # X15.4 EnableServerEkuUpload (Off by default)
    acme_enabled: bool = False  # the E's built-in ACME scheduler
    trusted_ca_upload_replaces: bool = False  # model a box whose CA upload replaces the list
    boot_output: str = "xapi"  # a key of BOOT_OUTPUTS
    csr_pending_answer: tuple[int, str] = (409, "Conflict")  # status and Message
    client_renew_api: bool = True  # X15.5: list the client CSR and upload resources
    workdir: Path | None = None
    # Test-only: where a CSR's RSA key comes from, `csr_keys(key_length)`. None (the default,
    # and what the demo and `expressway-certd lab` use): a fresh key per CSR, as the box makes.
    # Tests pass a pool of cheaply made keys (tests/keypool.py) so that a renewal does not wait
    # seconds for an RSA-4096 key; a key the box holds (served, installed, client store) is
    # never taken again.
    csr_keys: Callable[[int], PrivateKey] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.role = self.role.lower()
        if self.role not in ("c", "e"):
            raise ValueError(f"role must be 'c' or 'e', got {self.role!r}")
        parse_version(self.version)
        self.fqdn = self.fqdn or f"{self.name}.lab.example"
        self.ca = self.ca or CA.create("Lab Root CA")
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"lab-{self.name}-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._without = {p.rstrip("/") for p in self.without}
        cert, key = self.ca.issue(
            self.fqdn,
            list(self.sans) if self.sans is not None else [self.fqdn],
            eku=list(self.cert_eku) if self.cert_eku is not None else None,
            days=self.cert_days,
        )
        assert key is not None
        self.active = _Keyed(cert, key)  # what the listeners serve
        self.installed = _Keyed(cert, key)  # what the API shows; active after a restart
        # X15.5 client store: what the upgrade copied (the server certificate and key).
        self.client: _Keyed | None = (
            _Keyed(cert, key) if parse_version(self.version) >= CLIENT_STORE_FROM else None
        )
        self.client_installed: _Keyed | None = self.client  # used from the next restart
        self.client_uploads = 0
        self.pending: _PendingCsr | None = None
        self.trusted_cas: list[x509.Certificate] = list(self.ca.chain())
        self.zones: list[_Zone] = []
        self.faults: list[Fault] = []
        self.restart_count = 0
        self.restarts: list[Restart] = []
        self.csr_generated = 0
        self.uploads = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self.restarting = False
        self.running = False
        self._listeners: list[LabListener] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._ssh: LabSSHServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._api_ssl = self._make_api_context()

    # ---- addresses and credentials -------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"https://{self.host}:{self.api_port}/api"

    @property
    def ca_bundle_path(self) -> Path:
        """PEM file that verifies the API's HTTPS certificate (and the initial server cert)."""
        assert self.workdir is not None and self.ca is not None
        path = self.workdir / "api-ca.pem"
        if not path.exists():
            path.write_bytes(cert_pem(self.ca.root().cert))
        return path

    @property
    def listeners(self) -> list[str]:
        """'host:port' of each TLS listener serving the active server certificate."""
        return [listener.address for listener in self._listeners]

    @property
    def ssh_known_hosts_path(self) -> Path | None:
        if self._ssh is None:
            return None
        assert self.workdir is not None
        return self._ssh.write_known_hosts(self.workdir / "known_hosts")

    @property
    def ssh_commands(self) -> list[str]:
        return self._ssh.commands if self._ssh else []

    # ---- the zone model's view (lab.zones.TlsParty) ----------------------------------------

    @property
    def reachable(self) -> bool:
        return self.running and not self.restarting

    @property
    def served_cert(self) -> x509.Certificate:
        return self.active.cert

    @property
    def client_cert(self) -> x509.Certificate:
        return self.client.cert if self.client is not None else self.active.cert

    @property
    def zone_trust(self) -> list[x509.Certificate]:
        return self.trusted_cas

    def needs_client_auth(self) -> bool:
        return expressway_needs_client_auth(self.version, self.role, self.eku_checking)

    def upgrade(self, version: str) -> None:
        """What a software upgrade does to the certificates: going to X15.5 or later copies the
        server certificate and key into the new client store (the copy keeps its expiry)."""
        before = parse_version(self.version)
        after = parse_version(version)
        self.version = version
        if before < CLIENT_STORE_FROM <= after:
            self.client = _Keyed(self.installed.cert, self.installed.key)
            self.client_installed = self.client

    def install_client_now(self, cert: x509.Certificate, key: PrivateKey) -> None:
        """Shortcut for tests and the demo: put a certificate into the X15.5 client store."""
        if self.client is None:
            raise ValueError(f"{self.name} runs {self.version}: no client store before X15.5")
        self.client = self.client_installed = _Keyed(cert, key)

    def add_zone(self, zone: Zone, peer_name: str) -> None:
        self.zones.append(_Zone(zone, peer_name))

    # ---- faults --------------------------------------------------------------------------

    def inject_fault(
        self,
        kind: str,
        *,
        path: str | None = None,
        count: int = 1,
        status: int = 503,
        delay: float = 5.0,
    ) -> Fault:
        if kind not in ("error", "slow", "drop"):
            raise ValueError(f"fault kind must be error, slow or drop, got {kind!r}")
        fault = Fault(kind, path, count, status, delay)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def remove_resource(self, path: str) -> None:
        """From now on the box lacks `path` (relative to /api): /api/raml stops listing it and
        requests to it answer 404, as on a version without it."""
        self._without.add(path.rstrip("/"))

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> ExpresswaySim:
        app = web.Application(middlewares=[self._fault_mw, self._auth_mw])
        for prefix in ("/api", "/api/v1"):
            app.router.add_get(f"{prefix}/raml", self._raml)
            for path, methods in self._resources():
                for method in methods:
                    app.router.add_route(method.upper(), prefix + path, self._dispatch)
            # The client store's resources are routed on every version: `upgrade` adds the
            # store while the box runs; until then (or with client_renew_api off) they answer
            # 404 and /api/raml omits them.
            served = self._served()
            for method in ("GET", "POST"):
                for path in (CLIENT_CERT_RESOURCE, CLIENT_CSR_RESOURCE):
                    if (method, path) not in served:
                        app.router.add_route(method, prefix + path, self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await self._start_site()
        ports = list(self.listener_ports or [0] * len(self.listener_modes))
        for mode, port in zip(self.listener_modes, ports, strict=True):
            listener = LabListener(mode=mode, host=self.host, port=port, context=self._tls())
            self._listeners.append(await listener.start())
        if self.ssh_port is not None:
            self._ssh = LabSSHServer(
                self.username,
                self.password,
                self._ssh_command,
                banner=f"Welcome to {self.name}\nCisco Expressway {self.version}\n",
                host=self.host,
                port=self.ssh_port,
            )
            await self._ssh.start()
            self.ssh_port = self._ssh.port
        self.running = True
        return self

    async def stop(self) -> None:
        self.running = False
        for task in list(self._tasks):
            task.cancel()
        for listener in self._listeners:
            await listener.stop()
        if self._ssh is not None:
            await self._ssh.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()

    async def restart(self) -> None:
        """What the box does on restart: everything down, then up with the installed cert."""
        if self.restart_unseen:
            self.restart_count += 1
            now = time.monotonic()
            self.active = self.installed
            self.client = self.client_installed
            for listener in self._listeners:
                listener.context = self._tls()
            served = self.active.cert.fingerprint(hashes.SHA256()).hex()
            self.restarts.append(Restart(now, now, served))
            return
        self.restarting = True
        self.restart_count += 1
        try:
            await asyncio.sleep(0.05)  # let the answer to the restart request leave
            down_at = time.monotonic()
            if self._site is not None:
                await self._site.stop()
                self._site = None
            for listener in self._listeners:
                await listener.stop(hold=True)
            if self._ssh is not None:
                await self._ssh.stop()
            await asyncio.sleep(self.restart_seconds)
            self.active = self.installed
            self.client = self.client_installed
            for listener in self._listeners:
                listener.context = self._tls()
                await listener.start()
            if self._ssh is not None:
                await self._ssh.start()
            await self._start_site()
            served = self.active.cert.fingerprint(hashes.SHA256()).hex()
            self.restarts.append(Restart(down_at, time.monotonic(), served))
        finally:
            self.restarting = False

    def install_now(self, cert: x509.Certificate, key: PrivateKey) -> None:
        """Shortcut for tests and the demo: install and activate a cert without a restart."""
        self.installed = self.active = _Keyed(cert, key)
        for listener in self._listeners:
            listener.context = self._tls()

    def _spawn_restart(self) -> None:
        task = asyncio.create_task(self.restart())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_site(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(
            self._runner, self.host, self.api_port, ssl_context=self._api_ssl, reuse_address=True
        )
        await self._site.start()
        server = self._site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.api_port = server.sockets[0].getsockname()[1]

    # ---- certificates ----------------------------------------------------------------------

    def _chain_for(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """Intermediates from the trusted CA store that the box sends after its leaf."""
        chain: list[x509.Certificate] = []
        current = cert
        for _ in range(5):
            issuer = next((c for c in self.trusted_cas if c.subject == current.issuer), None)
            if issuer is None or issuer.subject == issuer.issuer:
                break
            chain.append(issuer)
            current = issuer
        return chain

    def _tls(self) -> ssl.SSLContext:
        assert self.workdir is not None
        cert_file, key_file = write_key_and_chain(
            self.workdir,
            "server",
            self.active.cert,
            self.active.key,
            self._chain_for(self.active.cert),
        )
        return server_context(cert_file, key_file)

    def _make_api_context(self) -> ssl.SSLContext:
        assert self.workdir is not None and self.ca is not None
        cert, key = self.ca.issue(f"api.{self.fqdn}", [self.host, str(self.fqdn)])
        assert key is not None
        cert_file, key_file = write_key_and_chain(self.workdir, "api", cert, key, [])
        return server_context(cert_file, key_file)

    # ---- HTTP plumbing -----------------------------------------------------------------------

    def _resources(self) -> list[tuple[str, tuple[str, ...]]]:
        extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
        if parse_version(self.version) >= CLIENT_STORE_FROM:
            if self.client_renew_api:
                extra = (
                    (CLIENT_CERT_RESOURCE, ("get", "post")),
                    (CLIENT_CSR_RESOURCE, ("get", "post")),
                )
            else:
                extra = ((CLIENT_CERT_RESOURCE, ("get",)),)
        return [
            (path, methods)
            for path, methods in (*COMMON_RESOURCES, *ROLE_RESOURCES[self.role], *extra)
            if path not in self._without
        ]

    def _served(self) -> set[tuple[str, str]]:
        """(METHOD, path) pairs /api/raml lists now."""
        return {(m.upper(), path) for path, methods in self._resources() for m in methods}

    @staticmethod
    def _api_path(request: web.Request) -> str:
        path = request.path.removeprefix("/api")
        return path.removeprefix("/v1") if path.startswith("/v1/") else path

    @web.middleware
    async def _fault_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.headers)))
        if self.restarting:
            self._drop(request)
        for fault in self.faults:
            if not fault.matches(request.path):
                continue
            if fault.count > 0:
                fault.count -= 1
            if fault.kind == "error":
                return _message(fault.status, "Internal error (injected fault)")
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            if fault.kind == "drop":
                self._drop(request)
            break
        return await handler(request)

    @staticmethod
    def _drop(request: web.Request) -> None:
        if request.transport is not None:
            request.transport.abort()
        raise web.HTTPServiceUnavailable

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        ok = False
        if header.startswith("Basic "):
            with contextlib.suppress(ValueError):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                ok = user == self.username and hmac.compare_digest(
                    password.encode(), self.password.encode()
                )
        if not ok:
            return _message(
                401, "Authentication failed", **{"WWW-Authenticate": 'Basic realm="Expressway"'}
            )
        return await handler(request)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = self._api_path(request)
        if path in self._without:
            return _message(404, "Not found")
        routes: dict[tuple[str, str], Handler] = {
            ("GET", "/provisioning/sysinfo"): self._sysinfo,
            ("GET", "/provisioning/certs/server"): self._get_server_cert,
            ("POST", "/provisioning/certs/server"): self._upload_server_cert,
            ("GET", "/provisioning/certs/generate_csr"): self._get_csr,
            ("POST", "/provisioning/certs/generate_csr"): self._generate_csr,
            ("GET", "/provisioning/certs/root"): self._get_trusted,
            ("POST", "/provisioning/certs/root"): self._add_trusted,
            ("POST", "/provisioning/restart"): self._restart,
            ("GET", "/provisioning/common/cluster/peers"): self._peers,
            ("GET", "/status/common/zone"): self._zone_status,
            ("GET", CLIENT_CERT_RESOURCE): self._get_client_cert,
            ("POST", CLIENT_CERT_RESOURCE): self._upload_client_cert,
            ("GET", CLIENT_CSR_RESOURCE): self._get_client_csr,
            ("POST", CLIENT_CSR_RESOURCE): self._generate_client_csr,
            ("GET", "/provisioning/certs/acme"): self._acme,
        }
        handler = routes.get((request.method, path))
        if (request.method, path) not in self._served() and path.startswith(CLIENT_CERT_RESOURCE):
            return _message(404, "Not found")
        if handler is None:
            return web.json_response(self._zone_config(path))
        return await handler(request)

    async def _raml(self, request: web.Request) -> web.Response:
        lines = [
            "#%RAML 0.8",
            "title: Cisco Expressway REST API (lab simulator)",
            f"version: {self.version}",
            "baseUri: https://{host}/api",
            "mediaType: application/json",
        ]
        tree: dict[str, Any] = {}
        for path, methods in self._resources():
            node = tree
            for part in path.strip("/").split("/"):
                node = node.setdefault("/" + part, {})
            for method in methods:
                node[method] = None

        def emit(node: dict[str, Any], depth: int) -> None:
            for key, child in node.items():
                lines.append("  " * depth + key + ":")
                if child is None:
                    lines.append("  " * (depth + 1) + "description: supported")
                else:
                    emit(child, depth + 1)

        emit(tree, 0)
        return web.Response(text="\n".join(lines) + "\n", content_type="application/raml+yaml")

    # ---- resources -------------------------------------------------------------------------

    async def _sysinfo(self, request: web.Request) -> web.Response:
        body = {"SystemName": self.name, "ProductName": f"Cisco Expressway-{self.role.upper()}"}
        if self.sysinfo_version_key:
            body[self.sysinfo_version_key] = self.version
        return web.json_response(body)

    async def _get_server_cert(self, request: web.Request) -> web.Response:
        return web.Response(body=cert_pem(self.installed.cert), content_type="text/plain")

    async def _get_client_cert(self, request: web.Request) -> web.Response:
        if self.client_installed is None:
            return _message(404, "Not found")
        return web.Response(body=cert_pem(self.client_installed.cert), content_type="text/plain")

    async def _acme(self, request: web.Request) -> web.Response:
        return web.json_response({"ACMEEnabled": "On" if self.acme_enabled else "Off"})

    async def _get_csr(self, request: web.Request) -> web.Response:
        return self._pending_answer("server")

    async def _get_client_csr(self, request: web.Request) -> web.Response:
        return self._pending_answer("client")

    def _pending_answer(self, store: str) -> web.Response:
        if self.pending is None or self.pending.store != store:
            return _message(404, "No certificate signing request is in progress")
        pem = self.pending.csr.public_bytes(serialization.Encoding.PEM)
        return web.Response(body=pem, content_type="text/plain")

    async def _generate_client_csr(self, request: web.Request) -> web.Response:
        return await self._generate_csr(request, store="client")

    async def _generate_csr(self, request: web.Request, store: str = "server") -> web.Response:
        if self.pending is not None:  # one CSR slot for both stores
            return _message(*self.csr_pending_answer)
        try:
            body = await request.json()
        except (json.JSONDecodeError, ValueError):
            return _message(400, "Request body must be JSON")
        if not isinstance(body, dict):
            return _message(400, "Request body must be a JSON object")
        extra = body.get("Additional_FQDNS", [])
        if not isinstance(extra, list) or not all(isinstance(n, str) for n in extra):
            return _message(400, "Additional_FQDNS must be a list of names")
        if any("*" in n for n in extra):
            return _message(400, "Wildcard names are not supported in server certificates")
        key_length = body.get("KeyLength", 2048)
        if key_length not in (2048, 4096):
            return _message(400, f"KeyLength {key_length} is not supported; use 2048 or 4096")
        digest_name = str(body.get("DigestAlgorithm", "sha256")).lower()
        digests = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
        if digest_name not in digests:
            return _message(400, f"DigestAlgorithm {digest_name} is not supported")
        key = await asyncio.to_thread(self._csr_key, key_length)
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, str(self.fqdn))]
        fields = (
            ("Country", NameOID.COUNTRY_NAME),
            ("Province", NameOID.STATE_OR_PROVINCE_NAME),
            ("Locality", NameOID.LOCALITY_NAME),
            ("Organization", NameOID.ORGANIZATION_NAME),
            ("OrganizationalUnit", NameOID.ORGANIZATIONAL_UNIT_NAME),
            ("Email", NameOID.EMAIL_ADDRESS),
        )
        for json_key, oid in fields:
            value = body.get(json_key)
            if value:
                try:
                    subject.append(x509.NameAttribute(oid, str(value)))
                except ValueError as exc:
                    return _message(400, f"{json_key}: {exc}")
        names = [str(self.fqdn), *(n for n in extra if n != self.fqdn)]
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name(subject))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dict.fromkeys(names)]),
                critical=False,
            )
            .sign(key, digests[digest_name])
        )
        self.pending = _PendingCsr(csr, key, store)
        self.csr_generated += 1
        return _message(200, "CSR generated")

    def _csr_key(self, key_length: int) -> PrivateKey:
        """A new RSA key for a CSR: fresh, or the next pool key that the box does not hold."""
        if self.csr_keys is None:
            return new_key("rsa", key_length)
        held = [
            k.key.public_key()
            for k in (self.active, self.installed, self.client, self.client_installed)
            if k
        ]
        for _ in range(len(held) + 1):
            key = self.csr_keys(key_length)
            if key.public_key() not in held:
                return key
        raise RuntimeError(f"{self.name}: the CSR key pool has only keys this box holds")

    async def _read_upload(
        self, request: web.Request, what: str
    ) -> x509.Certificate | web.Response:
        """The one PEM certificate of an upload (field `file`), or the box's refusal."""
        try:
            form = await request.post()
        except ValueError:
            return _message(400, "Expected a multipart form with the certificate in field 'file'")
        upload = form.get("file")
        if upload is None:
            return _message(400, f"No {what} file was uploaded (form field 'file')")
        data = upload.file.read() if isinstance(upload, web.FileField) else str(upload).encode()
        if PEM_CERT not in data:
            return _message(400, f"The {what} must be in PEM format")
        if b"PRIVATE KEY-----" in data:
            return _message(400, f"The {what} file must not contain a private key")
        if data.count(PEM_CERT) > 1:
            return _message(
                400,
                f"The file contains more than one certificate; upload the {what} "
                "only, without the chain (add CA certificates to the trusted CA list)",
            )
        try:
            return x509.load_pem_x509_certificate(data)
        except ValueError:
            return _message(400, f"The {what} file is not a valid PEM certificate")

    def _pending_key(self, store: str) -> PrivateKey | None:
        return self.pending.key if self.pending and self.pending.store == store else None

    def _keyed_upload(
        self, cert: x509.Certificate, store: str, installed: _Keyed
    ) -> _Keyed | web.Response:
        """An uploaded certificate with the key it belongs to: the pending CSR's of this store
        (the one CSR slot is then free), else the store's installed key; a refusal otherwise."""
        pending = self._pending_key(store)
        key = pending or installed.key
        if not _same_public_key(cert, key):
            where = "the pending certificate signing request" if pending else f"the {store}"
            return _message(400, f"The certificate does not match the private key of {where}")
        if pending is not None:
            self.pending = None
        return _Keyed(cert, key)

    async def _upload_server_cert(self, request: web.Request) -> web.Response:
        cert = await self._read_upload(request, "server certificate")
        if isinstance(cert, web.Response):
            return cert
        refusal = self._eku_refusal(cert)
        if refusal:
            return _message(400, refusal)
        keyed = self._keyed_upload(cert, "server", self.installed)
        if isinstance(keyed, web.Response):
            return keyed
        self.installed = keyed
        self.uploads += 1
        return _message(200, "Server certificate uploaded; restart the system to use it")

    async def _upload_client_cert(self, request: web.Request) -> web.Response:
        if self.client_installed is None:
            return _message(404, "Not found")
        cert = await self._read_upload(request, "client certificate")
        if isinstance(cert, web.Response):
            return cert
        try:
            ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            ekus = [ExtendedKeyUsageOID.CLIENT_AUTH]  # no EKU extension: any use (RFC 5280)
        if ExtendedKeyUsageOID.CLIENT_AUTH not in ekus:
            return _message(
                400, "Certificate EKU check failed: TLS Web Client Authentication is required"
            )
        keyed = self._keyed_upload(cert, "client", self.client_installed)
        if isinstance(keyed, web.Response):
            return keyed
        self.client_installed = keyed
        self.client_uploads += 1
        return _message(200, "Client certificate uploaded; restart the system to use it")

    def _eku_refusal(self, cert: x509.Certificate) -> str | None:
        """Why the box refuses a server certificate for its Extended Key Usage, or None."""
        try:
            ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            return None
        if ExtendedKeyUsageOID.SERVER_AUTH not in ekus:
            return "Certificate EKU check failed: TLS Web Server Authentication is required"
        version = parse_version(self.version)
        if version >= CLIENT_STORE_FROM or ExtendedKeyUsageOID.CLIENT_AUTH in ekus:
            return None
        if version == SERVER_EKU_UPLOAD_AT and self.role == "e" and self.server_eku_upload:
            return None
        return (
            "Certificate EKU check failed: the server certificate must contain both TLS Web "
            "Server Authentication and TLS Web Client Authentication extended key usage"
        )

    async def _get_trusted(self, request: web.Request) -> web.Response:
        body = b"".join(cert_pem(c) for c in self.trusted_cas)
        return web.Response(body=body, content_type="text/plain")

    async def _add_trusted(self, request: web.Request) -> web.Response:
        try:
            form = await request.post()
        except ValueError:
            return _message(400, "Expected a multipart form with the certificates in field 'file'")
        upload = form.get("file")
        if upload is None:
            return _message(400, "No CA certificate file was uploaded (form field 'file')")
        data = upload.file.read() if isinstance(upload, web.FileField) else str(upload).encode()
        if PEM_CERT not in data:
            return _message(400, "The CA certificate file must be in PEM format")
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            return _message(400, "The CA certificate file is not valid PEM")
        if self.trusted_ca_upload_replaces:
            self.trusted_cas = []
        added = 0
        for cert in certs:
            if cert not in self.trusted_cas:
                self.trusted_cas.append(cert)
                added += 1
        return _message(200, f"{added} CA certificate(s) added to the trusted CA list")

    async def _restart(self, request: web.Request) -> web.Response:
        if parse_version(self.version) >= CSRF_FROM and "X-CSRF-Header" not in request.headers:
            return _message(403, "Missing X-CSRF-Header")
        self._spawn_restart()
        return _message(200, "Restarting")

    async def _peers(self, request: web.Request) -> web.Response:
        own = {"PeerAddress": self.fqdn}
        return web.json_response([own, *({"PeerAddress": p} for p in self.peers)])

    async def _zone_status(self, request: web.Request) -> web.Response:
        # Connections of one zone (from several cluster peers) show as one zone.
        out: dict[str, dict[str, str]] = {}
        for item in self.zones:
            state, reason = item.zone.status()
            entry = out.setdefault(
                item.zone.name,
                {"Name": item.zone.name, "Type": item.zone.kind, "Peer": "", "Status": "Active"},
            )
            entry["Peer"] = ", ".join(p for p in (entry["Peer"], item.peer_name) if p)
            if state != "Active" and entry["Status"] == "Active":
                entry["Status"], entry["StatusReason"] = state, reason
        for entry in out.values():
            entry.setdefault("StatusReason", "")
        return web.json_response(list(out.values()))

    def _zone_config(self, path: str) -> list[dict[str, str]]:
        kind = "Neighbor" if path.endswith("neighborzone") else "Traversal"
        return [
            {"Name": z.zone.name, "PeerAddress": z.peer_name}
            for z in self.zones
            if z.zone.kind == kind
        ]

    # ---- SSH CLI -----------------------------------------------------------------------------

    async def _ssh_command(self, command: str) -> tuple[str, bool]:
        if command.lower() in ("exit", "quit", "bye"):
            return "", False
        if command == "xCommand Boot":
            if self.boot_output != "error":
                self._spawn_restart()
            return BOOT_OUTPUTS[self.boot_output], self.boot_output == "error"
        if command.startswith(EKU_SWITCH) and parse_version(self.version) == SERVER_EKU_UPLOAD_AT:
            value = command[len(EKU_SWITCH) :].strip().lstrip(":").strip()
            if value:
                if value not in ("On", "Off"):
                    return (
                        "*r Result (status=Error):\n    Reason: Value must be On or Off\n** end\n\nERROR\n",
                        True,
                    )
                self.server_eku_upload = value == "On"
                return "** end\n\nOK\n", True
            state = "On" if self.server_eku_upload else "Off"
            return f"*c {EKU_SWITCH}: {state}\n** end\n\nOK\n", True
        return "*r Result (status=Error):\n    Reason: Unknown command\n** end\n\nERROR\n", True


def _same_public_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt))
