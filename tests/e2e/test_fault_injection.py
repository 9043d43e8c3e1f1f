"""Fault injection on every device and CA call of a lab renewal (issue 13 part 8).

A clean renewal on the lab finds the call sites (tests/e2e/fault_layer.py); then, on the same
lab, one renewal per (call site, fault) runs with that one fault. Each must end in a status
docs/renewal.md documents (read from its "Ways out" table, plus done and cancelled), and leave
nothing half-installed: the C serves either a certificate it served before or one the CA
issued, with a chain that verifies link by link up to a root it trusts, and no trust store (C,
E, Unified CM tomcat and callmanager) has lost a CA. Unfinished renewals are cancelled (a
documented way out) before the next run, and the lab is put back as it was before the clean
run (the C on its lab-CA certificate, every trust store without the CA's chain), so that every
run is a CA change that reaches every call site the clean one did, and every fault fires.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from tests.e2e.fault_layer import KINDS, FaultPlan, fault_layer
from tests.e2e.pipeline_env import Env, renewal_env

DOCS = Path(__file__).resolve().parents[2] / "docs" / "renewal.md"


def documented_statuses() -> set[str]:
    text = DOCS.read_text()
    ways_out = text[text.index("## Ways out") :]
    found = set(re.findall(r"^\| `([a-z]+)` \|", ways_out, re.M))
    assert found, "docs/renewal.md has no ways-out table"
    return found | {"done", "cancelled"}


def chain_problem(env: Env) -> str | None:
    """None when the C's served certificate chains, link by link, to a root the C trusts."""
    c = env.lab.expressway_c
    current = c.served_cert
    for sent in [*c._chain_for(current), None]:  # what the simulated box sends
        issuer = sent
        if issuer is None:
            roots = [r for r in c.trusted_cas if r.subject == current.issuer]
            if not roots:
                return f"no trusted root for {current.issuer.rfc4514_string()}"
            issuer = roots[0]
        try:
            current.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            return f"{current.subject.rfc4514_string()} not signed by its issuer ({exc})"
        if issuer.subject == issuer.issuer:
            return None
        current = issuer
    return None


def trust_snapshot(env: Env) -> dict[str, set[bytes]]:
    def ders(certs: list[x509.Certificate]) -> set[bytes]:
        return {c.public_bytes(Encoding.DER) for c in certs}

    lab = env.lab
    out = {"C": ders(lab.expressway_c.trusted_cas), "E": ders(lab.expressway_e.trusted_cas)}
    for store, certs in lab.cucm.trust.items():
        out[f"cucm {store}"] = ders(certs)
    return out


Saved = tuple[list[x509.Certificate], list[x509.Certificate], dict[str, list[x509.Certificate]], dict[str, list[x509.Certificate]]]  # fmt: skip


def save_trust(env: Env) -> Saved:
    """Copies of every lab trust store (C, E, Unified CM stored and in effect)."""
    lab = env.lab
    return (
        list(lab.expressway_c.trusted_cas),
        list(lab.expressway_e.trusted_cas),
        {s: list(v) for s, v in lab.cucm.trust.items()},
        {s: list(v) for s, v in lab.cucm.effective_trust.items()},
    )


def restore_trust(env: Env, saved: Saved) -> None:
    lab = env.lab
    c, e, stored, effective = saved
    lab.expressway_c.trusted_cas = list(c)
    lab.expressway_e.trusted_cas = list(e)
    lab.cucm.trust = {s: list(v) for s, v in stored.items()}
    lab.cucm.effective_trust = {s: list(v) for s, v in effective.items()}


async def renew_once(env: Env, reason: str) -> str:
    row = await env.pipeline.start("expe-c1", reason)
    row = await env.pipeline.run(row.id)
    status = row.status
    if row.active:
        await env.pipeline.cancel(row.id, "fault-injection test")
    return status


@pytest.mark.timeout(540)
async def test_every_call_site_and_fault_ends_documented_and_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    documented = documented_statuses()
    plan = FaultPlan()
    with fault_layer(monkeypatch, plan):
        async with renewal_env(tmp_path) as env:
            c = env.lab.expressway_c
            original = c.active  # the lab CA's certificate and key
            pristine = save_trust(env)
            served = {c.served_cert}
            assert await renew_once(env, "clean run") == "done"
            served.add(env.lab.expressway_c.served_cert)
            sites = sorted(plan.seen)
            print(f"call sites: {sites}", flush=True)
            # the renewal talks to the C, the E, Unified CM and the CA
            assert {s.split(".")[0] for s in sites} == {
                "ExpresswayClient",
                "CucmClient",
                "ESTConnector",
            }, sites
            outcomes: dict[tuple[str, str], str] = {}
            problems: list[str] = []
            fired: set[tuple[str, str]] = set()
            for site in sites:
                for kind in KINDS:
                    # Back to the lab as the clean run found it: the lab CA's certificate and
                    # no trust store holding the CA's chain, so every run is a CA change that
                    # adds the chain everywhere, like the clean one did.
                    c.install_now(original.cert, original.key)
                    restore_trust(env, pristine)
                    before = trust_snapshot(env)
                    plan.site, plan.kind, plan.fired = site, kind, 0
                    status = await renew_once(env, f"fault {kind} at {site}")
                    outcomes[(site, kind)] = status
                    if plan.fired:
                        fired.add((site, kind))
                    print(f"  {site} {kind}: {status} (fired: {plan.fired})", flush=True)
                    plan.site = None
                    cert = env.lab.expressway_c.served_cert
                    issued_by_ca = cert.issuer == env.est.issuing.cert.subject
                    if status not in documented:
                        problems.append(f"{site} {kind}: undocumented status {status!r}")
                    if cert not in served and not issued_by_ca:
                        problems.append(f"{site} {kind}: serves an unknown certificate")
                    served.add(cert)
                    if (why := chain_problem(env)) is not None:
                        problems.append(f"{site} {kind}: served chain broken: {why}")
                    after = trust_snapshot(env)
                    for store, cas in before.items():
                        if lost := cas - after.get(store, set()):
                            problems.append(f"{site} {kind}: {store} lost {len(lost)} CA(s)")
            print(
                f"fault injection: {len(sites)} call sites x {len(KINDS)} faults = "
                f"{len(outcomes)} renewals, {len(fired)} with the fault fired; statuses: "
                f"{sorted(set(outcomes.values()))}; problems: {len(problems)}"
            )
            assert not problems, "\n".join(problems)
            assert len(outcomes) == len(sites) * len(KINDS)
            # every run starts from the clean run's starting point, so every fault fires
            assert fired == set(outcomes), sorted(set(outcomes) - fired)
