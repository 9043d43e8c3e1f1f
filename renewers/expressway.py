"""Expressway REST client: read and renew the server certificate of one Cisco Expressway node,
and from X15.5 its client certificate (through the client store resources /api/raml lists).

Shape (like a lego provider): `ExpresswayClientConfig`, one validating constructor
`ExpresswayClient(config)`, and the private HTTP plumbing in renewers/device_http.py.
Every operation is first looked up in the box's `/api/raml`; a missing one raises
OperationUnsupported naming the operation and the box's version. There is deliberately no
operation that discards a pending CSR (reference/expressway.md, step B).

Exceptions (all monitor.errors.DeviceError, messages name target, step and fix):

    DeviceError
     +-- OperationUnsupported   the box's /api/raml lacks the operation
     +-- PendingCsrConflict     a CSR is already pending (carries it; never discarded)
     +-- CertificateEkuRefused  the box refused a certificate for its Extended Key Usage
     +-- TrustedCasLost         a trusted CA upload removed CAs that were there (restored)
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509

from expressway_certd.monitor.config import ExpresswayConfig
from expressway_certd.monitor.eku import parse_version
from expressway_certd.monitor.errors import ConfigError, DeviceError
from expressway_certd.monitor.facts import cert_pem
from expressway_certd.renewers.device_http import DeviceReply, FilePart, HttpApi
from expressway_certd.renewers.device_ssh import SshTarget, run_command

log = structlog.get_logger(__name__)

PEM_CERT = "-----BEGIN CERTIFICATE-----"
PEM_CSR = "-----BEGIN CERTIFICATE REQUEST-----"
_METHODS = ("get", "post", "put", "delete", "patch")

# operation -> (method, path under /api). Paths from reference/expressway.md; the zone status
# path is an assumption checked against /api/raml at run time.
OPERATIONS: dict[str, tuple[str, str]] = {
    "read system information": ("GET", "/provisioning/sysinfo"),
    "read server certificate": ("GET", "/provisioning/certs/server"),
    "upload server certificate": ("POST", "/provisioning/certs/server"),
    "read pending CSR": ("GET", "/provisioning/certs/generate_csr"),
    "generate CSR": ("POST", "/provisioning/certs/generate_csr"),
    "read trusted CA certificates": ("GET", "/provisioning/certs/root"),
    "add trusted CA certificates": ("POST", "/provisioning/certs/root"),
    "restart": ("POST", "/provisioning/restart"),
    "read cluster peers": ("GET", "/provisioning/common/cluster/peers"),
    "read zone status": ("GET", "/status/common/zone"),
    "read ACME configuration": ("GET", "/provisioning/certs/acme"),
}
# X15.5 keeps a client certificate store (Cisco doc 225693) but publishes no REST path for
# it: its resources are looked for in /api/raml (certs resources whose name says "client").
CLIENT_CERT_OPERATION = "read client certificate"
CLIENT_UPLOAD_OPERATION = "upload client certificate"
CLIENT_CSR_OPERATION = "generate client CSR"
# Where an operator renews the client certificate when the box lists no REST resource for it
# (the server certificate's page is Maintenance > Security > Server certificate; Cisco doc
# 225693 names the X15.5 client certificate store but no page or path we could find).
CLIENT_CERT_BY_HAND = (
    "renew the client certificate in the web UI (Maintenance > Security, the X15.5 client "
    "certificate page: generate its CSR there, have a private CA sign it with TLS Web Client "
    "Authentication, upload it and restart)"
)
EKU_SWITCH = "xConfiguration XCP TLS Certificate CVS EnableServerEkuUpload"
ACME_FROM = (12, 5)  # built-in ACME on Expressway-E
SERVER_EKU_UPLOAD_AT = (15, 4)  # the switch exists in X15.4 only (deprecated in X15.5)
_CSR_PENDING = ("already pending", "already in progress", "already exists", "in progress")
_EKU_WORDS = ("eku", "extended key usage", "client authentication", "server authentication")
# What public scripts accept as "the reboot started" after `xCommand Boot`: the xAPI result
# line, a bare OK (tshell), or the shutdown broadcast.
_BOOT_STARTED = re.compile(
    r"status=OK|^\s*OK\s*$|going down for (?:reboot|restart)|system is (?:rebooting|restarting)",
    re.IGNORECASE | re.MULTILINE,
)
_BOOT_FAILED = re.compile(r"status=Error|^\s*ERROR\s*$", re.IGNORECASE | re.MULTILINE)
# Cisco's examples read cluster peers under the /api/v1 prefix.
_V1_OPERATIONS = {"read cluster peers"}


class OperationUnsupported(DeviceError):
    """The box does not list the operation in /api/raml."""


class CertificateEkuRefused(DeviceError):
    """The box refused a certificate because of its Extended Key Usage (FN74362)."""


class TrustedCasLost(DeviceError):
    """Adding trusted CAs made the box drop CAs it trusted before; they were uploaded again."""


class PendingCsrConflict(DeviceError):
    """A CSR is already pending on the box; `csr` is it (the tool never discards it)."""

    def __init__(self, message: str, csr: x509.CertificateSigningRequest | None) -> None:
        super().__init__(message)
        self.csr = csr


@dataclass(frozen=True)
class ExpresswayClientConfig:
    """How to reach one Expressway node; `password` is the revealed secret (never printed)."""

    name: str
    host: str
    username: str
    password: str = field(repr=False)
    api_port: int = 443
    api_ca_file: Path | None = None  # None: the system trust store
    ssh_port: int = 22
    ssh_known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    restart_timeout: float = 900.0  # until the API answers again after a restart
    restart_down_grace: float = 120.0  # until the box must have gone down after a restart
    poll_interval: float = 2.0
    version: str | None = None  # configured version, used only when sysinfo has none

    @classmethod
    def from_target(cls, target: ExpresswayConfig, **overrides: Any) -> ExpresswayClientConfig:
        """Build from a config `[[expressway]]` entry, reading its password secret now."""
        if target.username is None or target.password is None:
            raise ConfigError(
                f"{target.name}: the API needs credentials; set username and password "
                "(password = 'env:NAME' or 'file:PATH') in its [[expressway]] entry"
            )
        values: dict[str, Any] = {
            "name": target.name,
            "host": target.address,
            "username": target.username,
            "password": target.password.reveal(),
            "api_port": target.api_port,
            "api_ca_file": target.api_ca_file,
            "ssh_port": target.ssh_port,
            "ssh_known_hosts": target.ssh_known_hosts,
            "version": target.version,
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class SystemInfo:
    name: str
    version: str  # as the box reports it, e.g. "X15.4"
    role: str | None  # "c", "e", or None when the box does not tell


@dataclass(frozen=True)
class ZoneState:
    name: str
    kind: str
    state: str  # "Active", "Failed", ...
    reason: str = ""


@dataclass(frozen=True)
class CsrRequest:
    """What 'Generate CSR' asks for; `additional_fqdns` without the 'DNS:' prefix."""

    additional_fqdns: tuple[str, ...] = ()
    key_length: int = 4096
    digest: str = "sha256"
    country: str | None = None
    province: str | None = None
    locality: str | None = None
    organization: str | None = None
    organizational_unit: str | None = None
    email: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Additional_FQDNS": list(self.additional_fqdns),
            "KeyLength": self.key_length,
            "DigestAlgorithm": self.digest,
        }
        optional = {
            "Country": self.country,
            "Province": self.province,
            "Locality": self.locality,
            "Organization": self.organization,
            "OrganizationalUnit": self.organizational_unit,
            "Email": self.email,
        }
        body.update({k: v for k, v in optional.items() if v})
        return body


@dataclass(frozen=True)
class ApiCapabilities:
    """What the box's REST API offers, as /api/raml lists it: (METHOD, path under /api) pairs,
    and a version if it gives one. (Not `renewers.ca.base.CACapabilities`: what a CA issues.)"""

    operations: frozenset[tuple[str, str]]
    raml_version: str | None = None

    def supports(self, operation: str) -> bool:
        return OPERATIONS[operation] in self.operations

    def client_cert_path(self) -> str | None:
        """The GET resource of the X15.5 client certificate, if /api/raml lists exactly one."""
        found = sorted(
            path
            for method, path in self.operations
            if method == "GET"
            and path.startswith("/provisioning/certs/")
            and "client" in path.rsplit("/", 1)[-1].lower()
        )
        return found[0] if len(found) == 1 else None

    def client_upload_path(self) -> str | None:
        """The POST resource that uploads the client certificate: the read resource, if
        /api/raml also lists POST on it."""
        path = self.client_cert_path()
        return path if path is not None and ("POST", path) in self.operations else None

    def client_csr_path(self) -> str | None:
        """The client CSR resource (GET pending, POST generate), if /api/raml lists exactly
        one under /provisioning/certs/ with "client" in its path and "csr" in its name."""
        found = sorted(
            path
            for method, path in self.operations
            if method == "POST"
            and ("GET", path) in self.operations
            and path.startswith("/provisioning/certs/")
            and "client" in path.lower()
            and "csr" in path.rsplit("/", 1)[-1].lower()
        )
        return found[0] if len(found) == 1 else None

    def role(self) -> str | None:
        paths = {path for _, path in self.operations}
        edge = any(p.startswith("/provisioning/edge/") for p in paths)
        controller = any(p.startswith("/provisioning/controller/") for p in paths)
        if edge != controller:
            return "e" if edge else "c"
        return None


def parse_raml(text: str) -> ApiCapabilities:
    """Resource paths and methods from a RAML 0.8 document (nested or flat resources)."""
    operations: set[tuple[str, str]] = set()
    stack: list[tuple[int, str]] = []  # (indent, full path) of open resources
    version = None
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        key, _, value = stripped.partition(":")
        key = key.strip().strip("'\"")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if key.startswith("/"):
            parent = stack[-1][1] if stack else ""
            stack.append((indent, parent + key.rstrip("/")))
        elif key.lower() in _METHODS and stack:
            path = stack[-1][1]
            path = path.removeprefix("/v1") if path.startswith("/v1/") else path
            operations.add((key.upper(), path))
        elif key == "version" and indent == 0:
            version = value.strip().strip("'\"") or None
    return ApiCapabilities(frozenset(operations), version)


class ExpresswayClient:
    """The REST API of one Expressway node. Use as `async with ExpresswayClient(cfg) as c:`."""

    def __init__(self, config: ExpresswayClientConfig) -> None:
        _validate(config)
        self.config = config
        self.target = config.name
        self._api = HttpApi(
            target=config.name,
            base_url=f"https://{_host(config.host)}:{config.api_port}/api",
            username=config.username,
            password=config.password,
            ca_file=config.api_ca_file,
            timeout=config.timeout,
            retries=config.retries,
            backoff=config.backoff,
            product="Expressway",
        )
        self._caps: ApiCapabilities | None = None
        self._info: SystemInfo | None = None

    def __repr__(self) -> str:
        return f"ExpresswayClient({self.target!r}, host={self.config.host!r})"

    async def __aenter__(self) -> ExpresswayClient:
        await self._api.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._api.close()

    # ---- discovery -------------------------------------------------------------------------

    async def capabilities(self) -> ApiCapabilities:
        """Parse /api/raml once per client."""
        if self._caps is None:
            reply = await self._api.request(
                "GET", "/raml", step="discover API (GET /api/raml)", allow=(404,)
            )
            if reply.status == 404:
                raise OperationUnsupported(
                    f"{self.target}: discover API: the box does not serve /api/raml, so its "
                    "operations cannot be checked; the REST API needs Expressway X8.11 or later"
                )
            self._caps = parse_raml(reply.text)
        return self._caps

    async def system_info(self) -> SystemInfo:
        """Name, version and role (role from the role-specific resources in /api/raml)."""
        if self._info is None:
            caps = await self.capabilities()
            if not caps.supports("read system information"):
                raise self._unsupported(
                    "read system information", caps.raml_version or "version unknown"
                )
            body = (await self._call("read system information")).json()
            if not isinstance(body, dict):
                raise self._api.error(
                    "read system information",
                    "sysinfo did not return a JSON object",
                    "check the box's API with a browser; this client expects JSON",
                )
            version = _first(body, ("SoftwareVersion", "Version", "version", "SWVersion"))
            version = version or self.config.version
            if version is None:
                raise self._api.error(
                    "read system information",
                    f"sysinfo has no version field (keys: {', '.join(sorted(body)) or 'none'})",
                    "set 'version' in the [[expressway]] entry or report this box's sysinfo",
                )
            name = _first(body, ("SystemName", "Name", "name")) or self.target
            self._info = SystemInfo(name=name, version=version, role=caps.role())
        return self._info

    # ---- certificates ----------------------------------------------------------------------

    async def server_certificate(self) -> x509.Certificate:
        """The installed server certificate (served after the next restart if just uploaded)."""
        reply = await self._call("read server certificate")
        return self._load_certs(pem_text(reply.text), "read server certificate")[0]

    async def pending_csr(self) -> x509.CertificateSigningRequest | None:
        """The CSR generated on the box and not yet used, or None."""
        reply = await self._call("read pending CSR", allow=(404,))
        return self._pending_from(reply, "read pending CSR")

    async def pending_client_csr(self) -> x509.CertificateSigningRequest | None:
        """The X15.5 client CSR generated on the box and not yet used, or None (resource found
        in /api/raml; none listed: OperationUnsupported)."""
        step = "read pending client CSR"
        path = await self._client_path(step)
        reply = await self._api.request("GET", path, step=step, allow=(404,))
        return self._pending_from(reply, step)

    def _pending_from(self, reply: DeviceReply, step: str) -> x509.CertificateSigningRequest | None:
        text = pem_text(reply.text)
        if reply.status == 404 or PEM_CSR not in text:
            return None
        return self._load_csr(text, step)

    async def generate_csr(self, request: CsrRequest) -> x509.CertificateSigningRequest:
        """Generate a CSR on the box (its key stays there). Raises PendingCsrConflict when one is
        already pending: the caller decides whether to reuse it; it is never discarded."""
        step = "generate CSR"
        caps = await self.capabilities()
        if not caps.supports(step):
            raise self._unsupported(step, await self._version_for_errors(caps))
        _, path = OPERATIONS[step]
        return await self._generate(request, path, step, self.pending_csr, "Server certificate")

    async def generate_client_csr(self, request: CsrRequest) -> x509.CertificateSigningRequest:
        """Generate a CSR for the X15.5 client certificate on the box (its key stays there),
        through the client CSR resource /api/raml lists; PendingCsrConflict as for the server
        certificate (the box has one CSR slot: a pending server CSR blocks it too)."""
        step = CLIENT_CSR_OPERATION
        path = await self._client_path(step)
        return await self._generate(
            request, path, step, self.pending_client_csr, "the X15.5 client certificate page"
        )

    async def _generate(
        self,
        request: CsrRequest,
        path: str,
        step: str,
        read_pending: Callable[[], Awaitable[x509.CertificateSigningRequest | None]],
        page: str,
    ) -> x509.CertificateSigningRequest:
        reply = await self._api.request(
            "POST",
            path,
            step=step,
            json_body=request.body(),
            allow=(400, 403, 409, 500),
            final=csr_already_pending,
        )
        if csr_already_pending(reply):
            pending = await read_pending()
            raise PendingCsrConflict(
                f"{self.target}: {step}: a CSR is already pending on the box; it is kept (a "
                "certificate signed for a discarded CSR cannot be installed): get it signed "
                "and install it, or discard it by hand on the box if it is really unwanted",
                pending,
            )
        if reply.status >= 400:
            raise self._api.error(
                step,
                f"the box refused it (HTTP {reply.status}: {reply.message!r})",
                "check the CSR fields (key length, digest, subject) against the box's GUI",
            )
        csr = await read_pending()
        if csr is None:
            raise self._api.error(
                step,
                "the box accepted the request but shows no pending CSR",
                f"look at Maintenance > Security > {page} on the box",
            )
        log.info("expressway.csr_generated", target=self.target, step=step, sans=csr_sans(csr))
        return csr

    async def trusted_cas(self) -> list[x509.Certificate]:
        reply = await self._call("read trusted CA certificates")
        text = pem_text(reply.text)
        if PEM_CERT not in text:
            return []
        return self._load_certs(text, "read trusted CA certificates")

    async def add_trusted_cas(self, certs: list[x509.Certificate]) -> list[x509.Certificate]:
        """Add the CA certificates the box does not trust yet; returns those added.
        Lists before and after, so running it twice is harmless and a silent refusal shows.
        Never removes a CA: if the upload made the box drop CAs it trusted before, they are
        uploaded again and TrustedCasLost is raised naming them."""
        step = "add trusted CA certificates"
        present = await self.trusted_cas()
        missing = [c for c in certs if c not in present]
        if not missing:
            return []
        pem = "".join(cert_pem(c) for c in missing).encode()
        await self._call(step, files=[FilePart("file", "trusted-ca.pem", pem)])
        after = await self.trusted_cas()
        vanished = [c for c in present if c not in after]
        if vanished:
            await self._restore_trusted(vanished, missing, step)
        still = [c for c in missing if c not in after]
        if still:
            names = ", ".join(c.subject.rfc4514_string() for c in still)
            raise self._api.error(
                step,
                f"the box accepted the upload but does not list {names}",
                "add them by hand at Maintenance > Security > Trusted CA certificate",
            )
        log.info("expressway.trusted_cas_added", target=self.target, count=len(missing))
        return missing

    async def _restore_trusted(
        self, vanished: list[x509.Certificate], added: list[x509.Certificate], step: str
    ) -> None:
        # One upload with everything that must be there, in case this box replaces its list.
        names = "; ".join(c.subject.rfc4514_string() for c in vanished)
        pem = "".join(cert_pem(c) for c in [*vanished, *added]).encode()
        await self._call(step, files=[FilePart("file", "restore-trusted-ca.pem", pem)])
        still = [c for c in vanished if c not in await self.trusted_cas()]
        log.error("expressway.trusted_cas_lost", target=self.target, count=len(vanished))
        outcome = (
            "they were uploaded again"
            if not still
            else f"{len(still)} could not be restored: add them by hand"
        )
        raise TrustedCasLost(
            f"{self.target}: {step}: the upload removed {len(vanished)} CA certificate(s) the "
            f"box trusted before ({names}); {outcome}; this box replaces its trusted CA list on "
            "upload: add CA certificates at Maintenance > Security > Trusted CA certificate"
        )

    async def upload_server_certificate(self, cert: x509.Certificate | bytes | str) -> None:
        """Upload the signed server certificate (PEM, leaf only). It becomes active only after
        a restart. A chain, a private key or DER is refused here, before the box sees it."""
        step = "upload server certificate"
        caps = await self.capabilities()
        if not caps.supports(step):
            raise self._unsupported(step, await self._version_for_errors(caps))
        await self._upload(cert, OPERATIONS[step][1], step, "server")
        log.info("expressway.server_cert_uploaded", target=self.target)

    async def upload_client_certificate(self, cert: x509.Certificate | bytes | str) -> None:
        """Upload the signed X15.5 client certificate (PEM, leaf only) through the resource
        /api/raml lists (POST on the client certificate resource); as for the server
        certificate, it is used after a restart (assumption: Cisco documents neither)."""
        step = CLIENT_UPLOAD_OPERATION
        path = await self._client_path(step)
        await self._upload(cert, path, step, "client")
        log.info("expressway.client_cert_uploaded", target=self.target)

    async def _upload(
        self, cert: x509.Certificate | bytes | str, path: str, step: str, kind: str
    ) -> None:
        pem = cert_pem(cert) if isinstance(cert, x509.Certificate) else _text(cert)
        if PEM_CERT not in pem:
            raise DeviceError(
                f"{self.target}: {step}: the certificate is not PEM; the Expressway takes a "
                f"Base64 (PEM) {kind} certificate: convert it with 'openssl x509 -inform der'"
            )
        if "PRIVATE KEY-----" in pem:
            raise DeviceError(
                f"{self.target}: {step}: refusing to send a private key; the key of a CSR "
                "generated on the box stays on the box"
            )
        if pem.count(PEM_CERT) > 1:
            raise DeviceError(
                f"{self.target}: {step}: the file holds {pem.count(PEM_CERT)} certificates; "
                f"upload the {kind} certificate only and add the CA certificates to the "
                "trusted CA list"
            )
        self._load_certs(pem, step)
        reply = await self._api.request(
            "POST",
            path,
            step=step,
            files=[FilePart("file", f"{kind}.pem", pem.encode())],
            allow=(400, 409),
        )
        if reply.status in (400, 409) and is_eku_refusal(reply.message):
            need = (
                "the X15.5 client certificate needs TLS Web Client Authentication: have a "
                "private CA (AD CS, EST, manual) issue it; public CAs no longer do (FN74362)"
                if kind == "client"
                else "request a certificate with the EKU this version needs (FN74362: TLS Web "
                "Server and Client Authentication before X15.4; on an X15.4 Expressway-E "
                f"serverAuth-only needs '{EKU_SWITCH}: On')"
            )
            raise CertificateEkuRefused(
                f"{self.target}: {step}: the box refused the certificate for its Extended Key "
                f"Usage ({reply.message!r}); the private key is fine: {need}"
            )
        if reply.status in (400, 409):
            raise self._api.error(
                step,
                f"the box refused the certificate ({reply.message!r})",
                "the certificate must be signed for the CSR pending on this box (or for its "
                "current key); if the CSR was regenerated or discarded, request a new "
                "certificate for the pending CSR",
            )

    async def _client_path(self, step: str) -> str:
        """The resource /api/raml lists for `step` on the X15.5 client store; none listed:
        OperationUnsupported naming it and how to do it by hand."""
        caps = await self.capabilities()
        found, what = {
            CLIENT_CERT_OPERATION: (caps.client_cert_path(), "client certificate resource"),
            CLIENT_UPLOAD_OPERATION: (
                caps.client_upload_path(),
                "client certificate upload (POST)",
            ),
        }.get(step, (caps.client_csr_path(), "client CSR resource (GET and POST)"))
        if found is not None:
            return found
        version = await self._version_for_errors(caps)
        raise OperationUnsupported(
            f"{self.target}: {step}: this Expressway ({version}) lists no {what} under "
            "/api/provisioning/certs in /api/raml (Cisco publishes no REST path for the X15.5 "
            f"client certificate store); {CLIENT_CERT_BY_HAND}"
        )

    async def check_client_renewal(self) -> None:
        """Raise OperationUnsupported naming every X15.5 client store resource a renewal needs
        that /api/raml does not list (read, CSR, upload); nothing is called on the box."""
        caps = await self.capabilities()
        missing = [
            name
            for name, path in (
                (CLIENT_CERT_OPERATION, caps.client_cert_path()),
                (CLIENT_CSR_OPERATION, caps.client_csr_path()),
                (CLIENT_UPLOAD_OPERATION, caps.client_upload_path()),
            )
            if path is None
        ]
        if missing:
            version = await self._version_for_errors(caps)
            raise OperationUnsupported(
                f"{self.target}: renew the client certificate: this Expressway ({version}) "
                f"lists no resource to {', '.join(missing)} under /api/provisioning/certs in "
                "/api/raml (Cisco publishes no REST path for the X15.5 client certificate "
                f"store); {CLIENT_CERT_BY_HAND}"
            )

    # ---- restart, peers, zones ---------------------------------------------------------------

    async def restart(
        self, *, wait: bool = True, restarted: Callable[[], Awaitable[bool]] | None = None
    ) -> str:
        """Restart the box: REST when /api/raml lists it, else SSH `xCommand Boot`.
        With `wait`, return once the API has gone down and answers again, or answers and
        `restarted()` shows that the restart is over (see `wait_until_restarted`). Returns
        'api'/'ssh'."""
        caps = await self.capabilities()
        how = "ssh"
        if caps.supports("restart"):
            reply = await self._call("restart", allow=(404, 405))
            if reply.status not in (404, 405):
                how = "api"
        if how == "ssh":
            await self._restart_over_ssh()
        log.info("expressway.restart_requested", target=self.target, via=how)
        if wait:
            await self.wait_until_restarted(restarted)
        return how

    async def _restart_over_ssh(self) -> None:
        cfg = self.config
        ssh = SshTarget(
            cfg.name,
            cfg.host,
            cfg.ssh_port,
            cfg.username,
            cfg.password,
            cfg.ssh_known_hosts,
            cfg.timeout,
        )
        step = "restart over SSH (xCommand Boot)"
        output = await run_command(
            ssh, "xCommand Boot", step=step, until=("\nOK", "ERROR", "going down", "OK\n")
        )
        if not boot_started(output):
            tail = " | ".join(output.strip().splitlines()[-3:]) or "no output"
            raise DeviceError(
                f"{self.target}: {step}: the CLI did not confirm the restart ({tail}); "
                "restart the box from its web interface"
            )

    async def wait_until_restarted(
        self, restarted: Callable[[], Awaitable[bool]] | None = None
    ) -> None:
        """Poll until the API has been seen down and then answers again. Polls start at
        0.1 s and double up to `poll_interval`, so a quick restart is rarely missed; but a
        client whose polls come late (a busy process) can miss all of it. `restarted`, when
        given, is evidence that needs no down phase (stage restart passes: every endpoint
        serves the certificate uploaded, which a box activates only by restarting): while the
        API answers and was not seen down, it is asked, and True ends the wait."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        start = loop.time()
        seen_down = False
        pause = min(0.1, cfg.poll_interval)
        while True:
            up = await self._api_answers()
            now = loop.time() - start
            if not up:
                seen_down = True
            elif seen_down:
                log.info("expressway.restarted", target=self.target, seconds=round(now, 1))
                self._info = None
                return
            elif restarted is not None and await restarted():
                log.info(
                    "expressway.restarted",
                    target=self.target,
                    seconds=round(now, 1),
                    seen="back up with the new certificate; never seen down",
                )
                self._info = None
                return
            elif now > cfg.restart_down_grace:
                raise DeviceError(
                    f"{self.target}: restart: the box accepted the restart but its API did "
                    f"not go down within {cfg.restart_down_grace:g}s; check its event log "
                    "and restart it by hand"
                )
            if now > cfg.restart_timeout:
                raise DeviceError(
                    f"{self.target}: restart: the API did not answer again within "
                    f"{cfg.restart_timeout:g}s; check the box's console"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, cfg.poll_interval)

    async def _api_answers(self) -> bool:
        method, path = OPERATIONS["read system information"]
        try:
            reply = await self._api.request(
                method,
                path,
                step="wait for restart",
                allow=tuple(range(300, 600)),
                retries=0,
                deadline=max(1.0, min(self.config.timeout, 5.0)),
            )
        except DeviceError:
            return False
        return reply.status < 500

    async def client_certificate(self) -> x509.Certificate:
        """The X15.5 client certificate (what the box presents as a TLS client). Its resource
        is found in /api/raml; a box without one raises OperationUnsupported naming it."""
        path = await self._client_path(CLIENT_CERT_OPERATION)
        reply = await self._api.request("GET", path, step=CLIENT_CERT_OPERATION)
        return self._load_certs(pem_text(reply.text), CLIENT_CERT_OPERATION)[0]

    async def acme_scheduler(self, role: str | None = None) -> bool | None:
        """Is the box's own ACME scheduler on? False for an Expressway-C (`role`, else the
        role from /api/raml) or a version before X12.5; None when the box may have ACME but
        its state cannot be read (unknown)."""
        info = await self.system_info()
        parsed = version_tuple(info.version)
        role = role or info.role
        if role == "c" or (parsed is not None and parsed < ACME_FROM):
            return False
        caps = await self.capabilities()
        if not caps.supports("read ACME configuration"):
            return None
        body = (await self._call("read ACME configuration")).json()
        return acme_enabled_from(body)

    async def server_eku_upload(self) -> bool | None:
        """X15.4 `xConfiguration XCP TLS Certificate CVS EnableServerEkuUpload` over SSH:
        True (On), False (Off), None when the box does not know the setting."""
        cfg = self.config
        ssh = SshTarget(
            cfg.name,
            cfg.host,
            cfg.ssh_port,
            cfg.username,
            cfg.password,
            cfg.ssh_known_hosts,
            cfg.timeout,
        )
        output = await run_command(
            ssh, EKU_SWITCH, step="read EnableServerEkuUpload", until=("\nOK", "ERROR")
        )
        return switch_value(output, "EnableServerEkuUpload")

    async def server_eku_upload_if_relevant(self, role: str | None) -> bool | None:
        """The X15.4 switch for an X15.4 Expressway-E, else None (the rule does not use it).
        An SSH failure reads as None (unknown), which keeps both EKUs required."""
        info = await self.system_info()
        if (role or info.role) != "e" or version_tuple(info.version) != SERVER_EKU_UPLOAD_AT:
            return None
        try:
            return await self.server_eku_upload()
        except DeviceError as exc:
            log.warning("expressway.eku_switch_unread", target=self.target, error=str(exc))
            return None

    async def cluster_peers(self) -> list[str]:
        """Addresses of every peer of the cluster, this node included."""
        body = (await self._call("read cluster peers")).json()
        items = body if isinstance(body, list) else []
        peers = [
            str(item.get("PeerAddress") or item.get("Address") or "")
            for item in items
            if isinstance(item, dict)
        ]
        return [p for p in peers if p]

    async def zones(self) -> list[ZoneState]:
        """State of every zone the box reports (traversal and Unified CM neighbor zones)."""
        body = (await self._call("read zone status")).json()
        if not isinstance(body, list):
            raise self._api.error(
                "read zone status",
                "the zone status is not a JSON list",
                "report this box's answer; zone checks cannot run",
            )
        return [
            ZoneState(
                name=str(item.get("Name", "")),
                kind=str(item.get("Type", "")),
                state=str(item.get("Status", "")),
                reason=str(item.get("StatusReason", "") or ""),
            )
            for item in body
            if isinstance(item, dict)
        ]

    # ---- helpers -----------------------------------------------------------------------------

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        caps = await self.capabilities()
        if not caps.supports(operation):
            raise self._unsupported(operation, await self._version_for_errors(caps))
        method, path = OPERATIONS[operation]
        if operation in _V1_OPERATIONS:
            path = "/v1" + path
        return await self._api.request(method, path, step=operation, **kwargs)

    async def _version_for_errors(self, caps: ApiCapabilities) -> str:
        if caps.supports("read system information"):
            try:
                return (await self.system_info()).version
            except DeviceError:
                pass
        return caps.raml_version or "version unknown"

    def _unsupported(self, operation: str, version: str) -> OperationUnsupported:
        method, path = OPERATIONS[operation]
        return OperationUnsupported(
            f"{self.target}: {operation}: this Expressway ({version}) does not offer "
            f"{method} /api{path} (checked /api/raml); do this step by hand on the box or "
            "upgrade it"
        )

    def _load_certs(self, text: str, step: str) -> list[x509.Certificate]:
        try:
            return x509.load_pem_x509_certificates(text.encode())
        except ValueError as exc:
            raise self._api.error(
                step, f"the answer is not PEM certificate data ({exc})", "check the box's API"
            ) from exc

    def _load_csr(self, text: str, step: str) -> x509.CertificateSigningRequest:
        start = text.index(PEM_CSR)
        try:
            return x509.load_pem_x509_csr(text[start:].encode())
        except ValueError as exc:
            raise self._api.error(
                step, f"the pending CSR is not readable PEM ({exc})", "check the box's API"
            ) from exc


def _validate(config: ExpresswayClientConfig) -> None:
    problems = []
    if not config.host.strip():
        problems.append("host is empty")
    if not config.username.strip():
        problems.append("username is empty")
    if not config.password:
        problems.append("the password secret is empty")
    if not 0 < config.api_port < 65536 or not 0 < config.ssh_port < 65536:
        problems.append("ports must be 1-65535")
    if config.timeout <= 0 or config.retries < 0 or config.backoff < 0:
        problems.append("timeout must be positive, retries and backoff not negative")
    if config.api_ca_file is not None and not Path(config.api_ca_file).is_file():
        problems.append(f"api_ca_file {config.api_ca_file} does not exist")
    if problems:
        raise ConfigError(f"{config.name}: Expressway client: {'; '.join(problems)}")


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def pem_text(text: str) -> str:
    """PEM blocks of an answer: the body itself, or the PEM strings inside a JSON answer
    (Cisco documents PEM; some versions may wrap it in JSON)."""
    if "-----BEGIN" in text and not text.lstrip().startswith(("{", "[")):
        return text
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return text
    found: list[str] = []
    pending: list[Any] = [body]  # a stack, not recursion: nesting depth is the sender's choice
    while pending:
        value = pending.pop()
        if isinstance(value, str) and "-----BEGIN" in value:
            found.append(value.strip() + "\n")
        elif isinstance(value, dict):
            pending.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            pending.extend(reversed(value))
    return "".join(found) if found else text


def _first(body: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _text(data: bytes | str) -> str:
    return data if isinstance(data, str) else data.decode("ascii", "replace")


def csr_sans(csr: x509.CertificateSigningRequest) -> list[str]:
    """SANs of a CSR as 'DNS:name' / 'IP:addr' strings (the scan/inspect format)."""
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    out = [f"DNS:{n}" for n in ext.value.get_values_for_type(x509.DNSName)]
    out += [f"IP:{a}" for a in ext.value.get_values_for_type(x509.IPAddress)]
    return out


def version_tuple(version: str) -> tuple[int, int] | None:
    """'X15.4.1' -> (15, 4); None when the text is not an Expressway version (the one parser is
    monitor/eku.py's `parse_version`)."""
    text = version.strip()
    parsed = parse_version(text) if text[:1] in ("X", "x", "V", "v") and "." in text else None
    return parsed[:2] if parsed else None


def csr_already_pending(reply: DeviceReply) -> bool:
    """A 'CSR already pending' answer, whatever status code carries it (409, 400, 500 ...)."""
    message = reply.message.strip().lower()
    if reply.status == 409 or message == "conflict":
        return True
    about_csr = "csr" in message or "signing request" in message
    return about_csr and any(phrase in message for phrase in _CSR_PENDING)


def is_eku_refusal(message: str) -> bool:
    """Does the box's refusal of a certificate name its Extended Key Usage?"""
    lowered = message.lower()
    return any(word in lowered for word in _EKU_WORDS)


def boot_started(output: str) -> bool:
    """Did the CLI say the reboot started (xAPI `status=OK`, a bare OK, a shutdown notice)?"""
    return bool(_BOOT_STARTED.search(output)) and not _BOOT_FAILED.search(output)


def switch_value(output: str, name: str) -> bool | None:
    """'On'/'Off' of an xConfiguration line such as '*c xConfiguration ... Name: On'."""
    for line in output.splitlines():
        if name in line and ":" in line:
            value = line.rsplit(":", 1)[1].strip().strip('"').lower()
            if value in ("on", "off"):
                return value == "on"
    return None


def acme_enabled_from(body: Any) -> bool | None:
    """The ACME scheduler state from the box's answer; None when it does not say."""
    if not isinstance(body, dict):
        return None
    for key in ("ACMEEnabled", "Enabled", "ACME", "Mode", "Status"):
        value = body.get(key)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("on", "enabled", "true"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("off", "disabled", "false"):
            return False
    return None
