"""Unified CM client: add CA certificates to a node's trust stores (platformcom certmgr REST),
restart services through Control Center Services SOAP and poll their status, and restart
Cisco Tomcat over SSH (`utils service restart Cisco Tomcat`, the only way to restart it).

Shape (like a lego provider): `CucmClientConfig`, one validating constructor
`CucmClient(config)`, private HTTP/SSH plumbing in renewers/device_http.py and device_ssh.py.
Every call names the node: trust stores are per node, so the pipeline calls each node.

Exceptions: monitor.errors.DeviceError (messages name cluster/node, step and fix).
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from monitor.config import UnifiedCMConfig
from monitor.errors import ConfigError, DeviceError
from renewers.device_http import HttpApi, Reply
from renewers.device_ssh import SshTarget, run_command

log = structlog.get_logger(__name__)

TOMCAT = "Cisco Tomcat"
TRUST_LIST_PATH = "/platformcom/api/v1/certmgr/config/trust/certificate"
TRUST_ADD_PATH = "/platformcom/api/v1/certmgr/config/trust/certificates"
SOAP_PATH = "/controlcenterservice2/services/ControlCenterServices"
_SOAP_NS = "http://schemas.cisco.com/ast/soap"
_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"


@dataclass(frozen=True)
class CucmClientConfig:
    """How to reach the nodes of one Unified CM cluster; `password` is the revealed secret."""

    name: str
    nodes: tuple[str, ...]
    username: str
    password: str = field(repr=False)
    api_port: int = 443
    soap_port: int = 8443
    ssh_port: int = 22
    api_ca_file: Path | None = None
    ssh_known_hosts: Path | None = None
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    service_timeout: float = 900.0  # until a restarted service reads Started
    poll_interval: float = 2.0

    @classmethod
    def from_config(cls, ucm: UnifiedCMConfig, **overrides: Any) -> CucmClientConfig:
        """Build from a `[[unified_cm]]` entry, reading its password secret now."""
        values: dict[str, Any] = {
            "name": ucm.name,
            "nodes": ucm.nodes,
            "username": ucm.username,
            "password": ucm.password.reveal(),
            "api_port": ucm.api_port,
            "soap_port": ucm.soap_port,
            "ssh_port": ucm.ssh_port,
            "api_ca_file": ucm.api_ca_file,
            "ssh_known_hosts": ucm.ssh_known_hosts,
        }
        values.update(overrides)
        return cls(**values)


class CucmClient:
    """Trust stores and services of a Unified CM cluster. Use as `async with CucmClient(cfg)`."""

    def __init__(self, config: CucmClientConfig) -> None:
        _validate(config)
        self.config = config
        self._apis: dict[tuple[str, int], HttpApi] = {}

    def __repr__(self) -> str:
        return f"CucmClient({self.config.name!r}, nodes={list(self.config.nodes)!r})"

    async def __aenter__(self) -> CucmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for api in self._apis.values():
            await api.close()
        self._apis.clear()

    # ---- trust stores --------------------------------------------------------------------------

    async def trusted(self, node: str, store: str) -> list[x509.Certificate]:
        """Certificates in `<store>-trust` of one node (store: tomcat, callmanager, ...)."""
        step = f"list {store}-trust"
        reply = await self._api(node, self.config.api_port).request(
            "GET", f"{TRUST_LIST_PATH}?service={store}", step=step
        )
        body = reply.json()
        items = body if isinstance(body, list) else (body or {}).get("certificates", [])
        certs: list[x509.Certificate] = []
        for item in items if isinstance(items, list) else []:
            pem = item.get("certificate") if isinstance(item, dict) else item
            if isinstance(pem, str) and "-----BEGIN CERTIFICATE-----" in pem:
                try:
                    certs.append(x509.load_pem_x509_certificate(pem.encode()))
                except ValueError as exc:
                    raise self._error(
                        node, step, f"an entry is not a readable certificate ({exc})"
                    ) from exc
        return certs

    async def add_trust(
        self,
        node: str,
        certs: list[x509.Certificate],
        *,
        stores: tuple[str, ...] | None = None,
        description: str = "added by expressway-certd",
    ) -> dict[str, list[x509.Certificate]]:
        """Add the certificates each store lacks; returns what was added per store.
        Lists before and after, so running twice is harmless and a silent refusal shows."""
        added: dict[str, list[x509.Certificate]] = {}
        for store in stores or ("tomcat", "callmanager"):
            present = await self.trusted(node, store)
            missing = [c for c in certs if c not in present]
            if not missing:
                continue
            step = f"add to {store}-trust"
            await self._api(node, self.config.api_port).request(
                "POST",
                TRUST_ADD_PATH,
                step=step,
                json_body={
                    "service": [store],
                    "certificates": [c.public_bytes(Encoding.PEM).decode() for c in missing],
                    "description": description,
                },
            )
            after = await self.trusted(node, store)
            lost = [c for c in missing if c not in after]
            if lost:
                names = ", ".join(c.subject.rfc4514_string() for c in lost)
                raise self._error(
                    node,
                    step,
                    f"the node accepted the upload but does not list {names}; add them in "
                    "OS Administration > Certificate Management",
                )
            added[store] = missing
            log.info("cucm.trust_added", cluster=self.config.name, node=node, store=store)
        return added

    # ---- services ------------------------------------------------------------------------------

    async def service_status(self, node: str, names: list[str]) -> dict[str, str]:
        """Status of each named service (Started, Stopped, Starting ...). Names are
        case-sensitive; Unified CM reports an unknown name as Stopped."""
        items = "".join(f"<soap:item>{escape(n)}</soap:item>" for n in names)
        reply = await self._soap(
            node,
            "soapGetServiceStatus",
            f"<soap:soapGetServiceStatus><soap:ServiceStatus>{items}</soap:ServiceStatus>"
            "</soap:soapGetServiceStatus>",
        )
        return _service_states(reply.text)

    async def restart_services(self, node: str, names: list[str], *, wait: bool = True) -> None:
        """Restart services on one node: Cisco Tomcat over SSH, the others through SOAP;
        with `wait`, until each reads Started again."""
        soap_names = [n for n in names if n != TOMCAT]
        if TOMCAT in names:
            await self.restart_tomcat(node)
        if not soap_names:
            return
        items = "".join(f"<soap:item>{escape(n)}</soap:item>" for n in soap_names)
        await self._soap(
            node,
            "soapDoControlServices",
            "<soap:soapDoControlServices><soap:ControlServiceRequest>"
            f"<soap:NodeName>{escape(node)}</soap:NodeName>"
            "<soap:ControlType>Restart</soap:ControlType>"
            f"<soap:ServiceList>{items}</soap:ServiceList>"
            "</soap:ControlServiceRequest></soap:soapDoControlServices>",
        )
        log.info(
            "cucm.services_restarting", cluster=self.config.name, node=node, services=soap_names
        )
        if wait:
            await self.wait_for_services(node, soap_names)

    async def wait_for_services(self, node: str, names: list[str]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.service_timeout
        stopped_polls = 0
        while True:
            states = await self.service_status(node, names)
            pending = {n: states.get(n, "missing") for n in names if states.get(n) != "Started"}
            if not pending:
                return
            # A restarted service passes through Stopping/Starting; one that reads Stopped
            # poll after poll was never running, which is what an unknown name looks like.
            stopped = [n for n, s in pending.items() if s in ("Stopped", "missing")]
            stopped_polls = stopped_polls + 1 if stopped else 0
            if stopped_polls >= 3:
                raise self._error(
                    node,
                    "restart services",
                    f"{', '.join(stopped)} read Stopped after the restart; service names are "
                    "case-sensitive and an unknown name reads as Stopped: check the names in "
                    "Cisco Unified Serviceability > Control Center",
                )
            if loop.time() > deadline:
                detail = ", ".join(f"{n}: {s}" for n, s in pending.items())
                raise self._error(
                    node,
                    "restart services",
                    f"not Started within {self.config.service_timeout:g}s ({detail}); look at "
                    "Control Center on the node",
                )
            await asyncio.sleep(self.config.poll_interval)

    async def restart_tomcat(self, node: str) -> None:
        """`utils service restart Cisco Tomcat` at the node's `admin:` prompt."""
        cfg = self.config
        step = "restart Cisco Tomcat over SSH"
        ssh = SshTarget(
            f"{cfg.name}/{node}",
            node,
            cfg.ssh_port,
            cfg.username,
            cfg.password,
            cfg.ssh_known_hosts,
            max(cfg.timeout, cfg.service_timeout),
        )
        output = await run_command(
            ssh,
            f"utils service restart {TOMCAT}",
            step=step,
            prompt="admin:",
            until=("admin:",),
        )
        if f"{TOMCAT}[STARTED]" not in output:
            tail = " | ".join(output.strip().splitlines()[-3:]) or "no output"
            raise self._error(
                node,
                step,
                f"the CLI did not report {TOMCAT}[STARTED] ({tail}); run the command by hand",
            )
        log.info("cucm.tomcat_restarted", cluster=cfg.name, node=node)

    # ---- plumbing ------------------------------------------------------------------------------

    def _api(self, node: str, port: int) -> HttpApi:
        key = (node, port)
        if key not in self._apis:
            host = f"[{node}]" if ":" in node else node
            cfg = self.config
            self._apis[key] = HttpApi(
                target=f"{cfg.name}/{node}",
                base_url=f"https://{host}:{port}",
                username=cfg.username,
                password=cfg.password,
                ca_file=cfg.api_ca_file,
                timeout=cfg.timeout,
                retries=cfg.retries,
                backoff=cfg.backoff,
                product="Unified CM",
            )
        return self._apis[key]

    async def _soap(self, node: str, operation: str, body: str) -> Reply:
        envelope = (
            f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{_ENV_NS}" '
            f'xmlns:soap="{_SOAP_NS}"><soapenv:Header/><soapenv:Body>{body}</soapenv:Body>'
            "</soapenv:Envelope>"
        )
        reply = await self._api(node, self.config.soap_port).request(
            "POST",
            SOAP_PATH,
            step=operation,
            text_body=envelope,
            content_type="text/xml; charset=utf-8",
            extra_headers={"SOAPAction": operation},
            final=lambda r: "Fault>" in r.text,
            allow=(500,),
        )
        if reply.status == 500:
            fault = _fault_string(reply.text)
            raise self._error(
                node,
                operation,
                f"Control Center Services refused it ({fault!r})"
                if fault
                else "Control Center Services answered HTTP 500; look at the node's logs",
            )
        return reply

    def _error(self, node: str, step: str, text: str) -> DeviceError:
        return DeviceError(f"{self.config.name}/{node}: {step}: {text}")


def _parse_xml(text: str) -> ET.Element | None:
    try:
        # Answers from an authenticated, TLS-verified node; expat refuses entity expansion bombs.
        return ET.fromstring(text)  # noqa: S314
    except ET.ParseError:
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _service_states(text: str) -> dict[str, str]:
    root = _parse_xml(text)
    states: dict[str, str] = {}
    if root is None:
        return states
    for item in root.iter():
        if _local(item.tag) != "item":
            continue
        fields = {_local(child.tag): (child.text or "").strip() for child in item}
        if fields.get("ServiceName"):
            states[fields["ServiceName"]] = fields.get("ServiceStatus", "")
    return states


def _fault_string(text: str) -> str:
    root = _parse_xml(text)
    if root is None:
        return ""
    for element in root.iter():
        if _local(element.tag) == "faultstring":
            return (element.text or "").strip()
    return ""


def _validate(config: CucmClientConfig) -> None:
    problems = []
    if not config.nodes or not all(n.strip() for n in config.nodes):
        problems.append("nodes must list at least one hostname")
    if not config.username.strip():
        problems.append("username is empty")
    if not config.password:
        problems.append("the password secret is empty")
    for port in (config.api_port, config.soap_port, config.ssh_port):
        if not 0 < port < 65536:
            problems.append(f"port {port} is not 1-65535")
    if config.timeout <= 0 or config.retries < 0 or config.poll_interval <= 0:
        problems.append("timeout and poll_interval must be positive, retries not negative")
    if config.api_ca_file is not None and not Path(config.api_ca_file).is_file():
        problems.append(f"api_ca_file {config.api_ca_file} does not exist")
    if problems:
        raise ConfigError(f"{config.name}: Unified CM client: {'; '.join(problems)}")
