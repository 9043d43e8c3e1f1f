"""Stage snapshot (step A) with a fake box: what it records of the box before anything
changes, the traversal peer's version read only when the FN74362 rule needs it, and a box
that cannot report its zones blocks the renewal rather than checking nothing (issue 9)."""

from __future__ import annotations

import pytest

from expressway_certd.monitor.errors import DeviceError
from expressway_certd.monitor.facts import cert_pem, facts_from_x509
from expressway_certd.renewers.expressway import OperationUnsupported, ZoneState
from expressway_certd.renewers.pipeline import (
    RETRY_BACKOFF,
    Advance,
    Blocked,
    Failed,
    OutcomeReason,
    RenewalRecord,
)
from expressway_certd.renewers.pipeline.context import outcome_of_error
from expressway_certd.renewers.pipeline.stages.snapshot import stage_snapshot
from tests.unit.fakes import FakeDevices, FakeExpressway
from tests.unit.stagekit import make_context, make_pki, stage_config

ZONES = (ZoneState("Traversal to E", "TraversalClient", "Active"),)


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.fixture
def cfg(tmp_path, pki):
    return stage_config(tmp_path, pki)


async def test_snapshot_records_the_box_as_it_is(cfg, pki):
    box = FakeExpressway(version="X15.2", role="c", cert=pki.current, zones=ZONES)
    ctx = make_context(cfg, RenewalRecord(), devices=FakeDevices(box))
    outcome = await stage_snapshot(ctx)
    facts = facts_from_x509(pki.current)
    assert isinstance(outcome, Advance)
    assert outcome.detail.startswith(f"X15.2 Expressway-C, serving {facts.sha256[:16]}")
    snap = ctx.record.snapshot
    assert snap is not None
    assert (snap.version, snap.role, snap.cert_pem) == ("X15.2", "c", cert_pem(pki.current))
    assert (snap.sha256, snap.aki, snap.issuer) == (facts.sha256, facts.aki, facts.issuer)
    assert snap.sans == ("DNS:e1.example.com",)
    assert snap.zones == ZONES
    assert (snap.acme_scheduler, snap.server_eku_upload, snap.peer_version) == (False, None, None)
    assert "restart" not in box.calls and "add_trusted_cas" not in box.calls  # reads only


async def test_the_configured_role_wins_over_the_boxs(cfg, pki):
    box = FakeExpressway(role="e", cert=pki.current, zones=ZONES)  # e1 is configured "c"
    ctx = make_context(cfg, RenewalRecord(), devices=FakeDevices(box))
    await stage_snapshot(ctx)
    assert ctx.record.snapshot is not None and ctx.record.snapshot.role == "c"


async def test_the_peers_version_is_read_when_the_eku_upload_switch_is_read(cfg, pki):
    box = FakeExpressway(cert=pki.current, zones=ZONES, server_eku_upload=True)
    peer = FakeExpressway("e2", version="X15.0", role="e")
    devices = FakeDevices(box, boxes={"e2": peer})
    ctx = make_context(cfg, RenewalRecord(), devices=devices)
    await stage_snapshot(ctx)
    assert ctx.record.snapshot is not None
    assert (ctx.record.snapshot.server_eku_upload, ctx.record.snapshot.peer_version) == (
        True,
        "X15.0",
    )
    assert devices.opened == ["e1", "e2"]


async def test_the_peer_is_not_asked_when_the_rule_does_not_use_it(cfg, pki):
    devices = FakeDevices(
        FakeExpressway(cert=pki.current, zones=ZONES), boxes={"e2": AssertionError("peer read")}
    )
    ctx = make_context(cfg, RenewalRecord(), devices=devices)
    await stage_snapshot(ctx)
    assert devices.opened == ["e1"]


async def test_an_unreadable_peer_leaves_its_version_unknown(cfg, pki):
    box = FakeExpressway(cert=pki.current, zones=ZONES, server_eku_upload=True)
    devices = FakeDevices(box, boxes={"e2": DeviceError("e2: connection refused")})
    ctx = make_context(cfg, RenewalRecord(), devices=devices)
    assert isinstance(await stage_snapshot(ctx), Advance)
    assert ctx.record.snapshot is not None and ctx.record.snapshot.peer_version is None


async def test_a_box_that_cannot_report_zones_blocks_the_renewal(cfg, pki):
    error = OperationUnsupported("e1: read zone status: not in this box's /api/raml")
    box = FakeExpressway(cert=pki.current, fail={"zones": error})
    ctx = make_context(cfg, RenewalRecord(), devices=FakeDevices(box))
    with pytest.raises(OperationUnsupported) as raised:
        await stage_snapshot(ctx)
    outcome = outcome_of_error(ctx, "snapshot", raised.value)
    assert isinstance(outcome, Blocked) and outcome.reason == OutcomeReason.DEVICE_REFUSED
    assert ctx.record.snapshot is None


async def test_a_box_that_fails_is_retried_with_backoff(cfg, pki):
    box = FakeExpressway(cert=pki.current, fail={"system_info": DeviceError("e1: HTTP 503")})
    ctx = make_context(cfg, RenewalRecord(), devices=FakeDevices(box), attempts=1)
    with pytest.raises(DeviceError) as raised:
        await stage_snapshot(ctx)
    outcome = outcome_of_error(ctx, "snapshot", raised.value)
    assert isinstance(outcome, Failed) and outcome.reason == OutcomeReason.DEVICE_UNAVAILABLE
    assert outcome.retry_at == ctx.now() + RETRY_BACKOFF[1]
    assert ctx.record.snapshot is None
