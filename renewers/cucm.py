"""Unified CM client: add CA certificates to a node's trust stores (platformcom certmgr REST),
restart services through Control Center Services SOAP and poll their status, and restart
Cisco Tomcat over SSH (`utils service restart Cisco Tomcat`, the only way to restart it).

Shape (like a lego provider): `CucmClientConfig`, one validating constructor
`CucmClient(config)`, private HTTP/SSH plumbing in renewers/device_http.py and device_ssh.py.
Every call names the node: trust stores are per node, so the pipeline calls each node.

Services are read before anything restarts: a service not activated on a node (Control Center
ReasonCode -1068, "Service Not Activated") is skipped, not an error. `restart_service(node,
service)` restarts ONE service on ONE node and says what happened, so the pipeline can record
progress per node and per service and never restart twice on a retry. After Cisco Tomcat
restarts, the client waits until the certificate API and Control Center answer again (their
web applications answer 404/503 while deploying), within `webapp_timeout`. The platform CLI
session requests a terminal (renewers/device_ssh.py).

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

from expressway_certd.monitor.config import UnifiedCMConfig
from expressway_certd.monitor.errors import ConfigError, DeviceError
from expressway_certd.monitor.facts import cert_pem
from expressway_certd.renewers.device_http import DeviceReply, HttpApi
from expressway_certd.renewers.device_ssh import SshTarget, run_command

log = structlog.get_logger(__name__)

TOMCAT = "Cisco Tomcat"
# Services whose restart makes the new trust effective; Cisco Tftp serves the phones' ITL/CTL
# and talks TLS on 6972 to the Expressway-C (FN74362 lists TFTP among the Expressway's TLS
# client uses). Cisco Tomcat last: Control Center itself runs in it.
DEFAULT_RESTART_SERVICES = ("Cisco CallManager", "Cisco Tftp", TOMCAT)
NOT_ACTIVATED_CODE = "-1068"  # Control Center ReasonCode "Service Not Activated"
RESTARTED = "restarted"
NOT_ACTIVATED = "not-activated"
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
    webapp_timeout: float = 600.0  # after a Tomcat restart, until certmgr and SOAP answer
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


@dataclass(frozen=True)
class ServiceState:
    """One service as Control Center reports it on one node."""

    name: str
    status: str  # Started, Stopped, Starting, Stopping ...
    reason_code: str = ""
    reason: str = ""

    @property
    def activated(self) -> bool:
        return self.reason_code != NOT_ACTIVATED_CODE and "not activated" not in self.reason.lower()


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
        certs: list[x509.Certificate] = []
        for pem in trust_pems(reply.json()):
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
                    "certificates": [cert_pem(c) for c in missing],
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
        return {n: st.status for n, st in (await self.service_states(node, names)).items()}

    async def service_states(self, node: str, names: list[str]) -> dict[str, ServiceState]:
        """Status and reason of each named service on one node."""
        items = "".join(f"<soap:item>{escape(n)}</soap:item>" for n in names)
        reply = await self._soap(
            node,
            "soapGetServiceStatus",
            f"<soap:soapGetServiceStatus><soap:ServiceStatus>{items}</soap:ServiceStatus>"
            "</soap:soapGetServiceStatus>",
        )
        return read_service_states(reply.text)

    async def restart_service(self, node: str, service: str) -> str:
        """Restart ONE service on ONE node, after reading its state: returns RESTARTED, or
        NOT_ACTIVATED (skipped: the service is not activated on this node). Cisco Tomcat goes
        over SSH and is followed by `wait_for_webapps`; the others through Control Center,
        waiting until they read Started."""
        state = (await self.service_states(node, [service])).get(service)
        if state is not None and not state.activated:
            log.info("cucm.service_skipped", cluster=self.config.name, node=node, service=service)
            return NOT_ACTIVATED
        if service == TOMCAT:
            await self.restart_tomcat(node)
            await self.wait_for_webapps(node)
        else:
            await self._soap_restart(node, [service])
            await self.wait_for_services(node, [service])
        return RESTARTED

    async def restart_services(
        self, node: str, names: list[str], *, wait: bool = True
    ) -> dict[str, str]:
        """Restart services on one node, Cisco Tomcat last; returns what happened to each
        (RESTARTED or NOT_ACTIVATED). Services are read first; with `wait` each restarted
        service reads Started (Tomcat: its web applications answer) before the next."""
        ordered = [n for n in names if n != TOMCAT] + [n for n in names if n == TOMCAT]
        if wait:
            return {name: await self.restart_service(node, name) for name in ordered}
        states = await self.service_states(node, ordered)
        outcome = {
            n: NOT_ACTIVATED if n in states and not states[n].activated else RESTARTED
            for n in ordered
        }
        soap_names = [n for n in ordered if n != TOMCAT and outcome[n] == RESTARTED]
        if soap_names:
            await self._soap_restart(node, soap_names)
        if outcome.get(TOMCAT) == RESTARTED:
            await self.restart_tomcat(node)
        return outcome

    async def wait_for_webapps(self, node: str) -> None:
        """After a Tomcat restart: poll until the certificate API and Control Center answer
        (404/503 while their web applications deploy), within `webapp_timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.webapp_timeout
        checks = (
            (self.config.api_port, "GET", f"{TRUST_LIST_PATH}?service=tomcat", "certificate API"),
            (self.config.soap_port, "GET", SOAP_PATH + "?wsdl", "Control Center Services"),
        )
        for port, method, path, what in checks:
            last = "no answer"
            while True:
                try:
                    reply = await self._api(node, port).request(
                        method,
                        path,
                        step=f"wait for {what} after the Tomcat restart",
                        allow=(404, 500, 502, 503),
                        retries=0,
                    )
                    if reply.status < 300:
                        break
                    last = f"HTTP {reply.status}"
                except DeviceError as exc:
                    last = str(exc).rsplit(": ", 1)[-1][:120]
                if loop.time() > deadline:
                    raise self._error(
                        node,
                        "wait for web applications",
                        f"the {what} did not answer within {self.config.webapp_timeout:g}s "
                        f"after Cisco Tomcat restarted (last: {last}); look at the node's "
                        "Tomcat logs before going on with the next node",
                    )
                await asyncio.sleep(self.config.poll_interval)
        log.info("cucm.webapps_ready", cluster=self.config.name, node=node)

    async def _soap_restart(self, node: str, soap_names: list[str]) -> None:
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

    async def _soap(self, node: str, operation: str, body: str) -> DeviceReply:
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
            fault = read_fault_string(reply.text)
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


def trust_pems(body: Any) -> list[str]:
    """The PEM entries of a trust-store listing: a JSON list of PEM strings or of objects with
    `certificate`, bare or under `certificates`; any other shape lists nothing."""
    items = body.get("certificates", []) if isinstance(body, dict) else body
    pems = []
    for item in items if isinstance(items, list) else []:
        pem = item.get("certificate") if isinstance(item, dict) else item
        if isinstance(pem, str) and "-----BEGIN CERTIFICATE-----" in pem:
            pems.append(pem)
    return pems


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_service_states(text: str) -> dict[str, ServiceState]:
    root = _parse_xml(text)
    states: dict[str, ServiceState] = {}
    if root is None:
        return states
    for item in root.iter():
        if _local(item.tag) != "item":
            continue
        fields = {_local(child.tag): (child.text or "").strip() for child in item}
        if fields.get("ServiceName"):
            name = fields["ServiceName"]
            states[name] = ServiceState(
                name,
                fields.get("ServiceStatus", ""),
                fields.get("ReasonCode", ""),
                fields.get("ReasonCodeString", ""),
            )
    return states


def read_fault_string(text: str) -> str:
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
    if config.webapp_timeout <= 0:
        problems.append("webapp_timeout must be positive")
    if config.timeout <= 0 or config.retries < 0 or config.poll_interval <= 0:
        problems.append("timeout and poll_interval must be positive, retries not negative")
    if config.api_ca_file is not None and not Path(config.api_ca_file).is_file():
        problems.append(f"api_ca_file {config.api_ca_file} does not exist")
    if problems:
        raise ConfigError(f"{config.name}: Unified CM client: {'; '.join(problems)}")
