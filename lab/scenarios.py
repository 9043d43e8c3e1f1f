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

from cryptography import x509
from expressway_certd_lab.renewal import add_unified_cm_keys, window_opening_in
from expressway_certd_lab.topology import Lab

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


def _client_cert_report(lab: Lab) -> list[str]:
    c = lab.expressway_c
    served, client = c.served_cert, c.client_cert
    try:
        ekus = c.client_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        names = ", ".join(_EKU_NAMES.get(e.dotted_string, e.dotted_string) for e in ekus)
    except x509.ExtensionNotFound:
        names = "none (any use)"
    return [
        *_zones(lab),
        f"  {c.name} server certificate  issuer {served.issuer.rfc4514_string()}, expires "
        f"{served.not_valid_after_utc:%Y-%m-%d}",
        f"  {c.name} client certificate  issuer {client.issuer.rfc4514_string()}, expires "
        f"{client.not_valid_after_utc:%Y-%m-%d}, EKU {names}",
        f"  {c.name} CSRs generated {c.csr_generated}, server uploads {c.uploads}, client "
        f"uploads {c.client_uploads}, restarts {c.restart_count}",
    ]


_EKU_NAMES = {"1.3.6.1.5.5.7.3.1": "serverAuth", "1.3.6.1.5.5.7.3.2": "clientAuth"}


def _client_ca(text: str, now: datetime) -> str:
    """The client certificate's CA named explicitly (the lab EST CA, private: it issues
    clientAuth), and 2048-bit CSRs to keep the two renewals quick."""
    renewal = 'renewal = { ca = "lab-est" }'
    if renewal not in text:
        raise ValueError('the lab config has no renewal = { ca = "lab-est" } line')
    return text.replace(
        renewal, 'renewal = { ca = "lab-est", client_ca = "lab-est", key_length = 2048 }'
    )


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
    renewals: int = 1  # how many renewals must complete ("completed") before the end


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
        Scenario(
            "x15.5-client-cert",
            "a C at X15.5 whose client certificate, copied at upgrade, expires first: both "
            "certificates renewed from the private CA, zones stay Active",
            target="expe-c1",
            expect="completed",
            lab_kwargs={"version": "X15.5", "client_cert_days": 5},
            intro="expe-c1 and expe-e1 run X15.5: the C keeps a separate client certificate "
            "(what it presents as the TLS client of the traversal zone and towards Unified "
            "CM). The upgrade copied the old server certificate into it, so it expires in 5 "
            "days, before the server certificate. The daemon renews the client certificate on "
            "its own expiry (renewal kind client, clientAuth from the lab EST CA, a private CA) "
            "and the server certificate after it, one renewal of the box at a time.",
            report=_client_cert_report,
            edit_config=_client_ca,
            renewals=2,
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
