"""The reason code of a Blocked or Failed outcome (OutcomeReason) travels with its event:
`reason` in the payload of RenewalBlocked and StageFailed (audit log, API, notifiers) and on
the `renewal stage` log line (docs/renewal.md, "Outcomes")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import structlog

from expressway_certd.monitor.errors import DeviceError
from expressway_certd.monitor.events import Event, EventBus, RenewalBlocked, StageFailed
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import RenewalRow, Store
from expressway_certd.renewers.expressway import OperationUnsupported
from expressway_certd.renewers.pipeline import (
    Advance,
    Blocked,
    Failed,
    OutcomeReason,
    Pipeline,
    Wait,
    stage_event,
)
from tests.unit.fakes import FakeDevices, FakeExpressway
from tests.unit.test_pipeline_runner import config

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


def row(status: str = "running") -> RenewalRow:
    return RenewalRow(
        id="r1", target="e1", status=status, stage="validate", reason="t", created_at=NOW,
        updated_at=NOW, next_at=None, attempts=0, message="", data={},
    )  # fmt: skip


@pytest.mark.parametrize("reason", list(OutcomeReason))
def test_blocked_and_failed_events_carry_the_reason_code(reason):
    blocked = stage_event(row(), row("blocked"), Blocked("b", reason), NOW)
    failed = stage_event(row(), row("failed"), Failed("f", LATER, reason), NOW)
    assert isinstance(blocked, RenewalBlocked) and isinstance(failed, StageFailed)
    assert blocked.payload() == {"stage": "validate", "why": "b", "reason": reason.value}
    assert failed.payload() == {
        "stage": "validate", "why": "f", "retry_at": LATER.isoformat(), "reason": reason.value,
    }  # fmt: skip


@pytest.mark.parametrize("outcome", [Advance("ok"), Wait(LATER, "w")])
def test_other_events_have_no_reason(outcome):
    event = stage_event(row(), row(), outcome, NOW)
    assert event is not None and "reason" not in event.payload()


async def test_the_runner_publishes_logs_and_audits_the_reason(tmp_path):
    cfg = config(tmp_path)
    store = await Store.open(cfg.daemon.state)
    events: list[Event] = []
    bus = EventBus()

    async def record(event: Event) -> None:
        events.append(event)

    bus.subscribe(record)
    bus.subscribe(store.append_event)
    try:
        no_zones = OperationUnsupported("e1: read zone status: not in /api/raml")
        devices = FakeDevices(
            None,
            boxes={
                "e1": FakeExpressway(fail={"zones": no_zones}),
                "e2": DeviceError("e2: connection refused"),
            },
        )
        p = Pipeline(cfg, store, bus, Prober(TrustStore([])), {"portal": None}, devices=devices)
        e1, e2 = await p.start("e1", "t"), await p.start("e2", "t")
        with structlog.testing.capture_logs() as logs:
            await p.run(e1.id)
            await p.run(e2.id)
        published = {
            e.renewal_id: (e.type, e.reason)
            for e in events
            if isinstance(e, RenewalBlocked | StageFailed)
        }
        assert published == {
            e1.id: ("RenewalBlocked", "device-refused"),
            e2.id: ("StageFailed", "device-unavailable"),
        }
        audited = await store.events(types=["RenewalBlocked", "StageFailed"])
        assert {a.renewal_id: a.payload["reason"] for a in audited} == {
            e1.id: "device-refused",
            e2.id: "device-unavailable",
        }
        lines = {e["renewal"]: e["reason"] for e in logs if e["event"] == "renewal stage"}
        assert lines == {e1.id: "device-refused", e2.id: "device-unavailable"}
    finally:
        await store.close()
