"""Deadline-risk metrics and page rows, computed at scrape time from the config, the monitor's
served certificates and the renewal history in the store (renewers/deadline.py). It joins the
monitor and the renewal side, so it lives in the composition root.

`expressway_renewal_deadline_margin_seconds{target, dominating}`: expiry of the certificate
in service minus the earliest completion of a renewal started now. Only targets with
`renewal = {...}` and a certificate seen.

The estimates read each target's renewal history from the store, so they are not made at
every scrape: `DeadlineCache` keeps them for `REFRESH` and recomputes earlier only when what
they start from changes (the config, or the certificate in service of a target). A margin is
therefore up to `REFRESH` old, minutes against an alert threshold of days.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime, timedelta

from expressway_certd.alerts.exposition import label_value
from expressway_certd.monitor.config import ExpresswayConfig, UnifiedCMConfig
from expressway_certd.monitor.watch import Monitor
from expressway_certd.renewers.deadline import DeadlineEstimate, estimate, history, inputs_for

METRIC = "expressway_renewal_deadline_margin_seconds"
HELP = (
    "Expiry of the certificate in service minus the earliest completion of a renewal "
    "started now (CA latency, approval, maintenance window, restart)."
)
HISTORY = 20  # past renewals per target used for the p90s
REFRESH = timedelta(minutes=5)  # how long computed estimates are served from the cache


def _ca_kind(monitor: Monitor, exp: ExpresswayConfig) -> str:
    assert exp.renewal is not None
    ca = monitor.config.cas.get(exp.renewal.ca)
    return str(getattr(ca, "kind", "unknown"))


def served_expiry(monitor: Monitor) -> dict[str, datetime]:
    """target -> the earliest expiry among the certificates its endpoints serve (one pass)."""
    out: dict[str, datetime] = {}
    for state in monitor.states.values():
        if state.facts is not None:
            at = state.facts.not_after
            out[state.target] = min(out.get(state.target, at), at)
    return out


def _unified_cm(monitor: Monitor, exp: ExpresswayConfig) -> UnifiedCMConfig | None:
    """The Unified CM whose trust (and services) a renewal of `exp` changes, if any."""
    if not exp.unified_cm:
        return None
    return next((u for u in monitor.config.unified_cms if u.name == exp.unified_cm), None)


async def estimates(monitor: Monitor, now: datetime) -> list[DeadlineEstimate]:
    out = []
    served = served_expiry(monitor)
    for exp in monitor.config.expressways:
        if exp.renewal is None or exp.name not in served:
            continue
        approvals, issuances = await history(monitor.store, exp.name, HISTORY)
        ucm = _unified_cm(monitor, exp)
        inputs = inputs_for(
            exp, served[exp.name], _ca_kind(monitor, exp), approvals, issuances, ucm
        )
        out.append(estimate(inputs, now))
    return out


def inputs_key(monitor: Monitor) -> Hashable:
    """What the estimates start from, cheap to take at every scrape: the config (compared by
    identity first; a reload replaces it) and the served expiry of every target."""
    return (monitor.config, tuple(sorted(served_expiry(monitor).items())))


class DeadlineCache:
    """Estimates computed at most once per `refresh`, and again when `key()` changes.

    Concurrent scrapes wait for one computation; a failed computation is not cached.
    """

    def __init__(
        self,
        compute: Callable[[datetime], Awaitable[list[DeadlineEstimate]]],
        key: Callable[[], Hashable],
        refresh: timedelta = REFRESH,
    ) -> None:
        self._compute = compute
        self._key = key
        self._refresh = refresh
        self._lock = asyncio.Lock()
        self._value: list[DeadlineEstimate] | None = None
        self._at: datetime | None = None
        self._inputs: Hashable = None
        self.computations = 0

    def _fresh(self, now: datetime, inputs: Hashable) -> bool:
        return (
            self._value is not None
            and self._at is not None
            and self._at <= now < self._at + self._refresh
            and inputs == self._inputs
        )

    async def get(self, now: datetime) -> list[DeadlineEstimate]:
        async with self._lock:
            inputs = self._key()
            if self._fresh(now, inputs):
                assert self._value is not None
                return self._value
            value = await self._compute(now)
            self.computations += 1
            self._value, self._at, self._inputs = value, now, inputs
            return value

    @classmethod
    def of(cls, monitor: Monitor, refresh: timedelta = REFRESH) -> DeadlineCache:
        async def compute(now: datetime) -> list[DeadlineEstimate]:
            return await estimates(monitor, now)

        return cls(compute, lambda: inputs_key(monitor), refresh)


def render(found: list[DeadlineEstimate]) -> str:
    if not found:
        return ""
    lines = [f"# HELP {METRIC} {HELP}", f"# TYPE {METRIC} gauge"]
    for e in sorted(found, key=lambda e: e.target):
        labels = f'dominating="{label_value(e.dominating)}",target="{label_value(e.target)}"'
        lines.append(f"{METRIC}{{{labels}}} {e.margin.total_seconds()!r}")
    return "\n".join(lines) + "\n"
