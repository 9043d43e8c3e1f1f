"""The state collector: series come from current state and vanish with it."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from expressway_certd.alerts.metrics import CERT_KIND_FAMILIES, StateExposition
from expressway_certd.monitor.config import Endpoint, ExpresswayConfig
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.monitor.lint import LintFinding
from expressway_certd.monitor.watch import EndpointState


def state(target: str, port: int, facts=None, ok: bool = True) -> EndpointState:
    now = datetime.now(UTC)
    return EndpointState(
        target=target, endpoint=Endpoint("10.0.0.1", port, "mra"), observed_at=now, ok=ok,
        error_class=None if ok else "timeout", error=None, duration=0.012, tls_version="TLSv1.3",
        ok_observed_at=now if facts else None, facts=facts, chain_verified=bool(facts),
        last_change_at=now if facts else None,
        eku_problem="missing clientAuth" if target == "bad-eku" else None,
    )  # fmt: skip


def render(states, targets) -> str:
    return StateExposition(lambda: states, lambda: targets, "1.2.3").render()


def test_series_follow_state_and_config(make_cert):
    facts = facts_from_x509(make_cert("expe.example.com", ["expe.example.com"]))
    targets = [
        ExpresswayConfig("expe", "expe.example.com", "e", (), cluster="edge.example.com"),
        ExpresswayConfig("bad-eku", "b.example.com", "c", ()),
    ]
    states = {
        ("expe", "10.0.0.1", 8443): state("expe", 8443, facts),
        ("expe", "10.0.0.1", 7001): state("expe", 7001, None, ok=False),
        ("bad-eku", "10.0.0.1", 443): state("bad-eku", 443, facts),
        ("gone", "10.0.0.1", 443): state("gone", 443, facts),  # no longer configured
    }
    text = render(states, targets)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }

    def value(name: str, target: str, port: int) -> float | None:
        labels = {"host": "10.0.0.1", "port": str(port), "service": "mra", "target": target}
        if name in CERT_KIND_FAMILIES:
            labels["cert_kind"] = "server"  # what an endpoint serves
        return samples.get((name, tuple(sorted(labels.items()))))

    assert value("expressway_cert_not_after_timestamp_seconds", "expe", 8443) == pytest.approx(
        facts.not_after.timestamp()
    )
    assert value("expressway_probe_success", "expe", 8443) == 1.0
    assert value("expressway_cert_chain_ok", "expe", 8443) == 1.0
    assert value("expressway_probe_duration_seconds", "expe", 8443) == pytest.approx(0.012)
    # a failing endpoint that never served a cert: probe series only
    assert value("expressway_probe_success", "expe", 7001) == 0.0
    assert value("expressway_cert_not_after_timestamp_seconds", "expe", 7001) is None
    assert value("expressway_cert_eku_ok", "bad-eku", 443) == 0.0
    assert value("expressway_cert_eku_ok", "expe", 8443) == 1.0
    assert f'sha256="{facts.sha256}"' in text and 'cluster="edge.example.com"' in text
    assert 'target="gone"' not in text
    assert 'expressway_certd_build_info{version="1.2.3"} 1.0' in text

    del states[("expe", "10.0.0.1", 8443)]
    assert 'port="8443"' not in render(states, targets)


def test_label_values_are_escaped(make_cert):
    facts = facts_from_x509(make_cert("expe.example.com", ["expe.example.com"]))
    odd = dataclasses.replace(facts, subject='CN=a "quoted" \\ name\nline')
    targets = [ExpresswayConfig("expe", "expe.example.com", "e", ())]
    text = render({("expe", "10.0.0.1", 443): state("expe", 443, odd)}, targets)
    (info,) = [
        s for fam in text_string_to_metric_families(text) for s in fam.samples
        if s.name == "expressway_cert_info"
    ]  # fmt: skip
    assert info.labels["subject"] == odd.subject


def test_lint_findings_are_one_series_each(make_cert):
    facts = facts_from_x509(make_cert("expe.example.com", ["expe.example.com"]))
    targets = [ExpresswayConfig("expe", "expe.example.com", "e", ())]
    findings = (
        LintFinding("ca_without_key_usage", "CN=Root", "no keyUsage"),
        LintFinding("ca_without_key_usage", "CN=Issuing", "no keyUsage"),  # same finding twice
        LintFinding("legacy_tls_version", "", "TLSv1"),
    )
    linted = dataclasses.replace(state("expe", 443, facts), lint=findings)
    clean = state("expe", 8443, facts)
    text = render({("expe", "10.0.0.1", 443): linted, ("expe", "10.0.0.1", 8443): clean}, targets)
    series = [
        (s.labels["port"], s.labels["finding"], s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "expressway_cert_lint_finding"
    ]
    assert sorted(series) == [
        ("443", "ca_without_key_usage", 1.0),
        ("443", "legacy_tls_version", 1.0),
    ]


def test_every_metric_the_code_names_is_in_the_metric_reference() -> None:
    """Metric names are an interface: each `expressway_...` name the product's code writes
    (collectors, counters, histograms) has its row in docs/metrics.md (a counter under its
    exposed `_total` name)."""
    root = Path(__file__).resolve().parents[2]
    reference = (root / "docs" / "metrics.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`(expressway_[a-z0-9_]+)", reference))
    named: dict[str, str] = {}
    for package in ("expressway_certd", "monitor", "renewers", "alerts"):
        for path in sorted((root / package).rglob("*.py")):
            for name in re.findall(
                r"[\"'](expressway_(?!certd_lab)[a-z0-9_]+)[\"']", path.read_text("utf-8")
            ):
                named.setdefault(name, str(path.relative_to(root)))
    assert len(named) > 20  # the scan sees the metrics
    missing = {
        name: where
        for name, where in named.items()
        if name not in documented and f"{name}_total" not in documented
    }
    assert not missing, f"not in docs/metrics.md: {missing}"
