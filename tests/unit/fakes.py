"""Fakes shared by the unit tests of the pipeline and the renewal manager.

Each fake has the methods of the real client that the code under test calls, with the
behaviour the real one documents (renewers/expressway.py, renewers/cucm.py, renewers/ca/base.py,
monitor/probe.py), and records what was asked of it so a test can say what happened."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from expressway_certd.monitor.endpoint import Endpoint
from expressway_certd.monitor.errors import DeviceError
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.monitor.probe import Observation, TrustStore
from expressway_certd.renewers.ca.base import CACapabilities, Issued, Pending
from expressway_certd.renewers.cucm import NOT_ACTIVATED, RESTARTED
from expressway_certd.renewers.expressway import SystemInfo, ZoneState


class FakeDevices:
    """Devices with one fake Expressway for every target (`box`, or the one `boxes` names for
    a target) and Unified CM `ucm`, or none (the code under test must not reach one: `no_ucm`
    says why). `opened` lists the targets whose client was opened, in order."""

    def __init__(
        self,
        box: Any,
        no_ucm: str = "not used",
        *,
        boxes: Mapping[str, Any] | None = None,
        ucm: Any = None,
    ) -> None:
        self.box = box
        self.no_ucm = no_ucm
        self.boxes = dict(boxes or {})
        self.ucm = ucm
        self.opened: list[str] = []

    @asynccontextmanager
    async def expressway(self, target: Any) -> AsyncIterator[Any]:
        self.opened.append(target.name)
        box = self.boxes.get(target.name, self.box)
        if isinstance(box, Exception):
            raise box
        yield box

    @asynccontextmanager
    async def unified_cm(self, ucm: Any) -> AsyncIterator[Any]:
        if self.ucm is None:
            raise AssertionError(self.no_ucm)
        self.opened.append(ucm.name)
        yield self.ucm


class FakeExpressway:
    """An Expressway as the pipeline's stages read and change it (ExpresswayClient's methods).

    `trusted` is its trusted CA list: `add_trusted_cas` adds what is missing and returns it,
    as the real client does (it never removes a CA). `restart` counts restarts and calls
    `on_restart` (a test makes the endpoints serve the new certificate there). `fail` maps a
    method name to the exception it raises."""

    def __init__(
        self,
        name: str = "e1",
        *,
        version: str = "X15.4",
        role: str | None = "c",
        cert: x509.Certificate | None = None,
        zones: Sequence[ZoneState] = (),
        acme_scheduler: bool | None = False,
        server_eku_upload: bool | None = None,
        trusted: Iterable[x509.Certificate] = (),
        on_restart: Callable[[], None] | None = None,
        fail: Mapping[str, Exception] | None = None,
    ) -> None:
        self.info = SystemInfo(name=name, version=version, role=role)
        self.cert = cert
        self.restart_evidence: Any = None
        self.zone_states = list(zones)
        self.acme = acme_scheduler
        self.eku_upload = server_eku_upload
        self.trusted = list(trusted)
        self.on_restart = on_restart
        self.fail = dict(fail or {})
        self.calls: list[str] = []
        self.restarts = 0

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    async def system_info(self) -> SystemInfo:
        self._call("system_info")
        return self.info

    async def server_certificate(self) -> x509.Certificate | None:
        self._call("server_certificate")
        return self.cert

    async def zones(self) -> list[ZoneState]:
        self._call("zones")
        return list(self.zone_states)

    async def acme_scheduler(self, role: str | None = None) -> bool | None:
        self._call("acme_scheduler")
        return self.acme

    async def server_eku_upload_if_relevant(self, role: str | None) -> bool | None:
        self._call("server_eku_upload_if_relevant")
        return self.eku_upload

    async def trusted_cas(self) -> list[x509.Certificate]:
        self._call("trusted_cas")
        return list(self.trusted)

    async def add_trusted_cas(self, certs: list[x509.Certificate]) -> list[x509.Certificate]:
        self._call("add_trusted_cas")
        missing = [c for c in certs if c not in self.trusted]
        self.trusted += missing
        return missing

    async def restart(self, *, wait: bool = True, restarted: Any = None) -> str:
        self._call("restart")
        self.restarts += 1
        self.restart_evidence = restarted  # what the caller takes as proof of the restart
        if self.on_restart is not None:
            self.on_restart()
        return "api"


class FakeUnifiedCM:
    """A Unified CM cluster as the trust and ucm-restart stages use it (CucmClient's methods):
    trust stores per (node, store); services restarted one at a time, in the order asked
    (`restarts`); a service in `not_activated` is skipped (NOT_ACTIVATED) as the real client
    reports it; `fail_at` (node, service) raises DeviceError the first time it is asked."""

    def __init__(
        self,
        *,
        not_activated: Iterable[tuple[str, str]] = (),
        fail_at: tuple[str, str] | None = None,
    ) -> None:
        self.stores: dict[tuple[str, str], list[x509.Certificate]] = {}
        self.not_activated = set(not_activated)
        self.fail_at = fail_at
        self.restarts: list[tuple[str, str]] = []

    async def trusted(self, node: str, store: str) -> list[x509.Certificate]:
        return list(self.stores.get((node, store), []))

    async def add_trust(
        self,
        node: str,
        certs: list[x509.Certificate],
        *,
        stores: tuple[str, ...] | None = None,
        description: str = "",
    ) -> dict[str, list[x509.Certificate]]:
        added: dict[str, list[x509.Certificate]] = {}
        for store in stores or ("tomcat", "callmanager"):
            present = self.stores.setdefault((node, store), [])
            missing = [c for c in certs if c not in present]
            present += missing
            if missing:
                added[store] = missing
        return added

    async def restart_service(self, node: str, service: str) -> str:
        if self.fail_at == (node, service):
            self.fail_at = None
            raise DeviceError(f"{node}: restart {service}: Control Center answered 500")
        if (node, service) in self.not_activated:
            return NOT_ACTIVATED
        self.restarts.append((node, service))
        return RESTARTED


class FakeProber:
    """The monitor's prober as the restart and verify stages use it: `serving` maps an
    endpoint's host to the certificate it serves (absent: connection refused); `trust` holds
    the daemon's trust anchors."""

    def __init__(
        self,
        serving: Mapping[str, x509.Certificate] | None = None,
        trust: TrustStore | None = None,
    ) -> None:
        self.serving = dict(serving or {})
        self.trust = trust or TrustStore([])
        self.probed: list[str] = []

    async def probe(self, target: str, endpoint: Endpoint, **_: Any) -> Observation:
        self.probed.append(endpoint.host)
        now = datetime.now(UTC)
        cert = self.serving.get(endpoint.host)
        if cert is None:
            return Observation(target, endpoint, now, ok=False, error_class="refused")
        return Observation(target, endpoint, now, ok=True, facts=facts_from_x509(cert))


class FakeCA:
    """A CA connector whose `poll` answers from `answers` in turn (Issued or Pending) and
    whose `ca_chain` is `chain`; `polled` lists the handles it was asked about."""

    name = "portal"
    kind = "manual"

    def __init__(
        self,
        answers: Sequence[Issued | Pending] = (),
        chain: Sequence[x509.Certificate] = (),
        ekus: frozenset[str] | None = None,
    ) -> None:
        self.answers = list(answers)
        self.chain = tuple(chain)
        self.ekus = ekus
        self.polled: list[dict[str, Any]] = []
        self.submitted: list[x509.CertificateSigningRequest] = []

    async def submit(self, csr: x509.CertificateSigningRequest) -> Issued | Pending:
        self.submitted.append(csr)
        return self.answers.pop(0)

    async def poll(self, handle: Mapping[str, Any]) -> Issued | Pending:
        self.polled.append(dict(handle))
        return self.answers.pop(0)

    async def ca_chain(self) -> tuple[x509.Certificate, ...]:
        return self.chain

    def capabilities(self) -> CACapabilities:
        return CACapabilities(kind=self.kind, ekus=self.ekus)
