"""The renewal backlog per CA (monitor/backlog.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from expressway_certd.alerts.metrics import BacklogCollector
from expressway_certd.monitor.backlog import backlog
from expressway_certd.monitor.store import EndpointRow, RenewalRow

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def renewal(target: str, stage: str) -> RenewalRow:
    return RenewalRow(
        id=f"r-{target}", target=target, status="running", stage=stage, reason="t",
        created_at=NOW, updated_at=NOW, next_at=None, attempts=0, message="", data={},
    )  # fmt: skip


def endpoint(target: str, port: int, not_after: datetime | None) -> EndpointRow:
    return EndpointRow(
        target=target, host=f"{target}.example.com", port=port, service="https",
        observed_at=NOW, ok=True, error_class=None, error=None, duration=0.1,
        tls_version="TLSv1.3", ok_observed_at=NOW, sha256="aa", not_after=not_after,
        chain_pem=None, chain_verified=True, verify_error=None, last_change_at=NOW,
    )  # fmt: skip


def test_a_fleet_issued_on_one_day_against_a_limited_ca():
    targets = [f"e{i}" for i in range(1000)]
    active = [renewal(t, "submit" if i % 2 else "csr") for i, t in enumerate(targets)]
    active.append(renewal("done-ordering", "issued"))  # already ordered: not in the backlog
    ends = [endpoint(t, 443, NOW + timedelta(days=20, hours=i)) for i, t in enumerate(targets)]
    ends.append(endpoint("e7", 8443, NOW + timedelta(days=3)))  # the earliest, on another port
    out = backlog(
        active,
        {**{t: "corp" for t in targets}, "done-ordering": "corp"},
        {"corp": 10, "idle-ca": 0},
        ends,
        NOW,
    )
    assert out["corp"].waiting == 1000
    assert out["corp"].clears_at == NOW + timedelta(hours=100)  # 1000 orders at 10 per hour
    assert out["corp"].earliest_expiry == NOW + timedelta(days=3)
    assert out["idle-ca"].waiting == 0 and out["idle-ca"].clears_at == NOW
    assert out["idle-ca"].earliest_expiry is None


def test_without_a_per_hour_limit_the_backlog_clears_now():
    out = backlog([renewal("e1", "snapshot")], {"e1": "acme"}, {"acme": 0}, [], NOW)
    assert out["acme"].waiting == 1 and out["acme"].clears_at == NOW


def test_the_collector_exports_every_ca():
    registry = CollectorRegistry(auto_describe=False)
    out = backlog([renewal("e1", "csr")], {"e1": "corp"}, {"corp": 4, "acme": 0}, [
        endpoint("e1", 443, NOW + timedelta(days=2))
    ], NOW)  # fmt: skip
    registry.register(BacklogCollector(lambda: out))
    samples = {
        (sample.name, sample.labels["ca"]): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    assert samples[("expressway_renewal_backlog", "corp")] == 1
    assert samples[("expressway_renewal_backlog", "acme")] == 0
    clears = (NOW + timedelta(minutes=15)).timestamp()  # one order at 4 per hour
    assert samples[("expressway_renewal_backlog_clear_timestamp_seconds", "corp")] == clears
    expiry = (NOW + timedelta(days=2)).timestamp()
    name = "expressway_renewal_backlog_earliest_expiry_timestamp_seconds"
    assert samples[(name, "corp")] == expiry
    assert (name, "acme") not in samples  # an empty backlog has no earliest expiry
