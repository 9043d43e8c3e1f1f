"""What a stage returns (Advance, Wait, Blocked, Failed) and what becomes of the renewal: the
pure `transition` table (docs/renewal.md, "Outcomes"; tests/unit/test_transition.py) and
the event that announces a stage's outcome."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from expressway_certd.monitor.events import (
    ApprovalRequired,
    Event,
    RenewalBlocked,
    StageFailed,
    StageSucceeded,
    StageWaiting,
)
from expressway_certd.monitor.store import RenewalRow
from expressway_certd.renewers.pipeline.record import RenewalRecord

STAGES = (
    "snapshot",
    "preflight",
    "csr",
    "submit",
    "issued",
    "validate",
    "trust",
    "approve",
    "ucm-restart",
    "install",
    "restart",
    "verify",
)

RETRY_BACKOFF = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
)


class OutcomeReason(StrEnum):
    """Why a stage blocked or failed, as a code (the prose in `why` says what to do)."""

    PREFLIGHT_REFUSED = "preflight-refused"  # the CA cannot deliver what the box needs
    CSR_PENDING_MISMATCH = "csr-pending-mismatch"  # a CSR for other names is pending
    NO_TRUST_ANCHOR = "no-trust-anchor"  # nothing configured to verify the chain against
    VALIDATE_REFUSED = "validate-refused"  # the issued certificate fails a check
    CA_NOT_PINNED = "ca-not-pinned"  # a new CA without a path to a pinned root
    VERIFY_TIMEOUT = "verify-timeout"  # after installing, not served or zones not Active
    UPLOAD_NOT_SHOWN = "upload-not-shown"  # the box accepted but does not show the upload
    RESTART_NOT_SERVING = "restart-not-serving"  # restarted, the old certificate still served
    CA_REFUSED = "ca-refused"  # the CA refused the request; retrying cannot help
    CA_UNAVAILABLE = "ca-unavailable"  # the CA failed; retried with backoff
    DEVICE_REFUSED = "device-refused"  # the box cannot do it (API lacks it, EKU refused, ...)
    DEVICE_UNAVAILABLE = "device-unavailable"  # the box failed; retried with backoff
    NETWORK = "network"  # a connection or timeout error; retried with backoff
    OPERATOR_ACTION = "operator-action"  # any other deliberate refusal of the project
    UNEXPECTED = "unexpected"  # a bug or an unforeseen answer; traceback in the log


@dataclass(frozen=True)
class Advance:
    detail: str = ""


@dataclass(frozen=True)
class Wait:
    until: datetime
    why: str
    approval: bool = False  # waiting for an operator's `approve`


@dataclass(frozen=True)
class Blocked:
    why: str  # what the operator must do
    reason: OutcomeReason = OutcomeReason.OPERATOR_ACTION


@dataclass(frozen=True)
class Failed:
    why: str
    retry_at: datetime
    reason: OutcomeReason = OutcomeReason.UNEXPECTED


Outcome = Advance | Wait | Blocked | Failed


def transition(
    row: RenewalRow, outcome: Outcome, now: datetime, data: dict[str, Any]
) -> tuple[RenewalRow, str, str]:
    """The renewal after a stage's outcome, with the step's result and message. Pure: the
    table of docs/renewal.md ("Outcomes"), tested as a table in tests/unit/test_transition.py."""
    stage = row.stage
    if isinstance(outcome, Advance):
        index = STAGES.index(stage)
        done = index == len(STAGES) - 1
        new = dataclasses.replace(
            row, status="done" if done else "running",
            stage=stage if done else STAGES[index + 1], attempts=0, next_at=None,
            message=outcome.detail, data=data, updated_at=now,
        )  # fmt: skip
        return new, "advance", outcome.detail
    if isinstance(outcome, Wait):
        new = dataclasses.replace(
            row, status="waiting", next_at=outcome.until, message=outcome.why, data=data,
            updated_at=now, attempts=row.attempts + 1,
        )  # fmt: skip
        return new, "wait", outcome.why
    if isinstance(outcome, Blocked):
        new = dataclasses.replace(
            row, status="blocked", next_at=None, message=outcome.why, data=data,
            updated_at=now, attempts=row.attempts + 1,
        )  # fmt: skip
        return new, "blocked", outcome.why
    new = dataclasses.replace(
        row, status="failed", next_at=outcome.retry_at, message=outcome.why, data=data,
        updated_at=now, attempts=row.attempts + 1,
    )  # fmt: skip
    return new, "failed", outcome.why


def stage_event(row: RenewalRow, new: RenewalRow, outcome: Outcome, now: datetime) -> Event | None:
    """The event announcing a stage's outcome (None: a wait that goes on is not news); a
    Blocked or Failed outcome's reason code goes into the event as `reason`."""
    common = {"target": row.target, "renewal_id": row.id, "stage": row.stage}
    if isinstance(outcome, Advance):
        return StageSucceeded(time=now, detail=outcome.detail, **common)
    if isinstance(outcome, Wait):
        if row.status == "waiting":
            return None  # announced when the wait began
        if outcome.approval:
            record = RenewalRecord.from_data(new.data)
            new_cas = (record.trust_cas or ()) if record.ca_changed else ()
            return ApprovalRequired(
                time=now, why=outcome.why,
                new_ca_sha256=tuple(c.sha256 for c in new_cas), **common,
            )  # fmt: skip
        return StageWaiting(time=now, until=outcome.until.isoformat(), why=outcome.why, **common)
    if isinstance(outcome, Blocked):
        return RenewalBlocked(time=now, why=outcome.why, reason=outcome.reason.value, **common)
    return StageFailed(
        time=now, why=outcome.why, retry_at=outcome.retry_at.isoformat(),
        reason=outcome.reason.value, **common,
    )  # fmt: skip
