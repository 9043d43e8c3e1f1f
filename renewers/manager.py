"""Connects the monitor to the renewal pipeline: after each poll the renewal policy decides;
due renewals start; waiting ones resume when their time comes. Wired by expressway_certd/daemon.py.

Two kinds of renewal: the server certificate (decided after each poll) and, from X15.5, the
client certificate (decided on its own expiry after each client certificate read, and again
at every renewal check, since the box takes one renewal at a time: a client renewal that
became due while the server one ran starts when that one ends). A client renewal starts on
its own only when the CA for it (`client_ca`, default `ca`) is not ACME."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from cryptography.hazmat.primitives import hashes

from expressway_certd.monitor.backlog import Backlog, backlog
from expressway_certd.monitor.clientcert import STATUS_OK, ClientCertState
from expressway_certd.monitor.config import Config, ExpresswayConfig
from expressway_certd.monitor.errors import CertdError
from expressway_certd.monitor.events import EventBus, RenewalDue, ServedCertDiffers
from expressway_certd.monitor.facts import CertFacts, facts_from_x509
from expressway_certd.monitor.policy import Decision, Drift, PolicyInput, ServedCert, evaluate
from expressway_certd.monitor.probe import Prober
from expressway_certd.monitor.store import RenewalRow, Store
from expressway_certd.renewers.ca import build_connector
from expressway_certd.renewers.ca.base import CAConnector
from expressway_certd.renewers.pipeline import (
    CLIENT,
    SERVER,
    Devices,
    FaultSeam,
    Pipeline,
    StageObserver,
    kind_of,
    no_faults,
    record_of,
)

log = structlog.get_logger("renewers.manager")

ARI_REFRESH = timedelta(hours=12)
# The box's certificate is read through its API again after this long even when every
# endpoint serves the certificate of the last read.
BOX_REFRESH = timedelta(hours=1)


def stable_jitter(target: str, sha256: str) -> float:
    """A jitter in [0, 1) drawn once per (target, certificate): the same after a restart."""
    digest = hashlib.sha256(f"{target}\0{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class RenewalManager:
    """Owns the pipeline and the CA connectors of the targets that have `renewal` configured."""

    def __init__(
        self,
        config: Config,
        store: Store,
        bus: EventBus,
        prober: Prober,
        *,
        devices: Devices | None = None,
        connectors: Mapping[str, CAConnector] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        observe: StageObserver | None = None,
        fault_seam: FaultSeam = no_faults,
        owns: Callable[[str], bool] = lambda target: True,
    ) -> None:
        self.config = config
        # A replica checks and runs renewals only for the targets it owns (monitor/replicas.py);
        # operator commands go through the pipeline and work for any target.
        self.owns = owns
        self.bus = bus
        self.clock = clock
        used = {
            e.renewal.ca_for(kind)
            for e in config.expressways
            if e.renewal is not None
            for kind in (SERVER, CLIENT)
        }
        self.connectors: dict[str, CAConnector] = dict(connectors or {})
        for name in sorted(used - set(self.connectors)):
            self.connectors[name] = build_connector(
                config.cas[name], config.daemon.data_dir, events=bus.publish
            )
        self.pipeline = Pipeline(
            config, store, bus, prober, self.connectors, devices=devices, clock=clock,
            observe=observe, fault_seam=fault_seam,
        )  # fmt: skip
        self.store = store
        self.next_due: dict[str, datetime | None] = {}
        self.last_success: dict[str, datetime] = {}
        self._ari: dict[str, tuple[datetime, tuple[datetime, datetime] | None]] = {}
        self._box: dict[str, tuple[datetime, CertFacts]] = {}  # target -> (read at, cert)
        self._client: dict[str, CertFacts] = {}  # target -> its client certificate, last read
        # target -> the poll whose server decision waits for the box's client renewal to end
        self._deferred: dict[str, tuple[ExpresswayConfig, tuple[ServedCert, ...]]] = {}
        self.next_due_client: dict[str, datetime | None] = {}
        self.drift: dict[tuple[str, str], Drift] = {}  # (target, endpoint) -> what differs
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: dict[str, int] = {}  # renewal id -> runs of it in flight (tasks)
        # A renewal waiting for a CA order slot runs as soon as an order of ours completes.
        self.pipeline.wake_with(self.spawn)
        self.backlog: dict[str, Backlog] = {}  # CA -> its backlog, at the latest renewal check

    @property
    def enabled(self) -> bool:
        return any(e.renewal is not None for e in self.config.expressways)

    async def load(self) -> None:
        await self.pipeline.load()
        for row in reversed(await self.store.renewals_for(limit=10_000)):
            if row.status == "done":
                self.last_success[row.target] = row.updated_at
        await self.refresh_backlog()  # exported from the start, not from the first check

    def latest(self) -> Mapping[str, RenewalRow]:
        return self.pipeline.latest

    async def after_poll(self, exp: ExpresswayConfig, served: Sequence[ServedCert]) -> None:
        """Apply the renewal policy to the target's current certificate; start a renewal when
        due. The current certificate is what the box reports through its API; a served
        certificate only stands in for it when its chain verifies and it is the one the box
        reported. One that differs is drift (a ServedCertDiffers event), never a trigger."""
        if exp.renewal is None or not served or not self.owns(exp.name):
            return  # not ours (any more): its owner decides
        latest = self.pipeline.latest.get(exp.name)
        if latest is not None and latest.active:
            self.next_due[exp.name] = latest.next_at
            if kind_of(latest) != SERVER:
                # the box's client renewal runs: decide on the server certificate when it ends
                self._deferred[exp.name] = (exp, tuple(served))
            return
        self._deferred.pop(exp.name, None)
        found = await self._current(exp, served, fresh=False)
        if found is None:
            return
        decision = await self._decide(exp, found[0])
        if decision.due and not found[1]:
            # Start a renewal on a fresh read from the box, never on a cached one alone.
            found = await self._current(exp, served, fresh=True)
            if found is None:
                return
            decision = await self._decide(exp, found[0])
        self.next_due[exp.name] = decision.renew_at
        if not decision.due:
            return
        client = self._client.get(exp.name)
        # Both may be due: the certificate that expires first goes first.
        first = client is not None and client.not_after < found[0].not_after
        if first and await self.consider_client(exp) is not None:
            self._deferred[exp.name] = (exp, tuple(served))
            return
        row = await self.pipeline.start(exp.name, f"{decision.reason}: {decision.message}")
        if kind_of(row) != SERVER:
            self._deferred[exp.name] = (exp, tuple(served))
            return  # a client renewal of the box is running: the server one waits for it
        await self.bus.publish(
            RenewalDue(
                target=exp.name,
                time=self.clock(),
                renewal_id=row.id,
                reason=str(decision.reason),
                message=decision.message,
            )
        )
        self.spawn(row.id)

    async def _installed(self, target: str, kind: str) -> str | None:
        """What this tool installed last in the box's `kind` store (its latest renewal of
        that kind), if anything."""
        latest = self.pipeline.latest.get(target)
        if latest is not None and kind_of(latest) == kind:
            return record_of(latest).installed_sha256
        for row in await self.store.renewals_for(target, limit=50):
            if kind_of(row) == kind:
                return record_of(row).installed_sha256
        return None

    async def _decide(
        self, exp: ExpresswayConfig, current: CertFacts, kind: str = SERVER
    ) -> Decision:
        assert exp.renewal is not None
        # What this tool installed last: if the box reports something else now, someone
        # replaced it (or rolled it back): the policy treats that as a reason to renew.
        installed = await self._installed(exp.name, kind)
        return evaluate(
            PolicyInput(
                now=self.clock(),
                served=current,
                installed_sha256=installed,
                renew_before=exp.renewal.renew_before,
                ari_window=await self._ari_window(exp, current) if kind == SERVER else None,
                jitter=stable_jitter(
                    f"{exp.name}\0{kind}" if kind != SERVER else exp.name, current.sha256
                ),
            )
        )

    def renews_client_on_its_own(self, exp: ExpresswayConfig) -> bool:
        """Does the daemon start client renewals of `exp` by itself? Only with a CA that can
        issue clientAuth: not ACME (public ACME CAs no longer do)."""
        if exp.renewal is None:
            return False
        return self.config.cas[exp.renewal.ca_for(CLIENT)].kind != "acme"

    async def after_client_read(self, exp: ExpresswayConfig, state: ClientCertState) -> None:
        """Remember a read of the X15.5 client certificate and apply the policy to it."""
        if state.status == STATUS_OK and state.facts is not None:
            self._client[exp.name] = state.facts
        else:
            self._client.pop(exp.name, None)  # no store, no resource: nothing to decide on
        await self.consider_client(exp)

    async def consider_client(
        self, exp: ExpresswayConfig, *, explicit: bool = False
    ) -> RenewalRow | None:
        """Start a client certificate renewal when its own expiry makes it due (checked on a
        fresh read from the box before starting) and no renewal of the box is active.
        `explicit`: an operator asked (`renew --kind client`), so the CA kind is not checked
        here (preflight refuses an ACME CA with the reason)."""
        if exp.renewal is None or not self.owns(exp.name):
            return None
        if not explicit and not self.renews_client_on_its_own(exp):
            return None
        latest = self.pipeline.latest.get(exp.name)
        if latest is not None and latest.active:
            return None  # one renewal per box at a time (one CSR slot)
        known = self._client.get(exp.name)
        if known is None:
            return None
        decision = await self._decide(exp, known, CLIENT)
        if decision.due:
            # Start on a fresh read from the box, never on a remembered one alone.
            try:
                async with self.pipeline.devices.expressway(exp) as box:
                    known = facts_from_x509(await box.client_certificate())
            except CertdError as exc:
                log.warning(
                    "cannot read the box's client certificate; no client renewal decision",
                    target=exp.name,
                    error=str(exc),
                )
                return None
            self._client[exp.name] = known
            decision = await self._decide(exp, known, CLIENT)
        self.next_due_client[exp.name] = decision.renew_at
        if not decision.due:
            return None
        row = await self.pipeline.start(
            exp.name, f"{decision.reason}: client certificate: {decision.message}", kind=CLIENT
        )
        if kind_of(row) != CLIENT:
            return None  # a server renewal started meanwhile: this one waits for it
        await self.bus.publish(
            RenewalDue(
                target=exp.name,
                time=self.clock(),
                renewal_id=row.id,
                reason=str(decision.reason),
                message=f"client certificate: {decision.message}",
            )
        )
        self.spawn(row.id)
        return row

    async def _current(
        self, exp: ExpresswayConfig, served: Sequence[ServedCert], *, fresh: bool
    ) -> tuple[CertFacts, bool] | None:
        """The box's certificate and whether it was read just now (through its API when served
        ones disagree with the last read, when that read is old, or when `fresh`); drift is
        reported on the way. None when the box cannot be read: then nothing is decided."""
        read_at, known = self._box.get(exp.name, (None, None))
        stale = (
            fresh
            or read_at is None
            or known is None
            or self.clock() - read_at >= BOX_REFRESH
            or any(s.facts.sha256 != known.sha256 for s in served)
        )
        if stale:
            try:
                async with self.pipeline.devices.expressway(exp) as box:
                    known = facts_from_x509(await box.server_certificate())
                self._box[exp.name] = (self.clock(), known)
            except CertdError as exc:
                log.warning(
                    "cannot read the box's certificate through its API; no renewal decision",
                    target=exp.name,
                    error=str(exc),
                )
                return None
        assert known is not None
        await self._report_drift(exp, served, known)
        return known, stale

    async def _report_drift(
        self, exp: ExpresswayConfig, served: Sequence[ServedCert], box: CertFacts
    ) -> None:
        """One ServedCertDiffers per (endpoint, served, installed) while it lasts."""
        for s in served:
            key = (exp.name, s.endpoint)
            if s.facts.sha256 == box.sha256:
                self.drift.pop(key, None)
                continue
            seen = self.drift.get(key)
            self.drift[key] = Drift(s.facts.sha256, box.sha256, s.verified)
            if seen == self.drift[key]:
                continue
            event = ServedCertDiffers(
                target=exp.name,
                time=self.clock(),
                endpoint=s.endpoint,
                service=s.service,
                served_sha256=s.facts.sha256,
                installed_sha256=box.sha256,
                served_verified=s.verified,
                served_issuer=s.facts.issuer,
                served_not_after=s.facts.not_after.isoformat(),
            )
            log.warning(event.type, target=exp.name, summary=event.summary())
            await self.bus.publish(event)
        current = {s.endpoint for s in served}
        for key in [k for k in self.drift if k[0] == exp.name and k[1] not in current]:
            del self.drift[key]

    async def _ari_window(
        self, exp: ExpresswayConfig, current: CertFacts
    ) -> tuple[datetime, datetime] | None:
        assert exp.renewal is not None
        connector = self.connectors[exp.renewal.ca]
        cached = self._ari.get(current.sha256)
        if cached is not None and self.clock() - cached[0] < ARI_REFRESH:
            return cached[1]
        window: tuple[datetime, datetime] | None = None
        state = self.pipeline.latest.get(exp.name)
        issued = record_of(state).issued if state else None
        leaf = issued.leaf() if issued is not None else None
        # ARI identifies the certificate by its issuer's key and serial: only ask about the
        # certificate this tool obtained, and only while it is the one served.
        if leaf is not None and leaf.fingerprint(hashes.SHA256()).hex() == current.sha256:
            try:
                found = await connector.renewal_window(leaf)
            except CertdError as exc:
                log.warning("ARI lookup failed", target=exp.name, error=str(exc))
                found = None
            if found is not None:
                window = (found.start, found.end)
        self._ari[current.sha256] = (self.clock(), window)
        return window

    def spawn(self, renewal_id: str) -> None:
        """Run the renewal in its own task (until it waits, blocks, fails or is done)."""
        self._running[renewal_id] = self._running.get(renewal_id, 0) + 1
        task = asyncio.create_task(self._run(renewal_id), name=f"renewal {renewal_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, renewal_id: str) -> None:
        try:
            row = await self.pipeline.run(renewal_id)
        except CertdError as exc:
            log.error("renewal run failed", renewal=renewal_id, error=str(exc))
            return
        except Exception:  # one renewal's crash never stops the others
            log.exception("renewal run failed", renewal=renewal_id)
            return
        finally:
            left = self._running.pop(renewal_id) - 1
            if left:
                self._running[renewal_id] = left
        if row.status == "done":
            self.last_success[row.target] = row.updated_at

    async def run_due(self) -> None:
        """Resume the due renewals of the targets this process owns, each in its own task (a
        slow stage of one, a restart for instance, holds up no other; `drain` waits for
        them); then start the renewals that became due while a renewal of the other kind ran
        on their box (client certificates, and server certificates whose poll came during a
        client renewal)."""
        for row in await self.pipeline.due(self.owns):
            if row.id not in self._running:  # one already running resumes it itself
                self.spawn(row.id)
        for exp in self.config.expressways:
            if exp.name in self._client:
                await self.consider_client(exp)
        targets = {e.name: e for e in self.config.expressways}
        for name, (_, served) in list(self._deferred.items()):
            latest = self.pipeline.latest.get(name)
            if latest is None or not latest.active:
                del self._deferred[name]
                if name in targets:  # (a reload may have removed it)
                    await self.after_poll(targets[name], served)
        await self.refresh_backlog()
        for target, row in self.pipeline.latest.items():
            if row.status == "done":
                self.last_success[target] = max(
                    self.last_success.get(target, row.updated_at), row.updated_at
                )

    async def refresh_backlog(self) -> None:
        """The backlog of every CA in use, from the store (the whole fleet, every replica's)."""
        ca_of = {e.name: e.renewal.ca for e in self.config.expressways if e.renewal is not None}
        per_hour = {ca: self.config.cas[ca].limits.orders_per_hour for ca in set(ca_of.values())}
        active = await self.store.renewals_for(active_only=True, limit=100_000)
        endpoints = await self.store.load_endpoints()
        self.backlog = backlog(active, ca_of, per_hour, endpoints, self.clock())

    async def drain(self) -> None:
        """Wait until the renewal runs spawned so far have returned (waiting, done, ...)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for connector in self.connectors.values():
            await connector.aclose()
