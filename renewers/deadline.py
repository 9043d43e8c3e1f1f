"""Deadline risk: the earliest moment a renewal of one target could complete, and its margin.

Pure. A renewal started now runs its stages in order (docs/renewal.md): the CA issues (its
observed latency, p90 of past issuances, or a default by CA kind), an approver approves
(p90 of past approvals, a default until there are some); for an Expressway-C with
`unified_cm`, stage ucm-restart then waits for the Unified CM's maintenance window (its own,
else the target's) and restarts its services node by node; then the box's restart waits for
the next maintenance window and takes its time. The Unified CM stage runs only when the CA
changes, which is known only after issuance: like approval in `manual-if-ca-changed`, it is
assumed, so the estimate never promises more time than there may be. The margin is the certificate's expiry minus that
completion; the factor with the largest share of the delay is named, so an alert can say
what to change (a wider window, a faster approver, another CA).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from expressway_certd.monitor.config import ExpresswayConfig, UnifiedCMConfig
from expressway_certd.monitor.store import StepRow, Store
from expressway_certd.renewers.maintenance import next_window_start

DEFAULT_APPROVAL = timedelta(days=2)  # until a target has approvals of its own
DEFAULT_CA_LATENCY = {"manual": timedelta(days=3)}  # other kinds: minutes
DEFAULT_CA_LATENCY_OTHER = timedelta(minutes=10)
DEFAULT_RESTART = timedelta(minutes=15)
DEFAULT_UCM_RESTART_PER_NODE = timedelta(minutes=10)  # CallManager, Tftp, Tomcat on one node
DEFAULT_SAFETY = timedelta(days=7)

FACTOR_CA, FACTOR_APPROVAL, FACTOR_WINDOW, FACTOR_RESTART = (
    "ca latency",
    "approval",
    "maintenance window",
    "restart",
)
FACTOR_UCM_WINDOW, FACTOR_UCM_RESTART = ("unified cm window", "unified cm restart")


@dataclass(frozen=True)
class DeadlineInputs:
    target: str
    not_after: datetime  # of the certificate in service
    ca_kind: str  # acme, est, adcs, manual
    approval_required: bool
    past_approvals: Sequence[timedelta] = ()
    past_issuances: Sequence[timedelta] = ()
    restart: timedelta = DEFAULT_RESTART
    # None: restart at once; else when the window opens at or after a moment
    next_window: Callable[[datetime], datetime] | None = None
    # Unified CM restarts before the box's (stage ucm-restart); zero: no Unified CM stage
    ucm_restart: timedelta = timedelta(0)
    # None: the Unified CM restarts at once; else when its window opens at or after a moment
    ucm_window: Callable[[datetime], datetime] | None = None


@dataclass(frozen=True)
class DeadlineEstimate:
    target: str
    earliest_completion: datetime
    margin: timedelta  # not_after - earliest_completion (negative: too late already)
    factors: tuple[tuple[str, timedelta], ...]  # in pipeline order
    dominating: str

    def at_risk(self, safety: timedelta = DEFAULT_SAFETY) -> bool:
        return self.margin < safety

    def explanation(self) -> str:
        parts = ", ".join(f"{name} {_human(d)}" for name, d in self.factors if d > timedelta(0))
        return (
            f"{self.target}: a renewal started now completes at the earliest "
            f"{self.earliest_completion:%Y-%m-%d %H:%M} UTC ({parts or 'no delays'}), "
            f"{_human(self.margin)} before expiry; dominated by {self.dominating}"
        )


def p90(values: Sequence[timedelta]) -> timedelta | None:
    """Nearest-rank 90th percentile; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def _human(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds >= 86400:
        return f"{sign}{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{sign}{seconds / 3600:.1f} h"
    return f"{sign}{seconds / 60:.0f} min"


def estimate(inputs: DeadlineInputs, now: datetime) -> DeadlineEstimate:
    """The earliest completion of a renewal started at `now`, and what makes it late."""
    ca = p90(inputs.past_issuances) or DEFAULT_CA_LATENCY.get(
        inputs.ca_kind, DEFAULT_CA_LATENCY_OTHER
    )
    approval = (
        (p90(inputs.past_approvals) or DEFAULT_APPROVAL)
        if inputs.approval_required
        else timedelta(0)
    )
    approved = now + ca + approval
    ucm_wait = timedelta(0)
    if inputs.ucm_restart > timedelta(0) and inputs.ucm_window is not None:
        ucm_wait = max(inputs.ucm_window(approved) - approved, timedelta(0))
    ready = approved + ucm_wait + inputs.ucm_restart
    window_opens = inputs.next_window(ready) if inputs.next_window else ready
    wait = max(window_opens - ready, timedelta(0))
    done = ready + wait + inputs.restart
    factors = (
        (FACTOR_CA, ca),
        (FACTOR_APPROVAL, approval),
        (FACTOR_UCM_WINDOW, ucm_wait),
        (FACTOR_UCM_RESTART, inputs.ucm_restart),
        (FACTOR_WINDOW, wait),
        (FACTOR_RESTART, inputs.restart),
    )
    dominating = max(factors, key=lambda f: f[1])[0]
    return DeadlineEstimate(inputs.target, done, inputs.not_after - done, factors, dominating)


def _first(steps: Sequence[StepRow], stage: str, result: str | None = None) -> StepRow | None:
    return next(
        (s for s in steps if s.stage == stage and (result is None or s.result == result)), None
    )


def past_durations(steps: Sequence[StepRow]) -> tuple[timedelta | None, timedelta | None]:
    """(approval, issuance) of one renewal from its steps, when it had them.

    Approval: from the approve stage's first wait to its advance (an automatic approval has
    no wait and says nothing about approvers). Issuance: from the submit stage's first run to
    the issued stage's advance.
    """
    ordered = sorted(steps, key=lambda s: s.at)
    approval = issuance = None
    waited, approved = _first(ordered, "approve", "wait"), _first(ordered, "approve", "advance")
    if waited is not None and approved is not None and approved.at >= waited.at:
        approval = approved.at - waited.at
    submitted, issued = _first(ordered, "submit"), _first(ordered, "issued", "advance")
    if submitted is not None and issued is not None and issued.at >= submitted.at:
        issuance = issued.at - submitted.at + timedelta(seconds=submitted.seconds)
    return approval, issuance


async def history(
    store: Store, target: str, limit: int = 20
) -> tuple[list[timedelta], list[timedelta]]:
    """(approvals, issuances) of the target's latest `limit` renewals, for the p90s."""
    approvals: list[timedelta] = []
    issuances: list[timedelta] = []
    for row in await store.renewals_for(target, limit=limit):
        approval, issuance = past_durations(await store.steps(row.id))
        approvals += [approval] if approval is not None else []
        issuances += [issuance] if issuance is not None else []
    return approvals, issuances


def inputs_for(
    target: ExpresswayConfig,
    not_after: datetime,
    ca_kind: str,
    approvals: Sequence[timedelta],
    issuances: Sequence[timedelta],
    ucm: UnifiedCMConfig | None = None,
) -> DeadlineInputs:
    """The estimator's inputs for a configured target with `renewal = {...}`; `ucm` is the
    Unified CM of an Expressway-C with `unified_cm` (its window, else the target's, applies)."""
    renewal = target.renewal
    assert renewal is not None
    window = renewal.maintenance_window
    ucm_restart, ucm_window = timedelta(0), None
    if ucm is not None and target.role == "c":
        ucm_restart = DEFAULT_UCM_RESTART_PER_NODE * len(ucm.nodes)
        own = ucm.maintenance_window or window
        ucm_window = partial(next_window_start, own) if own else None
    return DeadlineInputs(
        target.name,
        not_after=not_after,
        ca_kind=ca_kind,
        approval_required=renewal.approval != "auto",
        past_approvals=tuple(approvals),
        past_issuances=tuple(issuances),
        next_window=partial(next_window_start, window) if window else None,
        ucm_restart=ucm_restart,
        ucm_window=ucm_window,
    )
