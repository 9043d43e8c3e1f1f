"""Deadline risk estimator as a table, with real maintenance windows (cron)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from monitor.config import MaintenanceWindow
from monitor.store import StepRow
from renewers.deadline import (
    FACTOR_APPROVAL,
    FACTOR_CA,
    FACTOR_WINDOW,
    DeadlineInputs,
    estimate,
    p90,
    past_durations,
)
from renewers.maintenance import next_window_start

MONDAY = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # a Monday
SUNDAY_2AM = MaintenanceWindow(cron="0 2 * * 0", timezone="UTC", duration=timedelta(hours=2))
DAILY_2AM = MaintenanceWindow(cron="0 2 * * *", timezone="UTC", duration=timedelta(hours=2))
D = timedelta(days=1)


def window(w: MaintenanceWindow):
    return partial(next_window_start, w)


def test_weekly_window_with_approval_and_nine_days_left_is_at_risk_and_says_why():
    inputs = DeadlineInputs(
        "expe-c1",
        not_after=MONDAY + 9 * D,
        ca_kind="adcs",
        approval_required=True,
        next_window=window(SUNDAY_2AM),
    )
    got = estimate(inputs, MONDAY)
    # CA 10 min + approval 2 d (default) -> Wednesday 10:10; the window opens Sunday 02:00.
    assert got.earliest_completion == datetime(2026, 12, 6, 2, 15, tzinfo=UTC)
    assert got.margin == MONDAY + 9 * D - got.earliest_completion
    assert got.at_risk()
    assert got.dominating == FACTOR_WINDOW
    assert "dominated by maintenance window" in got.explanation()
    assert "approval 2.0 d" in got.explanation()


CASES = [
    # name, ca kind, approval?, past approvals (days), past issuances (h), window, days left, risk, dominating
    ("auto, daily window, ACME", "acme", False, [], [], DAILY_2AM, 30, False, FACTOR_WINDOW),
    (
        "slow approvers dominate",
        "est",
        True,
        [1, 2, 5, 4, 1, 1, 2, 1, 1, 6],
        [],
        DAILY_2AM,
        10,
        True,
        FACTOR_APPROVAL,
    ),
    ("manual CA default 3 d", "manual", False, [], [], None, 8, True, FACTOR_CA),
    ("manual CA observed fast", "manual", False, [], [1, 2, 1], None, 8, False, FACTOR_CA),
    ("plenty of time", "adcs", True, [], [], SUNDAY_2AM, 60, False, FACTOR_WINDOW),
    ("already too late", "adcs", True, [], [], SUNDAY_2AM, 3, True, FACTOR_WINDOW),
]


@pytest.mark.parametrize(
    ("name", "kind", "approval", "approvals", "issuances", "win", "days", "risk", "dominating"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_table(name, kind, approval, approvals, issuances, win, days, risk, dominating):
    inputs = DeadlineInputs(
        "expe-e1",
        not_after=MONDAY + days * D,
        ca_kind=kind,
        approval_required=approval,
        past_approvals=[a * D for a in approvals],
        past_issuances=[timedelta(hours=h) for h in issuances],
        next_window=window(win) if win else None,
    )
    got = estimate(inputs, MONDAY)
    assert got.at_risk() is risk
    assert got.dominating == dominating
    assert got.earliest_completion > MONDAY


def test_slow_approvers_use_their_p90():
    approvals = [a * D for a in (1, 2, 5, 4, 1, 1, 2, 1, 1, 6)]
    assert p90(approvals) == 5 * D
    got = estimate(
        DeadlineInputs("x", MONDAY + 30 * D, "est", True, approvals, next_window=None), MONDAY
    )
    assert dict(got.factors)[FACTOR_APPROVAL] == 5 * D
    assert p90([]) is None
    assert p90([3 * D]) == 3 * D


def test_inside_a_window_no_wait():
    inside = datetime(2026, 12, 6, 2, 30, tzinfo=UTC) - timedelta(minutes=10)
    got = estimate(
        DeadlineInputs("x", inside + 30 * D, "acme", False, next_window=window(SUNDAY_2AM)), inside
    )
    assert dict(got.factors)[FACTOR_WINDOW] == timedelta(0)


def step(stage, result, minutes, seconds=0.0):
    return StepRow("r1", stage, result, MONDAY + timedelta(minutes=minutes), seconds, "")


@pytest.mark.parametrize(
    ("steps", "approval", "issuance"),
    [
        (
            [
                step("submit", "wait", 0, 2),
                step("issued", "wait", 60),
                step("issued", "advance", 90),
                step("approve", "wait", 100),
                step("approve", "advance", 100 + 36 * 60),
            ],
            timedelta(hours=36),
            timedelta(minutes=90, seconds=2),
        ),
        # automatic approval: no wait, says nothing about approvers
        (
            [
                step("submit", "advance", 0),
                step("issued", "advance", 1),
                step("approve", "advance", 2),
            ],
            None,
            timedelta(minutes=1),
        ),
        # still waiting for the CA and the approver
        ([step("submit", "wait", 0), step("issued", "wait", 5)], None, None),
    ],
)
def test_past_durations_from_steps(steps, approval, issuance):
    assert past_durations(list(reversed(steps))) == (approval, issuance)
