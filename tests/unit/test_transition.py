"""The renewal's state transitions (renewers/pipeline.py `transition`), as a table: for a
renewal at a stage in a status, what a stage outcome makes of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from expressway_certd.monitor.store import RenewalRow
from expressway_certd.renewers.pipeline import (
    STAGES,
    Advance,
    Blocked,
    Failed,
    Wait,
    stage_event,
    transition,
    ways_out,
)

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


def row(stage: str, status: str = "running", attempts: int = 0) -> RenewalRow:
    return RenewalRow(
        id="r1", target="e1", status=status, stage=stage, reason="t", created_at=NOW,
        updated_at=NOW - timedelta(hours=1), next_at=None, attempts=attempts, message="",
        data={},
    )  # fmt: skip


# (name, stage, status, attempts, outcome) -> (status, stage, next_at, attempts, result, event)
CASES = [
    ("advance to the next stage", "csr", "running", 2, Advance("ok"),
     ("running", "submit", None, 0, "advance", "StageSucceeded")),
    ("advance after a retry resets attempts", "submit", "failed", 3, Advance("ok"),
     ("running", "issued", None, 0, "advance", "StageSucceeded")),
    ("the last stage finishes", "verify", "running", 0, Advance("ok"),
     ("done", "verify", None, 0, "advance", "StageSucceeded")),
    ("a wait begins", "issued", "running", 0, Wait(LATER, "CA pending"),
     ("waiting", "issued", LATER, 1, "wait", "StageWaiting")),
    ("a wait goes on quietly", "issued", "waiting", 1, Wait(LATER, "CA pending"),
     ("waiting", "issued", LATER, 2, "wait", None)),
    ("approval is requested", "approve", "running", 0, Wait(LATER, "manual", approval=True),
     ("waiting", "approve", LATER, 1, "wait", "ApprovalRequired")),
    ("blocked stays at its stage", "validate", "running", 0, Blocked("bad SANs"),
     ("blocked", "validate", None, 1, "blocked", "RenewalBlocked")),
    ("failed retries at its time", "snapshot", "running", 0, Failed("503", LATER),
     ("failed", "snapshot", LATER, 1, "failed", "StageFailed")),
]  # fmt: skip


@pytest.mark.parametrize(("name", "stage", "status", "attempts", "outcome", "expected"), CASES)
def test_transition(name, stage, status, attempts, outcome, expected):
    before = row(stage, status, attempts)
    new, result, message = transition(before, outcome, NOW, {"k": "v"})
    event = stage_event(before, new, outcome, NOW)
    got = (new.status, new.stage, new.next_at, new.attempts, result,
           event.type if event else None)  # fmt: skip
    assert got == expected, name
    assert new.updated_at == NOW and new.data == {"k": "v"} and new.id == before.id
    assert message == new.message


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(
    "outcome", [Advance("ok"), Wait(LATER, "w"), Blocked("b"), Failed("f", LATER)]
)
def test_every_reachable_state_is_finished_or_has_a_way_out(stage, outcome):
    new, _, _ = transition(row(stage), outcome, NOW, {})
    assert new.status == "done" or ways_out(new), (stage, outcome)
