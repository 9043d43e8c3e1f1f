"""Trust map metrics: the exposition of a trust-map document, parsed back by prometheus_client."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from expressway_certd.alerts.trust import TRUST_MAP_STATE, exposition, render

GENERATED = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
BREAK = datetime(2027, 1, 2, tzinfo=UTC)


def rel(frm: str, to: str, relation: str, status: str, breaks_at: datetime | None = None):
    return {
        "from": frm,
        "to": to,
        "relation": relation,
        "store": "x",
        "status": status,
        "reason": "",
        "breaks_at": breaks_at.isoformat() if breaks_at else None,
    }


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_statuses_become_ok_and_break_times():
    doc = {
        "generated_at": GENERATED.isoformat(),
        "relations": [
            rel("expe-c1", "expe-e1", "traversal", "broken", GENERATED),
            rel("expe-e1", "expe-c1", "traversal", "will break", BREAK),
            rel("expe-c1", "cucm1/n1", "sip-tls", "ok"),
            rel("expe-c1", "cucm1/n2", "sip-tls", "unknown"),
        ],
    }
    got = samples(render(doc))
    key = lambda f, t, r: (("from", f), ("relation", r), ("to", t))  # noqa: E731
    assert got == {
        ("expressway_trust_relation_ok", key("expe-c1", "expe-e1", "traversal")): 0.0,
        ("expressway_trust_relation_ok", key("expe-e1", "expe-c1", "traversal")): 1.0,
        ("expressway_trust_relation_ok", key("expe-c1", "cucm1/n1", "sip-tls")): 1.0,
        (
            "expressway_trust_relation_break_timestamp_seconds",
            key("expe-c1", "expe-e1", "traversal"),
        ): GENERATED.timestamp(),
        (
            "expressway_trust_relation_break_timestamp_seconds",
            key("expe-e1", "expe-c1", "traversal"),
        ): BREAK.timestamp(),
        ("expressway_trust_map_generated_timestamp_seconds", ()): GENERATED.timestamp(),
    }


def test_hostile_names_stay_inside_their_label(tmp_path):
    doc = {"relations": [rel('evil"\n} 1', "e", "traversal", "ok")]}
    got = samples(render(doc))
    ((_name, labels),) = got
    assert dict(labels)["from"] == 'evil"\n} 1'


def test_no_file_or_a_bad_file_exports_nothing(tmp_path):
    assert exposition(tmp_path) == ""
    (tmp_path / TRUST_MAP_STATE).write_text("{not json")
    assert exposition(tmp_path) == ""
    (tmp_path / TRUST_MAP_STATE).write_text(
        json.dumps({"relations": [rel("a", "b", "https", "ok")]})
    )
    assert "expressway_trust_relation_ok{" in exposition(tmp_path)
