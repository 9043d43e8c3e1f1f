"""Stage ucm-restart with a fake Unified CM: after a trust change, the configured services
restart node by node (publisher first), Cisco Tomcat last on each node, only inside the Unified
CM's maintenance window (else the target's); every finished service is checkpointed, so a
retry, a closing window or a new process never restarts what already restarted."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from expressway_certd.monitor.errors import DeviceError
from expressway_certd.monitor.store import Store
from expressway_certd.renewers.cucm import NOT_ACTIVATED, RESTARTED
from expressway_certd.renewers.pipeline import Advance, Failed, OutcomeReason, RenewalRecord, Wait
from expressway_certd.renewers.pipeline.context import outcome_of_error
from expressway_certd.renewers.pipeline.locks import LEASE
from expressway_certd.renewers.pipeline.stages.ucm_restart import stage_ucm_restart
from tests.unit.fakes import FakeDevices, FakeExpressway, FakeUnifiedCM
from tests.unit.stagekit import make_context, make_pki, snapshot_of, stage_config

THURSDAY = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
SATURDAY_0300 = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)  # inside the target's window
SUNDAY_0300 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)  # the Unified CM's window opens
TARGET_WINDOW = '{ cron = "0 2 * * 6", timezone = "UTC", duration = "3h" }'
UCM_WINDOW = '{ cron = "0 3 * * 0", timezone = "UTC", duration = "1h" }'
CM, TFTP, TOMCAT = "Cisco CallManager", "Cisco Tftp", "Cisco Tomcat"
ALL = [("pub", CM), ("pub", TFTP), ("pub", TOMCAT), ("sub", CM), ("sub", TFTP), ("sub", TOMCAT)]


@pytest.fixture(scope="module")
def pki():
    return make_pki()


def changed(pki, role="c", ca_changed=True) -> RenewalRecord:
    return RenewalRecord(snapshot=snapshot_of(pki.current, role=role), ca_changed=ca_changed)


def context(cfg, record, ucm, now=THURSDAY, **kw):
    """A context whose checkpoints and fault-seam points are kept in `saved` and `points`."""
    saved: list[RenewalRecord] = []
    points: list[str] = []
    devices = FakeDevices(FakeExpressway(), ucm=ucm)
    ctx = make_context(cfg, record, devices=devices, now=now, **kw)

    async def checkpoint() -> None:
        saved.append(ctx.record)

    ctx.checkpoint = checkpoint
    ctx.fault_seam = lambda target, point: points.append(point)
    return ctx, saved, points


@pytest.mark.parametrize(
    ("role", "ca_changed"), [("c", False), ("e", True)], ids=["same CA", "Expressway-E"]
)
async def test_nothing_restarts_without_a_unified_cm_trust_change(tmp_path, pki, role, ca_changed):
    cfg = stage_config(tmp_path, pki)
    ucm = FakeUnifiedCM()
    ctx, saved, _ = context(cfg, changed(pki, role, ca_changed), ucm)
    assert await stage_ucm_restart(ctx) == Advance("no Unified CM trust change: nothing to restart")
    assert ucm.restarts == [] and "cm" not in ctx.devices.opened and saved == []


async def test_services_restart_node_by_node_each_persisted(tmp_path, pki):
    cfg = stage_config(tmp_path, pki)
    ucm = FakeUnifiedCM()
    ctx, saved, points = context(cfg, changed(pki), ucm)
    outcome = await stage_ucm_restart(ctx)
    assert outcome == Advance(
        f"Unified CM cm: pub restarted {CM}, {TFTP}, {TOMCAT}; sub restarted {CM}, {TFTP}, {TOMCAT}"
    )
    assert ucm.restarts == ALL
    assert ctx.record.cucm_restarts == tuple((n, s, RESTARTED) for n, s in ALL)
    # one checkpoint and one seam point right after each service, in order
    assert [r.cucm_restarts for r in saved] == [
        tuple((n, s, RESTARTED) for n, s in ALL[: i + 1]) for i in range(len(ALL))
    ]
    assert points == [f"ucm-restart:{n}:{s}" for n, s in ALL]


async def test_tomcat_restarts_last_on_each_node_whatever_the_configured_order(tmp_path, pki):
    cfg = stage_config(tmp_path, pki, ucm_extra=f'restart_services = ["{TOMCAT}", "{CM}"]\n')
    ucm = FakeUnifiedCM()
    ctx, _, _ = context(cfg, changed(pki), ucm)
    await stage_ucm_restart(ctx)
    assert ucm.restarts == [("pub", CM), ("pub", TOMCAT), ("sub", CM), ("sub", TOMCAT)]


async def test_a_service_not_activated_is_skipped_and_said(tmp_path, pki):
    cfg = stage_config(tmp_path, pki)
    ucm = FakeUnifiedCM(not_activated=[("sub", TFTP)])
    ctx, _, _ = context(cfg, changed(pki), ucm)
    outcome = await stage_ucm_restart(ctx)
    assert isinstance(outcome, Advance)
    assert outcome.detail.endswith(f"sub restarted {CM}, {TOMCAT} (not activated: {TFTP})")
    assert ("sub", TFTP, NOT_ACTIVATED) in (ctx.record.cucm_restarts or ())
    assert ("sub", TFTP) not in ucm.restarts


async def test_a_retry_after_a_failure_restarts_only_what_did_not_restart(tmp_path, pki):
    cfg = stage_config(tmp_path, pki)
    ucm = FakeUnifiedCM(fail_at=("sub", TFTP))
    ctx, saved, _ = context(cfg, changed(pki), ucm)
    with pytest.raises(DeviceError) as raised:
        await stage_ucm_restart(ctx)
    outcome = outcome_of_error(ctx, "ucm-restart", raised.value)
    assert isinstance(outcome, Failed) and outcome.reason == OutcomeReason.DEVICE_UNAVAILABLE
    assert ucm.restarts == ALL[:4]
    # A new process resumes from what was persisted (the stored form of the last checkpoint).
    stored = RenewalRecord.from_data(saved[-1].to_data())
    again, _, _ = context(cfg, stored, ucm)
    assert isinstance(await stage_ucm_restart(again), Advance)
    assert ucm.restarts == ALL  # each service exactly once


async def test_outside_the_unified_cms_window_it_waits_for_it(tmp_path, pki):
    # Saturday 03:00 is inside the target's window but the Unified CM has its own.
    cfg = stage_config(tmp_path, pki, window=TARGET_WINDOW, ucm_window=UCM_WINDOW)
    ucm = FakeUnifiedCM()
    ctx, _, _ = context(cfg, changed(pki), ucm, now=SATURDAY_0300)
    outcome = await stage_ucm_restart(ctx)
    assert isinstance(outcome, Wait) and outcome.until == SUNDAY_0300
    assert f"restarting {CM} on pub waits for the maintenance window" in outcome.why
    assert ucm.restarts == []


async def test_without_its_own_window_the_targets_applies(tmp_path, pki):
    cfg = stage_config(tmp_path, pki, window=TARGET_WINDOW)
    ucm = FakeUnifiedCM()
    ctx, _, _ = context(cfg, changed(pki), ucm, now=THURSDAY)
    outcome = await stage_ucm_restart(ctx)
    assert isinstance(outcome, Wait) and outcome.until == datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
    assert ucm.restarts == []
    inside, _, _ = context(cfg, changed(pki), ucm, now=SATURDAY_0300)
    assert isinstance(await stage_ucm_restart(inside), Advance) and ucm.restarts == ALL


async def test_a_window_closing_between_services_stops_there_and_resumes(tmp_path, pki):
    cfg = stage_config(tmp_path, pki, ucm_window=UCM_WINDOW)
    ucm = FakeUnifiedCM()
    ctx, _, _ = context(cfg, changed(pki), ucm, now=SUNDAY_0300)
    times = iter([SUNDAY_0300] * 3 + [SUNDAY_0300 + timedelta(hours=1, minutes=1)])
    ctx.now = lambda: next(times)  # the window closes after the publisher's services
    outcome = await stage_ucm_restart(ctx)
    assert isinstance(outcome, Wait) and outcome.until == SUNDAY_0300 + timedelta(days=7)
    assert ucm.restarts == ALL[:3]
    later, _, _ = context(cfg, ctx.record, ucm, now=SUNDAY_0300 + timedelta(days=7))
    assert isinstance(await stage_ucm_restart(later), Advance)
    assert ucm.restarts == ALL


async def test_everything_restarted_already_touches_nothing(tmp_path, pki):
    cfg = stage_config(tmp_path, pki)
    record = dataclasses.replace(
        changed(pki), cucm_restarts=tuple((n, s, RESTARTED) for n, s in ALL)
    )
    ucm = FakeUnifiedCM()
    ctx, _, _ = context(cfg, record, ucm)
    assert isinstance(await stage_ucm_restart(ctx), Advance)
    assert ucm.restarts == [] and "cm" not in ctx.devices.opened


async def test_another_renewal_restarting_the_same_unified_cm_makes_it_wait(tmp_path, pki):
    cfg = stage_config(tmp_path, pki)
    store = await Store.open(cfg.daemon.state)
    try:
        assert await store.claim_lease("cucm:cm", "elsewhere:1:abc", THURSDAY, LEASE)
        ucm = FakeUnifiedCM()
        ctx, _, _ = context(cfg, changed(pki), ucm, store=store, owner="me")
        outcome = await stage_ucm_restart(ctx)
        assert outcome == Wait(
            THURSDAY + timedelta(seconds=15),
            "another renewal (elsewhere:1:abc) is restarting services of Unified CM cm",
        )
        assert ucm.restarts == []
    finally:
        await store.close()
