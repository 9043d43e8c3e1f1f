"""Connects the monitor to the renewal pipeline: after each poll the renewal policy decides;
due renewals start; waiting ones resume when their time comes. Wired by monitor/daemon.py."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from monitor.config import Config, ExpresswayConfig
from monitor.errors import CertdError
from monitor.events import EventBus, RenewalDue
from monitor.facts import CertFacts
from monitor.policy import PolicyInput, evaluate
from monitor.probe import Prober
from monitor.store import RenewalRow, Store
from renewers.ca import build_connector
from renewers.ca.base import CAConnector
from renewers.pipeline import Devices, Pipeline, StageObserver

log = structlog.get_logger("renewers.manager")

ARI_REFRESH = timedelta(hours=12)


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
    ) -> None:
        self.config = config
        self.bus = bus
        self.clock = clock
        used = {e.renewal.ca for e in config.expressways if e.renewal is not None}
        self.connectors: dict[str, CAConnector] = dict(connectors or {})
        for name in sorted(used - set(self.connectors)):
            self.connectors[name] = build_connector(
                config.cas[name], config.daemon.data_dir, events=bus.publish
            )
        self.pipeline = Pipeline(
            config, store, bus, prober, self.connectors, devices=devices, clock=clock,
            observe=observe,
        )  # fmt: skip
        self.store = store
        self.next_due: dict[str, datetime | None] = {}
        self.last_success: dict[str, datetime] = {}
        self._ari: dict[str, tuple[datetime, tuple[datetime, datetime] | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def enabled(self) -> bool:
        return any(e.renewal is not None for e in self.config.expressways)

    async def load(self) -> None:
        await self.pipeline.load()
        for row in reversed(await self.store.renewals_for(limit=10_000)):
            if row.status == "done":
                self.last_success[row.target] = row.updated_at

    def latest(self) -> Mapping[str, RenewalRow]:
        return self.pipeline.latest

    async def after_poll(self, exp: ExpresswayConfig, served: list[CertFacts]) -> None:
        """Apply the renewal policy to what the target serves; start a renewal when due."""
        if exp.renewal is None or not served:
            return
        latest = self.pipeline.latest.get(exp.name)
        if latest is not None and latest.active:
            self.next_due[exp.name] = latest.next_at
            return
        # What this tool installed last: if the box serves something else now, someone
        # replaced it (or rolled it back): the policy treats that as a reason to renew.
        installed = latest.data.get("installed_sha256") if latest is not None else None
        differing = [f for f in served if installed and f.sha256 != installed]
        current = differing[0] if differing else min(served, key=lambda f: f.not_after)
        decision = evaluate(
            PolicyInput(
                now=self.clock(),
                served=current,
                installed_sha256=installed,
                renew_before=exp.renewal.renew_before,
                ari_window=await self._ari_window(exp, current),
                jitter=stable_jitter(exp.name, current.sha256),
            )
        )
        self.next_due[exp.name] = decision.renew_at
        if not decision.due:
            return
        row = await self.pipeline.start(exp.name, f"{decision.reason}: {decision.message}")
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
        leaf_pem = (state.data.get("issued") or {}).get("leaf_pem") if state else None
        leaf = x509.load_pem_x509_certificate(leaf_pem.encode()) if leaf_pem else None
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
        task = asyncio.create_task(self._run(renewal_id), name=f"renewal {renewal_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, renewal_id: str) -> None:
        try:
            row = await self.pipeline.run(renewal_id)
        except CertdError as exc:
            log.error("renewal run failed", renewal=renewal_id, error=str(exc))
            return
        if row.status == "done":
            self.last_success[row.target] = row.updated_at

    async def run_due(self) -> None:
        await self.pipeline.run_due()
        for target, row in self.pipeline.latest.items():
            if row.status == "done":
                self.last_success[target] = max(
                    self.last_success.get(target, row.updated_at), row.updated_at
                )

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for connector in self.connectors.values():
            await connector.aclose()
