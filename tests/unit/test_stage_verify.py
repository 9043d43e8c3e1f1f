"""Stage verify with a fake box and a fake prober: success needs every endpoint serving the new
fingerprint AND the zones read and Active; zero zones read is not success (issue 9), nor is a
zone seen before that is missing now; it waits until `verify_timeout` after the first look
(the deadline is persisted), then blocks."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from expressway_certd.renewers.expressway import ZoneState
from expressway_certd.renewers.pipeline import Advance, Blocked, OutcomeReason, RenewalRecord, Wait
from expressway_certd.renewers.pipeline.context import sha256_of
from expressway_certd.renewers.pipeline.stages.verify import stage_verify
from tests.unit.fakes import FakeDevices, FakeExpressway, FakeProber
from tests.unit.stagekit import make_context, make_pki, snapshot_of, stage_config

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
HOST = "e1.example.com"
TRAVERSAL = ZoneState("Traversal to E", "TraversalClient", "Active")
UCM = ZoneState("CUCM neighbor", "Neighbor", "Active")


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.fixture
def cfg(tmp_path, pki):
    return stage_config(tmp_path, pki, verify_timeout="10m")


def context(cfg, pki, *, zones, before=(TRAVERSAL, UCM), serving=True, now=NOW, **record):
    leaf = pki.leaf(pki.new)
    prober = FakeProber({HOST: leaf if serving else pki.current})
    box = FakeExpressway(zones=zones)
    base = RenewalRecord(
        snapshot=snapshot_of(pki.current, zones=tuple(before)), installed_sha256=sha256_of(leaf)
    )
    rec = dataclasses.replace(base, **record)
    return make_context(cfg, rec, devices=FakeDevices(box), prober=prober, now=now), leaf


async def test_serving_everywhere_with_every_zone_active_is_success(cfg, pki):
    ctx, leaf = context(cfg, pki, zones=[TRAVERSAL, UCM])
    assert await stage_verify(ctx) == Advance(
        f"2 endpoints serve {sha256_of(leaf)[:16]}; 2 zones Active"
    )
    assert ctx.record.verify_deadline is None


async def test_zero_zones_read_is_not_success(cfg, pki):
    # Even a box whose snapshot had no zones: nothing read means nothing was checked.
    ctx, _ = context(cfg, pki, zones=[], before=())
    outcome = await stage_verify(ctx)
    assert isinstance(outcome, Wait) and "the box reported no zones" in outcome.why
    assert ctx.record.verify_deadline == NOW + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("zones", "serving", "said"),
    [
        ([TRAVERSAL, ZoneState("CUCM neighbor", "Neighbor", "Failed", "TLS")], True,
         "zone CUCM neighbor is Failed: TLS"),
        ([TRAVERSAL], True, "zone CUCM neighbor was there before and is not reported now"),
        ([TRAVERSAL, UCM], False, "not serving the new certificate on e1.example.com"),
    ],
    ids=["zone failed", "zone missing", "old certificate served"],
)  # fmt: skip
async def test_a_problem_waits_then_blocks_at_the_persisted_deadline(
    cfg, pki, zones, serving, said
):
    ctx, _ = context(cfg, pki, zones=zones, serving=serving)
    first = await stage_verify(ctx)
    assert first == Wait(NOW + timedelta(seconds=5), first.why) and said in first.why
    deadline = ctx.record.verify_deadline
    assert deadline == NOW + timedelta(minutes=10)
    # Later, still before the deadline: the deadline is the first look's, not moved.
    later, _ = context(cfg, pki, zones=zones, serving=serving, now=NOW + timedelta(minutes=9),
                       verify_deadline=deadline)  # fmt: skip
    assert isinstance(await stage_verify(later), Wait)
    assert later.record.verify_deadline == deadline
    last, _ = context(
        cfg, pki, zones=zones, serving=serving, now=deadline, verify_deadline=deadline
    )
    outcome = await stage_verify(last)
    assert isinstance(outcome, Blocked) and outcome.reason == OutcomeReason.VERIFY_TIMEOUT
    assert outcome.why.startswith("e1: after installing, ") and said in outcome.why
    assert "check the traversal peer's trusted CA list" in outcome.why


async def test_no_zones_read_after_the_deadline_blocks(cfg, pki):
    ctx, _ = context(cfg, pki, zones=[], now=NOW, verify_deadline=NOW - timedelta(seconds=1))
    outcome = await stage_verify(ctx)
    assert isinstance(outcome, Blocked) and outcome.reason == OutcomeReason.VERIFY_TIMEOUT
    assert "the box reported no zones" in outcome.why
