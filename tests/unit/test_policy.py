"""Renewal policy as a table of named cases, each with a real certificate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from expressway_certd.monitor.durations import Fraction
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.monitor.policy import PolicyInput, Reason, evaluate, renew_before_of

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
D = timedelta(days=1)

CASES = [
    # name, lifetime days, days left, extra input, due, reason
    ("90d cert, 60 left: not due (1/3 = 30d)", 90, 60, {}, False, Reason.NOT_DUE),
    ("90d cert, 29 left: due", 90, 29, {}, True, Reason.RENEW_BEFORE),
    ("1y cert, 130 left: due (1/3 = 121d)", 365, 120, {}, True, Reason.RENEW_BEFORE),
    ("1y cert, 130 left: not due", 365, 130, {}, False, Reason.NOT_DUE),
    ("30d cert: floor of 14 days", 30, 15, {}, False, Reason.NOT_DUE),
    ("30d cert, 13 left: due by the floor", 30, 13, {}, True, Reason.RENEW_BEFORE),
    ("duration renew_before", 365, 40, {"renew_before": timedelta(days=45)}, True, Reason.RENEW_BEFORE),
    ("duration renew_before, not yet", 365, 50, {"renew_before": timedelta(days=45)}, False, Reason.NOT_DUE),
    ("expired", 90, -1, {}, True, Reason.EXPIRED),
    ("manual request wins", 365, 300, {"manual_request": True}, True, Reason.MANUAL),
    ("served differs from installed", 365, 300, {"installed_sha256": "00" * 32}, True, Reason.SERVED_DIFFERS),
    (
        "ARI window open",
        90, 50, {"ari_window": (NOW - D, NOW + D)}, True, Reason.ARI_WINDOW,
    ),
    (
        "ARI window later beats renew_before",
        90, 20, {"ari_window": (NOW + 2 * D, NOW + 3 * D)}, False, Reason.NOT_DUE,
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("lifetime", "days_left", "extra", "due", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_policy(make_cert, lifetime, days_left, extra, due, reason):
    not_after = NOW + timedelta(days=days_left)
    facts = facts_from_x509(
        make_cert(not_after=not_after, not_before=not_after - timedelta(days=lifetime))
    )
    decision = evaluate(PolicyInput(now=NOW, served=facts, **extra))
    assert (decision.due, decision.reason) == (due, reason), decision.message


def test_no_certificate_is_due():
    decision = evaluate(PolicyInput(now=NOW, served=None))
    assert decision.due and decision.reason == Reason.NO_CERTIFICATE


def test_jitter_moves_renewal_earlier_never_later(make_cert):
    not_after = NOW + timedelta(days=60)
    facts = facts_from_x509(make_cert(not_after=not_after, not_before=not_after - 90 * D))
    plain = evaluate(PolicyInput(now=NOW, served=facts)).renew_at
    jittered = evaluate(PolicyInput(now=NOW, served=facts, jitter=1.0)).renew_at
    assert plain is not None and jittered is not None
    assert plain == not_after - 30 * D
    assert plain - 3 * D <= jittered < plain


def test_renew_before_never_exceeds_lifetime(make_cert):
    not_after = NOW + 5 * D
    facts = facts_from_x509(make_cert(not_after=not_after, not_before=not_after - 7 * D))
    assert renew_before_of(facts, Fraction(1, 3)) == 7 * D
