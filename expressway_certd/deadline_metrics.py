"""Deadline-risk metrics and page rows, computed at scrape time from the config, the monitor's
served certificates and the renewal history in the store (renewers/deadline.py). It joins the
monitor and the renewal side, so it lives in the composition root.

`expressway_renewal_deadline_margin_seconds{target, dominating}`: expiry of the certificate
in service minus the earliest completion of a renewal started now. Only targets with
`renewal = {...}` and a certificate seen.
"""

from __future__ import annotations

from datetime import datetime

from monitor.config import ExpresswayConfig, UnifiedCMConfig
from monitor.watch import Monitor
from renewers.deadline import DeadlineEstimate, estimate, history, inputs_for

METRIC = "expressway_renewal_deadline_margin_seconds"
HELP = (
    "Expiry of the certificate in service minus the earliest completion of a renewal "
    "started now (CA latency, approval, maintenance window, restart)."
)
HISTORY = 20  # past renewals per target used for the p90s


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _ca_kind(monitor: Monitor, exp: ExpresswayConfig) -> str:
    assert exp.renewal is not None
    ca = monitor.config.cas.get(exp.renewal.ca)
    return str(getattr(ca, "kind", "unknown"))


def _unified_cm(monitor: Monitor, exp: ExpresswayConfig) -> UnifiedCMConfig | None:
    """The Unified CM whose trust (and services) a renewal of `exp` changes, if any."""
    if not exp.unified_cm:
        return None
    return next((u for u in monitor.config.unified_cms if u.name == exp.unified_cm), None)


async def estimates(monitor: Monitor, now: datetime) -> list[DeadlineEstimate]:
    out = []
    for exp in monitor.config.expressways:
        renewal = exp.renewal
        if renewal is None:
            continue
        served = [
            s.facts.not_after
            for s in monitor.states.values()
            if s.target == exp.name and s.facts is not None
        ]
        if not served:
            continue
        approvals, issuances = await history(monitor.store, exp.name, HISTORY)
        ucm = _unified_cm(monitor, exp)
        inputs = inputs_for(exp, min(served), _ca_kind(monitor, exp), approvals, issuances, ucm)
        out.append(estimate(inputs, now))
    return out


def render(found: list[DeadlineEstimate]) -> str:
    if not found:
        return ""
    lines = [f"# HELP {METRIC} {HELP}", f"# TYPE {METRIC} gauge"]
    for e in sorted(found, key=lambda e: e.target):
        labels = f'dominating="{_escape(e.dominating)}",target="{_escape(e.target)}"'
        lines.append(f"{METRIC}{{{labels}}} {e.margin.total_seconds()!r}")
    return "\n".join(lines) + "\n"
