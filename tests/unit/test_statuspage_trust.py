"""The status page's trust map section from a trust map document (monitor/statuspage.py): bad
entries are skipped, not trusted; every value is escaped; worst relations first."""

from __future__ import annotations

from datetime import UTC, datetime

from expressway_certd.monitor.statuspage import PageView, render_page, trust_view

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_bad_entries_are_skipped_and_naive_times_ignored():
    view = trust_view(
        {
            "generated_at": "2026-12-03T12:00:00",  # no zone: not shown as a time
            "earliest_break": "not a time",
            "relations": ["x", 3, {"from": "a", "to": "b", "status": "unknown"}, None],
        }
    )
    assert view.generated_at is None and view.earliest_break is None
    assert [(r.presenter, r.verifier, r.status) for r in view.relations] == [("a", "b", "unknown")]
    assert trust_view({"relations": "nope"}).relations == ()


def test_worst_first_escaped_and_ok_only_counted():
    doc = {
        "generated_at": NOW.isoformat(),
        "earliest_break": NOW.isoformat(),
        "relations": [
            {"from": "c", "to": "u", "relation": "sip-tls", "store": "callmanager",
             "status": "unknown", "reason": "u was not read"},
            {"from": "e", "to": "c", "relation": "traversal", "store": "trusted-ca",
             "status": "will break", "reason": "<b>root</b> expires",
             "breaks_at": "2027-01-01T00:00:00+00:00"},
            {"from": "c", "to": "e", "relation": "traversal", "store": "trusted-ca",
             "status": "broken", "reason": "no anchor", "breaks_at": NOW.isoformat()},
            {"from": "c", "to": "u", "relation": "https", "store": "tomcat", "status": "ok"},
        ],
    }  # fmt: skip
    page = render_page(PageView(NOW, (), (), trust=trust_view(doc)))
    section = page[page.index("<h2>Trust map</h2>") :]
    assert "Earliest break: <b>2026-12-03 12:00 UTC</b>" in section
    assert section.index("broken") < section.index("will break") < section.index("u was not read")
    assert "&lt;b&gt;root&lt;/b&gt; expires" in section and "<b>root</b>" not in section
    assert "1 of 4 relations are ok" in section
    assert "tomcat" not in section


def test_all_ok_says_so():
    doc = {"relations": [{"from": "c", "to": "e", "status": "ok"}], "earliest_break": None}
    page = render_page(PageView(NOW, (), (), trust=trust_view(doc)))
    assert "Nothing will break." in page and "All 1 relations are ok." in page


def test_the_x15_5_client_certificate_is_named_as_what_presents():
    doc = {
        "relations": [
            {"from": "expe-c1", "to": "expe-e1", "relation": "traversal", "store": "trusted-ca",
             "presenter_cert": "client", "status": "broken", "reason": "client certificate: x"},
            {"from": "expe-e1", "to": "expe-c1", "relation": "traversal", "store": "trusted-ca",
             "presenter_cert": "server", "status": "unknown", "reason": "y"},
        ],
    }  # fmt: skip
    page = render_page(PageView(NOW, (), (), trust=trust_view(doc)))
    assert "<tr><td>expe-c1 (client cert)</td><td>expe-e1</td>" in page
    assert "<tr><td>expe-e1</td><td>expe-c1</td>" in page  # the server certificate: the name
