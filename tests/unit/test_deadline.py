"""Deadline risk estimator as a table, with real maintenance windows (cron)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from expressway_certd.monitor.config import (
    ExpresswayConfig,
    MaintenanceWindow,
    RenewalConfig,
    Secret,
    UnifiedCMConfig,
)
from expressway_certd.monitor.store import StepRow
from expressway_certd.renewers.deadline import (
    DEFAULT_UCM_RESTART_PER_NODE,
    FACTOR_APPROVAL,
    FACTOR_CA,
    FACTOR_UCM_RESTART,
    FACTOR_UCM_WINDOW,
    FACTOR_WINDOW,
    DeadlineInputs,
    estimate,
    inputs_for,
    p90,
    past_durations,
)
from expressway_certd.renewers.maintenance import next_window_start

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


# ---- Unified CM window (stage ucm-restart, before the box's install and restart) ----------

SUNDAY_3AM = MaintenanceWindow(cron="0 3 * * 0", timezone="UTC", duration=timedelta(hours=2))


def test_unified_cm_window_then_box_window_and_named_when_it_dominates():
    inputs = DeadlineInputs(
        "expe-c1",
        not_after=MONDAY + 30 * D,
        ca_kind="acme",
        approval_required=False,
        next_window=window(DAILY_2AM),
        ucm_restart=timedelta(minutes=20),
        ucm_window=window(SUNDAY_3AM),
    )
    got = estimate(inputs, MONDAY)
    # CA 10 min -> Monday 10:10; Unified CM window Sunday 03:00, its restarts until 03:20; the
    # box's daily window (02:00-04:00) is open then: its restart until 03:35. Without the
    # Unified CM stage the box would restart in Tuesday's window.
    assert got.earliest_completion == datetime(2026, 12, 6, 3, 35, tzinfo=UTC)
    assert got.dominating == FACTOR_UCM_WINDOW
    factors = dict(got.factors)
    assert factors[FACTOR_UCM_WINDOW] == datetime(2026, 12, 6, 3, tzinfo=UTC) - (
        MONDAY + timedelta(minutes=10)
    )
    assert factors[FACTOR_UCM_RESTART] == timedelta(minutes=20)
    assert factors[FACTOR_WINDOW] == timedelta(0)
    assert "dominated by unified cm window" in got.explanation()


def test_without_a_unified_cm_stage_nothing_changes():
    base = DeadlineInputs("expe-e1", MONDAY + 30 * D, "acme", False, next_window=window(DAILY_2AM))
    got = estimate(base, MONDAY)
    assert got.earliest_completion == datetime(2026, 12, 1, 2, 15, tzinfo=UTC)
    assert dict(got.factors)[FACTOR_UCM_WINDOW] == timedelta(0)


def _target(role: str, win: MaintenanceWindow | None) -> ExpresswayConfig:
    return ExpresswayConfig(
        "expe-c1", "expc1.example.com", role, (), unified_cm="cucm",
        renewal=RenewalConfig(ca="corp", maintenance_window=win),
    )  # fmt: skip


def _ucm(win: MaintenanceWindow | None) -> UnifiedCMConfig:
    return UnifiedCMConfig(
        "cucm", ("pub.example.com", "sub.example.com"), "admin", Secret("env:X"),
        maintenance_window=win,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("role", "ucm_window", "ucm_opens"),
    [
        ("c", SUNDAY_3AM, datetime(2026, 12, 6, 3, tzinfo=UTC)),  # the Unified CM's own
        ("c", None, datetime(2026, 12, 1, 2, tzinfo=UTC)),  # else the target's (daily)
        ("e", SUNDAY_3AM, None),  # an E changes no Unified CM trust
    ],
)
def test_inputs_for_takes_the_unified_cm_window(role, ucm_window, ucm_opens):
    inputs = inputs_for(_target(role, DAILY_2AM), MONDAY + 30 * D, "acme", [], [], _ucm(ucm_window))
    if ucm_opens is None:
        assert inputs.ucm_restart == timedelta(0) and inputs.ucm_window is None
        return
    assert inputs.ucm_restart == 2 * DEFAULT_UCM_RESTART_PER_NODE  # two nodes
    assert inputs.ucm_window is not None and inputs.ucm_window(MONDAY) == ucm_opens
