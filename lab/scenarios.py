"""Named lab cases for `expressway-certd demo --once --scenario NAME`.

A scenario is data: how to build the lab (keyword arguments of `lab.topology.Lab`), which
Expressway gets a renewal and with what `renewal = { ... }` line, how the run is expected to end
(completed or blocked), and what to print about the simulators' state afterwards. The demo
verb (expressway_certd/cmd_demo.py) runs it on the real daemon and pipeline and prints the
timeline; tests/e2e/test_scenarios.py asserts on that output and on the simulators.

Imports nothing from monitor/, renewers/ or alerts/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lab.renewal import add_unified_cm_keys, window_opening_in
from lab.topology import Lab

DEFAULT = "default"


def _zones(lab: Lab) -> list[str]:
    return [
        f"  traversal zone  {' '.join(lab.traversal_zone.status()).strip()}",
        f"  Unified CM zone {' '.join(lab.secure_zone.status()).strip()}",
    ]


def _default_report(lab: Lab) -> list[str]:
    c = lab.expressway_c
    return [*_zones(lab), f"  {c.name} now serves {c.served_cert.issuer.rfc4514_string()}"]


def _acme_report(lab: Lab) -> list[str]:
    e = lab.expressway_e
    return [
        f"  {e.name} ACME scheduler {'On' if e.acme_enabled else 'Off'}; "
        f"CSRs generated {e.csr_generated}, certificates uploaded {e.uploads}, "
        f"restarts {e.restart_count}",
        f"  {e.name} still serves {e.served_cert.issuer.rfc4514_string()} "
        f"(expires {e.served_cert.not_valid_after_utc:%Y-%m-%d})",
        *_zones(lab),
    ]


def _cucm_report(lab: Lab) -> list[str]:
    out = [*_zones(lab)]
    new_root = lab.expressway_c.served_cert.issuer.rfc4514_string()
    out.append(f"  {lab.expressway_c.name} now serves {new_root}")
    for i, node in enumerate(lab.cucm_nodes):
        role = "publisher" if i == 0 else "subscriber"
        counts = ", ".join(f"{name} {n}" for name, n in sorted(node.restarts.items()) if n)
        out.append(f"  {node.name} ({role}) restarts: {counts}")
    order = [f"{node} {service}" for node, service, edge in lab.cucm.restart_log if edge == "begin"]
    out.append(f"  restart order: {', '.join(order) or 'none'}")
    return out


def _cucm_window(text: str, now: datetime) -> str:
    window = window_opening_in(now, timedelta(seconds=20))
    return add_unified_cm_keys(text, "cucm1", f"maintenance_window = {window}")


@dataclass(frozen=True)
class Scenario:
    """One lab case: `expect` is "completed" or "blocked"."""

    name: str
    summary: str
    target: str
    expect: str
    lab_kwargs: dict[str, Any] = field(default_factory=dict)
    intro: str = ""
    report: Callable[[Lab], list[str]] = _default_report
    # applied to the lab's config text, with the time on the daemon's renewal clock
    edit_config: Callable[[str, datetime], str] | None = None


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            DEFAULT,
            "the C's certificate renewed from the lab EST CA with a new root; every stage ok",
            target="expe-c1",
            expect="completed",
        ),
        Scenario(
            "acme-on-box",
            "the E's own ACME scheduler is on: the renewal is blocked before any CSR, with the fix",
            target="expe-e1",
            expect="blocked",
            lab_kwargs={"e_acme_enabled": True},
            intro="expe-e1 renews itself through its own ACME scheduler (Maintenance > Security "
            "> ACME is On); a second renewer would overwrite its certificates.",
            report=_acme_report,
        ),
        Scenario(
            "cucm-window",
            "new CA uploaded to Unified CM at once; its service restarts wait for its "
            "maintenance window, then run node by node, publisher first",
            target="expe-c1",
            expect="completed",
            lab_kwargs={"cucm_nodes": 2, "service_restart_seconds": 0.4},
            intro="Unified CM cucm1 is a publisher (cucm1) and a subscriber (cucm2) with a "
            "maintenance_window opening on the next whole minute at least 20 s away: the new "
            "CA goes to tomcat-trust and callmanager-trust at once, but Cisco CallManager, Tftp "
            "and Tomcat restart only inside the window, one node at a time.",
            report=_cucm_report,
            edit_config=_cucm_window,
        ),
    )
}


def scenario(name: str) -> Scenario:
    """The scenario called `name`; ValueError naming the known ones otherwise."""
    try:
        return SCENARIOS[name]
    except KeyError:
        known = ", ".join(SCENARIOS)
        raise ValueError(f"no lab scenario {name!r}; known: {known}") from None


def listing() -> str:
    """One line per scenario: name and what it shows."""
    width = max(len(n) for n in SCENARIOS)
    return "\n".join(f"{s.name:<{width}}  {s.summary}" for s in SCENARIOS.values())
