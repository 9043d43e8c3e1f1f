"""Simulated Cisco Unified CM node: certmgr trust API, Control Center Services SOAP, and the
platform CLI over SSH, as reference/expressway.md ("Cisco Unified CM 14/15") describes.

Usage::

    cucm = CucmSim("cucm1", ca=ca, service_restart_seconds=0.3)
    await cucm.start()
    cucm.api_url, cucm.soap_url, cucm.ca_bundle_path, cucm.username, cucm.password,
    cucm.ssh_port, cucm.ssh_known_hosts_path
    await cucm.stop()

Tomcat serves its certificate on the HTTPS ports (API, Control Center); the SIP TLS port
(`sip_tls_port`) serves the CallManager certificate, as Cisco's Expressway certificate guide
says: secure SIP to Unified CM uses the CallManager certificate, secure HTTP the tomcat one.
The SIP port only completes the TLS handshake (no client certificate requested) and speaks no
SIP. Trust stores per service (`tomcat`, `callmanager`, ...). A certificate added to a store is
used only after the service that reads it restarts (Cisco CallManager for callmanager-trust,
Cisco Tomcat for tomcat-trust), which is why the renewal restarts them. Service names are
case-sensitive; an unknown name reads as Stopped. Cisco Tomcat cannot be restarted through
SOAP, only with `utils service restart Cisco Tomcat` at the `admin:` prompt; while Tomcat
restarts the HTTPS ports are closed, and for `webapp_deploy_seconds` after they reopen the
web applications are still deploying: the certmgr API answers 404 and Control Center 503.
A service listed in `deactivated` is not activated on this node: it reads Stopped with
ReasonCode -1068 "Service Not Activated" (the code public Control Center clients map) and a
restart leaves it so. The CLI needs a terminal: a session without a pty is refused.
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
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from cryptography import x509
from expressway_certd_lab.pki import CA, cert_pem, write_key_and_chain
from expressway_certd_lab.ssh import LabSSHServer
from expressway_certd_lab.tls import LabListener, server_context

TRUST_STORES = ("tomcat", "callmanager", "ipsec", "capf", "tvs")
TOMCAT = "Cisco Tomcat"
CALLMANAGER = "Cisco CallManager"
DEFAULT_SERVICES = (
    CALLMANAGER,
    "Cisco Tftp",
    "Cisco CTIManager",
    TOMCAT,
    "Cisco AXL Web Service",
    "Cisco UDS Tomcat",
)
# Which service reads which trust store at start.
STORE_READER = {"callmanager": CALLMANAGER, "tomcat": TOMCAT}
TRUST_PATH = "/platformcom/api/v1/certmgr/config/trust/certificate"
TRUST_ADD_PATH = "/platformcom/api/v1/certmgr/config/trust/certificates"
SOAP_PATH = "/controlcenterservice2/services/ControlCenterServices"
SOAP_NS = "http://schemas.cisco.com/ast/soap"
ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _envelope(body: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{ENV_NS}">'
        f"<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    )


def _fault(text: str) -> web.Response:
    body = f"<soapenv:Fault><faultcode>soapenv:Server</faultcode><faultstring>{escape(text)}</faultstring></soapenv:Fault>"
    return web.Response(text=_envelope(body), status=500, content_type="text/xml")


@dataclass
class CucmSim:
    """One simulated Unified CM node. Construct, then `await start()`; `await stop()` ends it."""

    name: str = "cucm1"
    version: str = "15.0.1"
    ca: CA | None = None
    fqdn: str | None = None
    host: str = "127.0.0.1"
    api_port: int = 0  # platformcom REST (443 on a real node)
    soap_port: int = 0  # Control Center Services (8443 on a real node)
    ssh_port: int = 0
    sip_tls_port: int = 0  # SIP over TLS, the CallManager certificate (5061 on a real node)
    username: str = "admin"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    service_restart_seconds: float = 0.3
    webapp_deploy_seconds: float = 0.0
    deactivated: tuple[str, ...] = ()
    workdir: Path | None = None
    # (node name, service, "begin" | "end") of every restart, in order; nodes of one lab
    # cluster share the list so tests see whether restarts overlapped across nodes.
    restart_log: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fqdn = self.fqdn or f"{self.name}.lab.example"
        self.ca = self.ca or CA.create("Lab Root CA")
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"lab-{self.name}-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert, key = self.ca.issue(self.fqdn, [self.fqdn])
        assert key is not None
        self.callmanager_cert = cert
        self._sip = LabListener(
            "tls", self.host, self.sip_tls_port, self._context("callmanager", cert, key)
        )
        self.trust: dict[str, list[x509.Certificate]] = {
            s: list(self.ca.chain()) for s in TRUST_STORES
        }
        self.effective_trust: dict[str, list[x509.Certificate]] = {
            s: list(v) for s, v in self.trust.items()
        }
        self.services: dict[str, str] = dict.fromkeys(DEFAULT_SERVICES, "Started")
        for name in self.deactivated:
            self.services[name] = "Stopped"
        self._deploying_until = 0.0  # loop time until which the web applications deploy
        self.deploy_refusals = 0  # answers given while deploying, for tests
        self.restarts: dict[str, int] = dict.fromkeys(DEFAULT_SERVICES, 0)
        self.soap_requests: list[str] = []  # operation names, for tests
        self.running = False
        self._runner: web.AppRunner | None = None
        self._sites: list[web.TCPSite] = []
        self._ssh: LabSSHServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        api_cert, api_key = self.ca.issue(self.fqdn, [self.host, self.fqdn])
        assert api_key is not None
        self._tomcat_cert = api_cert
        self._ssl: ssl.SSLContext = self._context("tomcat", api_cert, api_key)

    def _context(self, name: str, cert: x509.Certificate, key: Any) -> ssl.SSLContext:
        assert self.workdir is not None
        cert_file, key_file = write_key_and_chain(self.workdir, name, cert, key, [])
        return server_context(cert_file, key_file)

    def install_callmanager_now(self, cert: x509.Certificate, key: Any) -> None:
        """Serve another CallManager certificate on the SIP TLS port from the next connection
        (a test's shortcut for the certificate upload and the CallManager restart)."""
        self.callmanager_cert = cert
        self._sip.context = self._context("callmanager", cert, key)

    @property
    def tomcat_cert(self) -> x509.Certificate:
        """The certificate Tomcat serves on the HTTPS ports (API and Control Center)."""
        return self._tomcat_cert

    # ---- addresses -----------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"https://{self.host}:{self.api_port}/platformcom/api/v1"

    @property
    def soap_url(self) -> str:
        return f"https://{self.host}:{self.soap_port}{SOAP_PATH}"

    @property
    def ca_bundle_path(self) -> Path:
        assert self.workdir is not None and self.ca is not None
        path = self.workdir / "tomcat-ca.pem"
        if not path.exists():
            path.write_bytes(cert_pem(self.ca.root().cert))
        return path

    @property
    def ssh_known_hosts_path(self) -> Path | None:
        if self._ssh is None:
            return None
        assert self.workdir is not None
        return self._ssh.write_known_hosts(self.workdir / "known_hosts")

    @property
    def ssh_commands(self) -> list[str]:
        return self._ssh.commands if self._ssh else []

    @property
    def refused_without_pty(self) -> int:
        """CLI sessions refused because they requested no terminal."""
        return self._ssh.refused_without_pty if self._ssh else 0

    # ---- zone model view (lab.zones.TlsParty) ----------------------------------------------------

    @property
    def reachable(self) -> bool:
        return self.running and self.services.get(CALLMANAGER) == "Started"

    @property
    def served_cert(self) -> x509.Certificate:
        return self.callmanager_cert

    @property
    def client_cert(self) -> x509.Certificate:
        return self.callmanager_cert

    @property
    def zone_trust(self) -> list[x509.Certificate]:
        return self.effective_trust["callmanager"]

    def needs_client_auth(self) -> bool:
        return True

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> CucmSim:
        app = web.Application(middlewares=[self._deploy_mw, self._auth_mw])
        app.router.add_get(TRUST_PATH, self._list_trust)
        app.router.add_post(TRUST_ADD_PATH, self._add_trust)
        app.router.add_post(SOAP_PATH, self._soap)
        app.router.add_get(SOAP_PATH, self._wsdl)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await self._open_ports()
        self._sip.port = self.sip_tls_port  # a cluster's nodes share the publisher's ports
        await self._sip.start()
        self.sip_tls_port = self._sip.port
        self._ssh = LabSSHServer(
            self.username,
            self.password,
            self._cli,
            prompt="admin:",
            banner=f"Command Line Interface is starting up, please wait ...\n\n"
            f"   Welcome to the Platform Command Line Interface\n\nVMware Installation:\n"
            f"Cisco Unified CM {self.version} ({self.name})\n\n",
            host=self.host,
            port=self.ssh_port,
            require_pty=True,
        )
        await self._ssh.start()
        self.ssh_port = self._ssh.port
        self.running = True
        return self

    async def stop(self) -> None:
        self.running = False
        for task in list(self._tasks):
            task.cancel()
        if self._ssh is not None:
            await self._ssh.stop()
        await self._sip.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()

    async def _open_ports(self) -> None:
        assert self._runner is not None
        ports = []
        for port in (self.api_port, self.soap_port):
            site = web.TCPSite(
                self._runner, self.host, port, ssl_context=self._ssl, reuse_address=True
            )
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.base_events.Server)
            ports.append(server.sockets[0].getsockname()[1])
            self._sites.append(site)
        self.api_port, self.soap_port = ports

    async def _close_ports(self) -> None:
        for site in self._sites:
            await site.stop()
        self._sites.clear()

    async def restart_service(self, name: str) -> None:
        """Stop, wait `service_restart_seconds`, start; the service's trust store takes effect.
        A service that is not activated stays Stopped."""
        if name in self.deactivated:
            return
        self.services[name] = "Stopping"
        self.restarts[name] = self.restarts.get(name, 0) + 1
        self.restart_log.append((self.name, name, "begin"))
        if name == TOMCAT:
            await self._close_ports()
        await asyncio.sleep(self.service_restart_seconds / 2)
        self.services[name] = "Starting"
        await asyncio.sleep(self.service_restart_seconds / 2)
        for store, reader in STORE_READER.items():
            if reader == name:
                self.effective_trust[store] = list(self.trust[store])
        if name == TOMCAT:
            await self._open_ports()
            self._deploying_until = asyncio.get_running_loop().time() + self.webapp_deploy_seconds
        self.services[name] = "Started"
        self.restart_log.append((self.name, name, "end"))

    def _spawn(self, name: str) -> None:
        task = asyncio.create_task(self.restart_service(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- HTTP ----------------------------------------------------------------------------------

    @web.middleware
    async def _deploy_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if asyncio.get_running_loop().time() < self._deploying_until:
            self.deploy_refusals += 1
            if request.path.startswith("/platformcom/"):
                return web.Response(
                    status=404,
                    text="<html><body>HTTP Status 404 - Not Found</body></html>",
                    content_type="text/html",
                )
            return web.Response(
                status=503,
                text="<html><body>HTTP Status 503 - Service Unavailable</body></html>",
                content_type="text/html",
            )
        return await handler(request)

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
            return web.Response(
                status=401, text="Unauthorized", headers={"WWW-Authenticate": 'Basic realm="Cisco"'}
            )
        return await handler(request)

    async def _list_trust(self, request: web.Request) -> web.Response:
        service = request.query.get("service", "")
        if service not in self.trust:
            return web.json_response(
                {"message": f"Invalid service '{service}'; valid: {', '.join(TRUST_STORES)}"},
                status=400,
            )
        return web.json_response([_describe(c, service) for c in self.trust[service]])

    async def _add_trust(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, ValueError):
            return web.json_response({"message": "Request body must be JSON"}, status=400)
        services = body.get("service") if isinstance(body, dict) else None
        pems = body.get("certificates") if isinstance(body, dict) else None
        if not isinstance(services, list) or not services or not isinstance(pems, list) or not pems:
            return web.json_response(
                {"message": "'service' and 'certificates' must be non-empty lists"}, status=400
            )
        bad = [s for s in services if s not in self.trust]
        if bad:
            return web.json_response({"message": f"Invalid service {bad[0]!r}"}, status=400)
        certs = []
        for pem in pems:
            if not isinstance(pem, str) or pem.count("-----BEGIN CERTIFICATE-----") != 1:
                return web.json_response(
                    {"message": "Each entry of 'certificates' must be one PEM certificate"},
                    status=400,
                )
            try:
                certs.append(x509.load_pem_x509_certificate(pem.encode()))
            except ValueError:
                return web.json_response({"message": "Invalid certificate"}, status=400)
        result = []
        for service in services:
            for cert in certs:
                status = "exists"
                if cert not in self.trust[service]:
                    self.trust[service].append(cert)
                    status = "added"
                result.append({"service": service, **_describe(cert, service), "status": status})
        return web.json_response(result, status=201)

    async def _wsdl(self, request: web.Request) -> web.Response:
        """`?wsdl` as Axis serves it: the service description (abridged)."""
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><wsdl:definitions '
            'xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" '
            f'targetNamespace="{SOAP_NS}"><wsdl:service name="ControlCenterServices"/>'
            "</wsdl:definitions>"
        )
        return web.Response(text=body, content_type="text/xml")

    async def _soap(self, request: web.Request) -> web.Response:
        try:
            root = ET.fromstring(await request.text())
        except ET.ParseError:
            return _fault("Malformed SOAP request")
        body = next((e for e in root if _local(e.tag) == "Body"), None)
        operation = next(iter(body), None) if body is not None else None
        if operation is None:
            return _fault("Empty SOAP body")
        name = _local(operation.tag)
        self.soap_requests.append(name)
        items = [e.text.strip() for e in operation.iter() if _local(e.tag) == "item" and e.text]
        if name == "soapGetServiceStatus":
            if not items:
                items = [
                    (e.text or "").strip()
                    for e in operation.iter()
                    if _local(e.tag) == "ServiceStatus" and (e.text or "").strip()
                ]
            return self._status_reply(name, items or list(self.services))
        if name == "soapDoControlServices":
            control = next(
                (
                    (e.text or "").strip()
                    for e in operation.iter()
                    if _local(e.tag) == "ControlType"
                ),
                "",
            )
            if control not in ("Start", "Stop", "Restart"):
                return _fault(f"Invalid ControlType '{control}'")
            if TOMCAT in items:
                return _fault(
                    "Cisco Tomcat cannot be controlled through Control Center Services; use "
                    "'utils service restart Cisco Tomcat' on the CLI"
                )
            for item in items:
                if item in self.services and control == "Restart":
                    self._spawn(item)
                elif item in self.services and control == "Stop":
                    self.services[item] = "Stopped"
                elif item in self.services:
                    self._spawn(item)
            return self._status_reply(name, items)
        return _fault(f"Unknown operation {name}")

    def _status_reply(self, operation: str, names: list[str]) -> web.Response:
        items = "".join(
            "<ns1:item>"
            f"<ns1:ServiceName>{escape(n)}</ns1:ServiceName>"
            f"<ns1:ServiceStatus>{self.services.get(n, 'Stopped')}</ns1:ServiceStatus>"
            f"<ns1:ReasonCode>{-1068 if n in self.deactivated else -1}</ns1:ReasonCode>"
            f"<ns1:ReasonCodeString>{'Service Not Activated' if n in self.deactivated else ' '}"
            "</ns1:ReasonCodeString><ns1:StartTime/><ns1:UpTime>-1</ns1:UpTime>"
            "</ns1:item>"
            for n in names
        )
        body = (
            f'<ns1:{operation}Response xmlns:ns1="{SOAP_NS}"><ns1:{operation}Return>'
            "<ns1:ReturnCode>0</ns1:ReturnCode><ns1:ReasonCode>-1</ns1:ReasonCode>"
            "<ns1:ReasonString/>"
            f"<ns1:ServiceInfoList>{items}</ns1:ServiceInfoList>"
            f"</ns1:{operation}Return></ns1:{operation}Response>"
        )
        return web.Response(text=_envelope(body), content_type="text/xml")

    # ---- CLI -----------------------------------------------------------------------------------

    async def _cli(self, command: str) -> tuple[str, bool]:
        if command in ("exit", "quit"):
            return "", False
        prefix = "utils service restart "
        if command.startswith(prefix):
            service = command[len(prefix) :].strip()
            if service not in self.services:
                return f"Service not found: {service}\nExecuted command unsuccessfully\n", True
            out = [
                "Do not press Ctrl+C while the service is restarting. If the service has not "
                "restarted properly, execute the same command again.",
                "Service Manager is running",
                f"{service}[STOPPING]",
            ]
            await self.restart_service(service)
            out += [f"{service}[STARTING]", f"{service}[STARTED]", ""]
            return "\n".join(out), True
        if command.startswith("show version active"):
            return f"Active Master Version: {self.version}\n", True
        return "Executed command unsuccessfully\nNo valid command entered\n", True


def _describe(cert: x509.Certificate, service: str) -> dict[str, str]:
    return {
        "certificate": cert_pem(cert).decode(),
        "subjectName": cert.subject.rfc4514_string(),
        "issuerName": cert.issuer.rfc4514_string(),
        "serialNumber": format(cert.serial_number, "x"),
        "expiration": cert.not_valid_after_utc.isoformat(),
        "unit": f"{service}-trust",
    }
