"""expressway_renewal_installed_info is about the served (server) certificate: a target whose
latest renewal renewed the X15.5 client certificate exports none, since no endpoint serves
that certificate and alert ExpresswayRestartPending would read it as a pending restart."""

from __future__ import annotations

from datetime import UTC, datetime

from expressway_certd.alerts.metrics import RenewalCollector
from expressway_certd.config import load_config
from expressway_certd.monitor.store import RenewalRow

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def installed_samples(tmp_path, data: dict[str, object]) -> list[dict[str, str]]:
    path = tmp_path / "c.toml"
    path.write_text(
        f'[daemon]\nstate = "{tmp_path / "s.db"}"\n'
        '[[expressway]]\nname = "c1"\naddress = "c1.example.com"\nrenewal = { ca = "m" }\n'
        '[ca.m]\nkind = "manual"\n'
    )
    cfg = load_config(path)
    row = RenewalRow(
        id="r1", target="c1", status="done", stage="verify", reason="t", created_at=NOW,
        updated_at=NOW, next_at=None, attempts=0, message="", data=data,
    )  # fmt: skip
    collector = RenewalCollector(lambda: cfg.expressways, lambda: {"c1": row}, dict, dict)
    (family,) = [m for m in collector.collect() if m.name == "expressway_renewal_installed_info"]
    return [s.labels for s in family.samples]


def test_a_server_renewal_exports_what_it_installed(tmp_path):
    assert installed_samples(tmp_path, {"installed_sha256": "ab" * 32}) == [
        {"target": "c1", "sha256": "ab" * 32}
    ]


def test_a_client_renewal_exports_no_installed_server_certificate(tmp_path):
    assert installed_samples(tmp_path, {"installed_sha256": "ab" * 32, "kind": "client"}) == []
