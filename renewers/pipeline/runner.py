"""The runner: starts, runs and resumes renewals one stage at a time, persisting each outcome
before anything else happens, and the operator commands (approve, provide, cancel, retry)
that write a renewal while holding it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expressway_certd.monitor.config import Config
from expressway_certd.monitor.errors import CertdError
from expressway_certd.monitor.events import (
    EventBus,
    RenewalCancelled,
    RenewalCompleted,
    StageStarted,
)
from expressway_certd.monitor.probe import Prober
from expressway_certd.monitor.store import RenewalRow, StepRow, Store
from expressway_certd.renewers.ca.base import CAConnector, dropped_from
from expressway_certd.renewers.calimit import ORDER_STAGES, OrderLimiter
from expressway_certd.renewers.pipeline.commands import accepts_certificate
from expressway_certd.renewers.pipeline.context import (
    ConfiguredDevices,
    Context,
    Devices,
    FaultSeam,
    expected,
    no_faults,
    outcome_of_error,
    sha256_of,
)
from expressway_certd.renewers.pipeline.locks import (
    BUSY_WAIT,
    holding,
    keep_alive,
    new_owner,
)
from expressway_certd.renewers.pipeline.outcomes import (
    STAGES,
    Blocked,
    Failed,
    Wait,
    stage_event,
    transition,
)
from expressway_certd.renewers.pipeline.record import (
    SERVER,
    RenewalRecord,
    check_kind,
    kind_of,
    record_of,
)
from expressway_certd.renewers.pipeline.stages import STAGE_FUNCTIONS
from expressway_certd.renewers.pipeline.stages.submit import issued_cert

log = structlog.get_logger("renewers.pipeline")


StageObserver = Callable[[str, str, str, float], None]  # target, stage, result, seconds


class Pipeline:
    """Starts, runs and resumes renewals; one at a time per target."""

    def __init__(
        self,
        config: Config,
        store: Store,
        bus: EventBus,
        prober: Prober,
        connectors: Mapping[str, CAConnector],
        *,
        devices: Devices | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        observe: StageObserver | None = None,
        stop_after: Callable[[str], bool] | None = None,
        fault_seam: FaultSeam = no_faults,
    ) -> None:
        self.config = config
        self.store = store
        self.limiter = OrderLimiter(store)  # per-CA limits, counted in the store
        self.bus = bus
        self.prober = prober
        self.connectors = connectors
        self.devices: Devices = devices or ConfiguredDevices()
        self.clock = clock
        self.observe = observe
        self._stop_after = stop_after
        # Named fault-injection points (renewers/pipeline/context.py FaultSeam): crash tests
        # pass one in; production leaves the default, which does nothing.
        self.fault_seam = fault_seam
        self._locks: dict[str, asyncio.Lock] = {}
        self._cluster_locks: dict[str, asyncio.Lock] = {}
        # Renewals woken because a slot at their CA may have freed (renewers/calimit.py):
        # their wait for a slot ends now, not at its re-check.
        self._woken: set[str] = set()
        self._spawn: Callable[[str], None] | None = None
        self.latest: dict[str, RenewalRow] = {}
        # Leases make the database the arbiter when several processes (CLI, daemon, HA peers)
        # could run the same renewal: only the holder runs stages.
        self.owner = new_owner()

    async def load(self) -> None:
        for row in reversed(await self.store.renewals_for(limit=10_000)):
            self.latest[row.target] = row

    def wake_with(self, spawn: Callable[[str], None]) -> None:
        """Run renewals waiting for a CA order slot as soon as an order of this process
        completes, through `spawn` (which runs `run(renewal_id)` as a task): the daemon's
        RenewalManager wires this; without it they ask again at their re-check."""
        self._spawn = spawn
        self.limiter.on_wake = self._wake

    def _wake(self, renewal_id: str) -> None:
        self._woken.add(renewal_id)
        if self._spawn is not None:
            self._spawn(renewal_id)

    def _due(self, row: RenewalRow) -> bool:
        """Whether `row` may run now: its time has come, or it waits for a CA order slot and
        was woken because one may have freed."""
        if row.next_at is None or row.next_at <= self.clock():
            return True
        return row.id in self._woken and row.stage == "submit" and row.status == "waiting"

    async def start(self, target: str, reason: str, kind: str = SERVER) -> RenewalRow:
        """Create a renewal of `kind` ("server", or "client": the X15.5 client certificate) for
        `target` unless one is active (then that one is returned, whatever its kind: one
        renewal per box at a time, since the box has one CSR slot; `kind_of` tells)."""
        check_kind(kind)
        exp = self.config.target(target)
        if exp.renewal is None:
            raise CertdError(
                f"{target}: renewal is not configured; add an [expressway.renewal] table with ca = ..."
            )
        now = self.clock()
        row = RenewalRow(
            id=now.strftime("%Y%m%d") + "-" + secrets.token_hex(4),
            target=target,
            status="running",
            stage=STAGES[0],
            reason=reason,
            created_at=now,
            updated_at=now,
            next_at=None,
            attempts=0,
            message="",
            data=RenewalRecord(kind=kind).to_data(),
        )
        stored = await self.store.create_renewal(row)
        self.latest[target] = stored
        if stored.id == row.id:
            log.info("renewal started", target=target, renewal=row.id, reason=reason, kind=kind)
            self.fault_seam(target, "start")
        return stored

    @contextlib.asynccontextmanager
    async def _hold(self, renewal_id: str) -> AsyncIterator[RenewalRow]:
        """Hold a renewal for an operator command: this process's run of it and the lease in
        the database (taken over from a dead same-host holder), then read it afresh, so the
        command never writes from a stale row nor while a stage runs."""
        row = await self._get(renewal_id)
        lock = self._locks.setdefault(row.target, asyncio.Lock())
        try:
            # This process's run of the renewal lets go between stages and when it waits.
            await asyncio.wait_for(lock.acquire(), BUSY_WAIT.total_seconds())
        except TimeoutError:
            raise CertdError(
                f"renewal {renewal_id}: busy: a stage is running in this process; try again "
                "in a moment"
            ) from None
        try:
            async with holding(self.store, renewal_id, self.owner, self.clock) as hold:
                if not await hold.claim():
                    holder = await self.store.renewal_lease_owner(renewal_id)
                    raise CertdError(
                        f"renewal {renewal_id}: busy: a stage is running in another process "
                        f"({holder or 'its lease is being handed over'}); try again in a moment"
                    )
                yield await self._get(renewal_id)
        finally:
            lock.release()

    async def approve(self, renewal_id: str, who: str) -> RenewalRow:
        async with self._hold(renewal_id) as held:
            row = held  # as it is now that this process holds it
            if row.stage != "approve" or row.status != "waiting":
                raise CertdError(
                    f"renewal {renewal_id}: not awaiting approval (stage {row.stage}, {row.status})"
                )
            record = dataclasses.replace(record_of(row), approved_by=who)
            row = dataclasses.replace(
                row, data=record.to_data(), next_at=self.clock(), updated_at=self.clock()
            )
            await self.store.save_renewal(row, owner=self.owner)
        self.latest[row.target] = row
        return row

    async def provide(
        self, renewal_id: str, leaf: x509.Certificate, chain: list[x509.Certificate]
    ) -> RenewalRow:
        """An operator hands in the certificate for the renewal's CSR (manual CAs, any CA
        whose request was completed by hand, or in place of one validate refused).
        Validation still runs before anything else."""
        async with self._hold(renewal_id) as held:
            row = held  # as it is now that this process holds it
            if not accepts_certificate(row):
                raise CertdError(
                    f"renewal {renewal_id}: not waiting for a certificate (stage {row.stage}, "
                    f"{row.status}); a certificate can be handed in while the renewal waits at "
                    "submit or issued, or after validate refused one; to start over run "
                    f"'expressway-certd cancel {renewal_id}', then 'expressway-certd renew "
                    f"{row.target} --now'"
                )
            record = record_of(row)
            csr_pem = record.csr_pem
            if not csr_pem:
                raise CertdError(f"renewal {renewal_id}: no CSR yet")
            csr = x509.load_pem_x509_csr(csr_pem.encode())
            spki = serialization.PublicFormat.SubjectPublicKeyInfo
            if leaf.public_key().public_bytes(
                serialization.Encoding.DER, spki
            ) != csr.public_key().public_bytes(serialization.Encoding.DER, spki):
                raise CertdError(
                    f"renewal {renewal_id}: the certificate is not for this renewal's CSR (public keys "
                    f"differ); sign the CSR shown by 'expressway-certd status {row.target}'"
                )
            # Compared with the CSR as every CA connector compares its answer (dropped_from):
            # what is missing is named here; validate refuses it next.
            dropped = dropped_from(csr, leaf)
            note = f"; it lacks what the CSR asked for: {dropped.describe()}" if dropped else ""
            if dropped:
                log.warning(
                    "ca.dropped", renewal=renewal_id, target=row.target, step="provide",
                    serial=f"{leaf.serial_number:x}", dropped=dropped.describe(),
                )  # fmt: skip
            record = dataclasses.replace(
                record, issued=issued_cert(leaf, chain, "provided"),
                # what the CA said and what validate found no longer apply
                retry_at=None, trust_cas=None, ca_changed=None, handle=None, pending_reason=None,
            )  # fmt: skip
            row = dataclasses.replace(
                row, stage="issued", status="running", next_at=None, data=record.to_data(),
                updated_at=self.clock(), attempts=0,
            )  # fmt: skip
            await self.store.save_renewal(
                row, StepRow(row.id, "issued", "provided", self.clock(), 0.0,
                             f"certificate {sha256_of(leaf)[:16]} handed in by an operator{note}"),
                owner=self.owner,
            )  # fmt: skip
        self.latest[row.target] = row
        return row

    async def cancel(self, renewal_id: str, who: str) -> RenewalRow:
        """An operator ends an active renewal in any state; `renew --now` then starts afresh.
        What was done on the boxes stays as it is (a pending CSR, trust already added, an
        uploaded certificate waiting for its restart): docs/renewal.md says what to check."""
        async with self._hold(renewal_id) as held:
            row = held  # as it is now that this process holds it
            if not row.active:
                raise CertdError(
                    f"renewal {renewal_id}: already {row.status}; nothing to cancel "
                    f"(start a new one with 'expressway-certd renew {row.target} --now')"
                )
            now = self.clock()
            message = f"cancelled by {who} at stage {row.stage} ({row.status})"
            row = dataclasses.replace(
                row, status="cancelled", next_at=None, message=message, updated_at=now
            )
            await self.store.save_renewal(
                row, StepRow(row.id, row.stage, "cancelled", now, 0.0, message), owner=self.owner
            )
        # its CA order, if open, no longer holds a slot: close it (a waiter may take it now)
        await self.limiter.release(row.id, now)
        self.latest[row.target] = row
        log.warning("renewal cancelled", target=row.target, renewal=row.id, by=who)
        await self.bus.publish(
            RenewalCancelled(
                target=row.target, time=now, renewal_id=row.id, stage=row.stage, by=who
            )
        )
        return row

    async def retry_now(self, renewal_id: str) -> RenewalRow:
        """Operator says the cause of a blocked/failed stage is fixed: run that stage again."""
        async with self._hold(renewal_id) as held:
            row = held  # as it is now that this process holds it
            if not row.active:
                raise CertdError(f"renewal {renewal_id}: already {row.status}")
            row = dataclasses.replace(row, status="running", next_at=None, updated_at=self.clock())
            await self.store.save_renewal(row, owner=self.owner)
        self.latest[row.target] = row
        return row

    async def _get(self, renewal_id: str) -> RenewalRow:
        row = await self.store.renewal(renewal_id)
        if row is None:
            raise CertdError(
                f"renewal {renewal_id}: no such renewal (see 'expressway-certd status')"
            )
        return row

    async def run(self, renewal_id: str) -> RenewalRow:
        """Run stages until the renewal waits, blocks, fails or is done."""
        try:
            return await self._run(renewal_id)
        finally:
            self._woken.discard(renewal_id)
            # woken but never asked for its slot (cancelled, run elsewhere): wake the next
            self.limiter.settle(renewal_id)

    async def _run(self, renewal_id: str) -> RenewalRow:
        row = await self._get(renewal_id)
        lock = self._locks.setdefault(row.target, asyncio.Lock())
        async with lock, holding(self.store, renewal_id, self.owner, self.clock) as hold:
            while True:
                row = await self._get(renewal_id)
                self.latest[row.target] = row
                if not row.active or row.status == "blocked":
                    return row
                if not self._due(row):
                    return row
                if not await hold.claim():
                    log.info("renewal run by another process", renewal=renewal_id)
                    return row
                # Read again now that nobody else may write it: an operator command or
                # another process may have changed it since the read above.
                row = await self._get(renewal_id)
                self.latest[row.target] = row
                if not row.active or row.status == "blocked":
                    return row
                if not self._due(row):
                    return row
                self._woken.discard(renewal_id)  # the wake is used by this step
                async with keep_alive(hold.extend):
                    row = await self._step(row)
                if self._stop_after is not None and self._stop_after(row.stage):
                    return row

    async def run_due(self, owns: Callable[[str], bool] | None = None) -> None:
        """Resume every active renewal whose time has come, one after the other (the CLI and
        tests; the daemon's RenewalManager runs `due()` concurrently); with `owns`, only those
        of the targets it accepts (a replica runs its own targets')."""
        for row in await self.due(owns):
            try:
                await self.run(row.id)
            except CertdError as exc:
                log.error("renewal run failed", renewal=row.id, error=str(exc))
            except Exception:  # never let one renewal stop the others this tick
                log.exception("renewal run failed", renewal=row.id)

    async def due(self, owns: Callable[[str], bool] | None = None) -> list[RenewalRow]:
        """The active renewals whose time has come and that this process is not running now
        (with `owns`, of the targets it accepts), as the store lists them (newest first);
        refreshes `latest` on the way."""
        active = await self.store.renewals_for(active_only=True, limit=10_000)
        # A renewal another process finished (CLI `renew`, an HA peer) is no longer active:
        # refresh what this process believes, so metrics and the policy see it.
        active_ids = {r.id for r in active}
        for target, cached in list(self.latest.items()):
            if cached.active and cached.id not in active_ids:
                fresh = await self.store.renewal(cached.id)
                if fresh is not None:
                    self.latest[target] = fresh
        due: list[RenewalRow] = []
        for row in active:
            self.latest[row.target] = row
            if row.status == "blocked" or (owns is not None and not owns(row.target)):
                continue
            lock = self._locks.get(row.target)
            if lock is not None and lock.locked():
                continue  # being run right now
            if row.next_at is None or row.next_at <= self.clock():
                due.append(row)
        return due

    async def _checkpoint(self, row: RenewalRow, ctx: Context) -> None:
        """Persist a stage's progress in its record without ending the stage (same status
        and stage), only while this process holds the renewal's lease."""
        await self.store.save_renewal(
            dataclasses.replace(row, data=ctx.record.to_data(), updated_at=self.clock()),
            owner=self.owner,
        )

    async def _order_slot(self, row: RenewalRow, ca_name: str) -> Wait | None:
        """Before a renewal first submits to its CA: a slot under the CA's limits
        (renewers/calimit.py), or a Wait until one may free."""
        if row.stage != "submit":
            return None
        limits = self.config.cas[ca_name].limits
        verdict = await self.limiter.take(ca_name, limits, row.id, self.clock())
        if verdict.granted:
            return None
        assert verdict.retry_at is not None
        return Wait(verdict.retry_at, verdict.reason)

    async def _step(self, row: RenewalRow) -> RenewalRow:
        exp = self.config.target(row.target)
        assert exp.renewal is not None
        ca_name = exp.renewal.ca_for(kind_of(row))
        ctx = Context(
            renewal_id=row.id,
            target=exp,
            config=self.config,
            devices=self.devices,
            ca=self.connectors[ca_name],
            ca_name=ca_name,
            prober=self.prober,
            now=self.clock,
            record=RenewalRecord(),
            attempts=row.attempts,
            cluster_locks=self._cluster_locks,
            store=self.store,
            owner=self.owner,
            checkpoint=lambda: self._checkpoint(row, ctx),
            fault_seam=self.fault_seam,
        )
        stage = row.stage
        common = {"target": row.target, "renewal_id": row.id, "stage": stage}
        if row.attempts == 0 and row.status == "running":
            await self.bus.publish(StageStarted(time=self.clock(), **common))
        started = time.monotonic()
        loaded = False
        try:
            ctx.record = record_of(row)  # a RecordError blocks this renewal alone
            loaded = True
            slot = await self._order_slot(row, ca_name)
            outcome = slot if slot is not None else await STAGE_FUNCTIONS[stage](ctx)
        except Exception as exc:  # mapped to an outcome: this renewal alone blocks or fails
            if not expected(exc):
                log.exception("stage raised", target=row.target, renewal=row.id, stage=stage)
            outcome = outcome_of_error(ctx, stage, exc)
        seconds = time.monotonic() - started
        # A record that did not load is stored back as it was, never overwritten.
        data = ctx.record.to_data() if loaded else dict(row.data)
        now = self.clock()
        new, result, message = transition(row, outcome, now, data)
        event = stage_event(row, new, outcome, now)
        self.fault_seam(row.target, f"{stage}-unsaved")
        # Persist first: whatever happens next, a new process resumes from here.
        await self.store.save_renewal(
            new, StepRow(row.id, stage, result, now, round(seconds, 3), message), owner=self.owner
        )
        self.fault_seam(row.target, stage)
        if not new.active or new.stage not in ORDER_STAGES:
            await self.limiter.release(row.id, now)  # the CA's order is complete (or dropped)
        self.latest[row.target] = new
        if self.observe is not None:
            self.observe(row.target, stage, result, seconds)
        log.info(
            "renewal stage",
            target=row.target,
            renewal=row.id,
            stage=stage,
            result=result,
            reason=outcome.reason.value if isinstance(outcome, Blocked | Failed) else None,
            detail=message,
        )
        if event is not None:
            await self.bus.publish(event)
        if new.status == "done":
            leaf = ctx.leaf()
            await self.bus.publish(
                RenewalCompleted(
                    target=row.target,
                    time=now,
                    renewal_id=row.id,
                    new_sha256=sha256_of(leaf),
                    not_after=leaf.not_valid_after_utc.isoformat(),
                    cert_kind=ctx.kind,
                )
            )
        return new
