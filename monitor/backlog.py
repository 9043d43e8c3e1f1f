"""The renewal backlog of each CA: how many renewals still wait for their order, when the CA's
`orders_per_hour` lets the last of them through, and the earliest expiry among them.

Computed from the store (every replica sees the same rows, so every replica exports the same
figures; the alert folds them with `max without (instance, pod)`). The alert
ExpresswayRenewalBacklogTooSlow fires when the backlog clears after the earliest expiry: raise
the CA's limit (if the CA allows it) or renew some targets by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from expressway_certd.monitor.store import EndpointRow, RenewalRow

# Stages before the CA order is placed, and the one that places it.
PRE_ORDER_STAGES = frozenset({"snapshot", "preflight", "csr", "submit"})


@dataclass(frozen=True)
class Backlog:
    waiting: int  # active renewals that have not placed their order yet
    clears_at: datetime  # when the per-hour limit lets the last of them through
    earliest_expiry: datetime | None  # the earliest not_after among their targets


def backlog(
    active: Iterable[RenewalRow],
    ca_of: Mapping[str, str],
    orders_per_hour: Mapping[str, int],
    endpoints: Iterable[EndpointRow],
    now: datetime,
) -> dict[str, Backlog]:
    """CA -> its backlog, for every CA in `orders_per_hour` (0: no per-hour limit: clears now)."""
    expiry: dict[str, datetime] = {}
    for e in endpoints:
        if e.not_after is not None and (e.target not in expiry or e.not_after < expiry[e.target]):
            expiry[e.target] = e.not_after
    waiting: dict[str, list[str]] = {ca: [] for ca in orders_per_hour}
    for row in active:
        ca = ca_of.get(row.target)
        if ca in waiting and row.stage in PRE_ORDER_STAGES:
            waiting[ca].append(row.target)
    out = {}
    for ca, targets in waiting.items():
        rate = orders_per_hour[ca]
        hours = len(targets) / rate if rate > 0 else 0.0
        expiries = [expiry[t] for t in targets if t in expiry]
        out[ca] = Backlog(
            waiting=len(targets),
            clears_at=now + timedelta(hours=hours),
            earliest_expiry=min(expiries) if expiries else None,
        )
    return out
