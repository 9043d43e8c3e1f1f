"""The monitor: poll a target's endpoints, keep the latest state, persist it, emit events.

The in-memory state (latest observation and latest good certificate per endpoint) is what the
metrics collector and the HTTP API read; the store holds the same, so a restart resumes it and
does not re-announce expiry windows or certificate changes it already announced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypedDict

import structlog
from cryptography import x509

from expressway_certd.monitor.checks import eku_problem_for, san_problem
from expressway_certd.monitor.config import Config, ExpresswayConfig
from expressway_certd.monitor.endpoint import Endpoint
from expressway_certd.monitor.events import (
    CertChanged,
    Event,
    EventBus,
    ExpiryWindowEntered,
    IssuerChanged,
    ProbeFailed,
    ProbeRecovered,
    SANsChanged,
)
from expressway_certd.monitor.facts import CertFacts, diff_facts, facts_from_x509
from expressway_certd.monitor.lint import LintFinding
from expressway_certd.monitor.policy import ServedCert
from expressway_certd.monitor.probe import Observation, Prober, TrustStore
from expressway_certd.monitor.store import EndpointRow, HistoryRow, Store

log = structlog.get_logger("monitor.watch")

Key = tuple[str, str, int]


@dataclass(frozen=True)
class EndpointState:
    """What we know of one endpoint now."""

    target: str
    endpoint: Endpoint
    observed_at: datetime
    ok: bool
    error_class: str | None
    error: str | None
    duration: float
    tls_version: str | None
    ok_observed_at: datetime | None = None  # the latest successful probe
    facts: CertFacts | None = None  # leaf served at the latest successful probe
    chain: tuple[CertFacts, ...] = ()
    chain_pem: str | None = None
    chain_verified: bool | None = None
    verify_error: str | None = None
    last_change_at: datetime | None = None
    san_problem: str | None = None
    eku_problem: str | None = None
    lint: tuple[LintFinding, ...] = ()  # advisories of the latest successful probe

    @property
    def key(self) -> Key:
        return (self.target, self.endpoint.host, self.endpoint.port)


class _Common(TypedDict):
    target: str
    time: datetime
    endpoint: str
    service: str


def expiry_window(facts: CertFacts, at: datetime, windows: tuple[int, ...]) -> int | None:
    """The smallest configured window (days) the certificate is inside at `at`, if any."""
    days = facts.days_left(at)
    inside = [w for w in windows if days <= w]
    return min(inside) if inside else None


class Monitor:
    """Owns the endpoint state. `poll(target)` probes, diffs, persists and publishes."""

    def __init__(
        self,
        config: Config,
        prober: Prober,
        store: Store,
        bus: EventBus,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.prober = prober
        self.store = store
        self.bus = bus
        self.clock = clock
        self.states: dict[Key, EndpointState] = {}
        self.polls_completed = 0
        # Called after every poll with the target and the certificates it serves, verified or
        # not (renewal policy); failures are logged, never raised into the poll.
        self.on_polled: list[Callable[[ExpresswayConfig, list[ServedCert]], Awaitable[None]]] = []
        self._trust: dict[str, TrustStore] = {}
        self._pems: dict[tuple[str, ...], str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._trust = _target_trust(config)

    def configured_keys(self) -> set[Key]:
        return {(e.name, ep.host, ep.port) for e in self.config.expressways for ep in e.endpoints}

    async def reconfigure(self, config: Config) -> int:
        """Adopt a reloaded config: per-target trust rebuilt, endpoints no longer configured
        forgotten (in memory and in the store). Returns how many endpoints were forgotten."""
        self.config = config
        self._trust = _target_trust(config)
        return await self.forget_unconfigured()

    async def forget_unconfigured(self) -> int:
        keep = self.configured_keys()
        for key in [k for k in self.states if k not in keep]:
            del self.states[key]
        return await self.store.delete_endpoints_except(keep)

    async def load(self) -> None:
        """Restore state from the store and forget endpoints that are no longer configured."""
        configured = {
            (e.name, ep.host, ep.port): (e, ep)
            for e in self.config.expressways
            for ep in e.endpoints
        }
        removed = await self.store.delete_endpoints_except(configured)
        if removed:
            log.info("forgot endpoints no longer configured", count=removed)
        await self._restore(configured, None)

    async def refresh(self, targets: Iterable[str]) -> None:
        """Re-read these targets' state from the store: another replica polled them while we
        did not (replicas, monitor/replicas.py), so what we loaded at start is stale and its
        expiry windows and changes may already be announced."""
        names = set(targets)
        configured = {
            (e.name, ep.host, ep.port): (e, ep)
            for e in self.config.expressways
            if e.name in names
            for ep in e.endpoints
        }
        await self._restore(configured, names)

    async def _restore(
        self,
        configured: dict[Key, tuple[ExpresswayConfig, Endpoint]],
        only: set[str] | None,
    ) -> None:
        parsed: dict[str, tuple[CertFacts, ...]] = {}
        for row in await self.store.load_endpoints():
            key = (row.target, row.host, row.port)
            if only is not None and row.target not in only:
                continue
            if key not in configured:
                continue  # removed by a reload since
            exp, endpoint = configured[key]
            chain: tuple[CertFacts, ...] = ()
            if row.chain_pem:
                chain = parsed.get(row.chain_pem) or tuple(
                    facts_from_x509(c)
                    for c in x509.load_pem_x509_certificates(row.chain_pem.encode())
                )
                parsed[row.chain_pem] = chain
            state = EndpointState(
                target=row.target,
                endpoint=endpoint,
                observed_at=row.observed_at,
                ok=row.ok,
                error_class=row.error_class,
                error=row.error,
                duration=row.duration,
                tls_version=row.tls_version,
                ok_observed_at=row.ok_observed_at,
                facts=chain[0] if chain else None,
                chain=chain,
                chain_pem=row.chain_pem,
                chain_verified=row.chain_verified,
                verify_error=row.verify_error,
                last_change_at=row.last_change_at,
            )
            self.states[key] = self._with_checks(state, exp)

    def _shared_pem(self, obs: Observation) -> str:
        """One PEM string per served chain: the endpoints of a box serve the same chain, and
        at 10,000 endpoints a copy each is tens of MiB."""
        key = tuple(f.sha256 for f in obs.chain_facts)
        pem = self._pems.get(key)
        if pem is None:
            if len(self._pems) > 2 * max(len(self.states), 64):
                live = {tuple(f.sha256 for f in st.chain) for st in self.states.values()}
                self._pems = {k: v for k, v in self._pems.items() if k in live}
            pem = self._pems[key] = obs.chain_pem()
        return pem

    def _with_checks(self, state: EndpointState, exp: ExpresswayConfig) -> EndpointState:
        if state.facts is None:
            return state
        return replace(
            state,
            san_problem=san_problem(state.facts, state.endpoint, exp),
            eku_problem=eku_problem_for(state.facts, exp),
        )

    async def poll(self, exp: ExpresswayConfig, *, wait: bool = False) -> list[Observation]:
        """Probe every endpoint of one target; one poll per target at a time (a second one is
        skipped, or with `wait` runs after the first, e.g. when a reload changed the target)."""
        lock = self._locks.setdefault(exp.name, asyncio.Lock())
        if lock.locked() and not wait:
            log.info("poll still running, skipped", target=exp.name)
            return []
        async with lock:
            trust = self._trust.get(exp.name)
            observations = await asyncio.gather(
                *(self.prober.probe(exp.name, ep, trust=trust) for ep in exp.endpoints)
            )
            events: list[Event] = []
            rows: list[EndpointRow] = []
            history: list[HistoryRow] = []
            for obs in observations:
                state, new_events, changed = self._apply(exp, obs)
                events.extend(new_events)
                rows.append(_row(state))
                if changed:
                    history.append(_history(state, obs))
            await self.store.save_endpoints(rows, history)
            for row_state in rows:
                key = (row_state.target, row_state.host, row_state.port)
                log.debug("observed", target=key[0], endpoint=f"{key[1]}:{key[2]}")
            self.polls_completed += 1
            for event in events:
                log.info(event.type, target=event.target, summary=event.summary())
                await self.bus.publish(event)
            served = [
                ServedCert(ep.address, ep.service, st.facts, st.chain_verified is True)
                for ep in exp.endpoints
                if (st := self.states.get((exp.name, ep.host, ep.port))) is not None
                and st.ok
                and st.facts is not None
            ]
            for hook in self.on_polled:
                try:
                    await hook(exp, served)
                except Exception:  # a renewal problem must not stop monitoring
                    log.exception("after-poll hook failed", target=exp.name)
            return list(observations)

    def _apply(
        self, exp: ExpresswayConfig, obs: Observation
    ) -> tuple[EndpointState, list[Event], bool]:
        """New state for one observation, the events it causes, and whether history records it."""
        prev = self.states.get(obs.key)
        ep = obs.endpoint
        common = _Common(target=exp.name, time=obs.time, endpoint=ep.address, service=ep.service)
        events: list[Event] = []
        changed = prev is None or prev.ok != obs.ok or prev.error_class != obs.error_class
        if not obs.ok:
            if prev is None or prev.ok:
                events.append(
                    ProbeFailed(**common, error_class=obs.error_class or "", error=obs.error or "")
                )
            base = prev or EndpointState(
                target=exp.name,
                endpoint=ep,
                observed_at=obs.time,
                ok=False,
                error_class=None,
                error=None,
                duration=0.0,
                tls_version=None,
            )
            state = replace(
                base,
                endpoint=ep,
                observed_at=obs.time,
                ok=False,
                error_class=obs.error_class,
                error=obs.error,
                duration=obs.duration,
                tls_version=obs.tls_version,
            )
            self.states[obs.key] = state
            return state, events, changed

        assert obs.facts is not None
        if prev is not None and not prev.ok and prev.error_class:
            events.append(ProbeRecovered(**common, previous_error_class=prev.error_class))
        old = prev.facts if prev else None
        last_change = prev.last_change_at if prev else None
        if old is None or old.sha256 != obs.facts.sha256:
            changed = True
            last_change = obs.time
            if old is not None:
                events.extend(self._change_events(common, old, obs.facts))
        window = expiry_window(obs.facts, obs.time, self.config.daemon.expiry_windows)
        if window is not None:
            prev_window = None
            if old is not None and old.sha256 == obs.facts.sha256 and prev and prev.ok_observed_at:
                prev_window = expiry_window(
                    old, prev.ok_observed_at, self.config.daemon.expiry_windows
                )
            if prev_window is None or window < prev_window:
                events.append(
                    ExpiryWindowEntered(
                        **common,
                        window_days=window,
                        days_left=round(obs.facts.days_left(obs.time), 2),
                        not_after=obs.facts.not_after.isoformat(),
                        sha256=obs.facts.sha256,
                    )
                )
        chain_pem = self._shared_pem(obs)
        state = EndpointState(
            target=exp.name,
            endpoint=ep,
            observed_at=obs.time,
            ok=True,
            error_class=None,
            error=None,
            duration=obs.duration,
            tls_version=obs.tls_version,
            ok_observed_at=obs.time,
            facts=obs.facts,
            chain=obs.chain_facts,
            chain_pem=chain_pem,
            chain_verified=obs.chain_verified,
            verify_error=obs.verify_error,
            last_change_at=last_change,
            lint=obs.lint,
        )
        state = self._with_checks(state, exp)
        self.states[obs.key] = state
        return state, events, changed

    @staticmethod
    def _change_events(common: _Common, old: CertFacts, new: CertFacts) -> list[Event]:
        diff = diff_facts(old, new)
        out: list[Event] = [
            CertChanged(
                **common,
                old_sha256=old.sha256,
                new_sha256=new.sha256,
                new_not_after=new.not_after.isoformat(),
            )
        ]
        if diff.sans_changed:
            out.append(
                SANsChanged(
                    **common,
                    added=tuple(str(s) for s in diff.sans_added),
                    removed=tuple(str(s) for s in diff.sans_removed),
                )
            )
        if diff.issuer_changed or diff.aki_changed:
            out.append(
                IssuerChanged(
                    **common,
                    old_issuer=old.issuer,
                    new_issuer=new.issuer,
                    old_aki=old.aki,
                    new_aki=new.aki,
                )
            )
        return out


def _target_trust(config: Config) -> dict[str, TrustStore]:
    """A trust store per target that names its own `ca_file` (plus the daemon's bundle)."""
    base = [config.daemon.trust_bundle] if config.daemon.trust_bundle else []
    return {
        exp.name: TrustStore([*base, exp.ca_file], system_roots=config.daemon.system_roots)
        for exp in config.expressways
        if exp.ca_file is not None
    }


def _row(state: EndpointState) -> EndpointRow:
    return EndpointRow(
        target=state.target,
        host=state.endpoint.host,
        port=state.endpoint.port,
        service=state.endpoint.service,
        observed_at=state.observed_at,
        ok=state.ok,
        error_class=state.error_class,
        error=state.error,
        duration=state.duration,
        tls_version=state.tls_version,
        ok_observed_at=state.ok_observed_at,
        sha256=state.facts.sha256 if state.facts else None,
        not_after=state.facts.not_after if state.facts else None,
        chain_pem=state.chain_pem,
        chain_verified=state.chain_verified,
        verify_error=state.verify_error,
        last_change_at=state.last_change_at,
    )


def _history(state: EndpointState, obs: Observation) -> HistoryRow:
    facts = obs.facts
    return HistoryRow(
        target=state.target,
        host=state.endpoint.host,
        port=state.endpoint.port,
        observed_at=obs.time,
        ok=obs.ok,
        error_class=obs.error_class,
        sha256=facts.sha256 if facts else None,
        not_after=facts.not_after if facts else None,
        detail={
            "error": obs.error,
            "subject": facts.subject if facts else None,
            "issuer": facts.issuer if facts else None,
            "sans": [str(s) for s in facts.sans] if facts else [],
            "chain_verified": obs.chain_verified,
        },
    )
