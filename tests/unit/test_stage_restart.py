"""Stage restart (step E, restart) with a fake box and a fake prober: the box restarts only
when its endpoints do not serve the new certificate yet, only inside the maintenance window,
one cluster peer at a time, and only after the approval gate; a box that comes back still
serving the old certificate is retried with backoff."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from expressway_certd.monitor.store import Store
from expressway_certd.renewers.pipeline import (
    RETRY_BACKOFF,
    STAGES,
    Advance,
    Failed,
    OutcomeReason,
    RenewalRecord,
    Wait,
)
from expressway_certd.renewers.pipeline.context import sha256_of
from expressway_certd.renewers.pipeline.locks import LEASE
from expressway_certd.renewers.pipeline.stages.restart import stage_restart
from tests.unit.fakes import FakeDevices, FakeExpressway, FakeProber
from tests.unit.stagekit import make_context, make_pki, stage_config

THURSDAY = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
SATURDAY_0200 = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
WINDOW = '{ cron = "0 2 * * 6", timezone = "UTC", duration = "3h" }'
HOST = "e1.example.com"


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.fixture(scope="module")
def new_leaf(pki):
    return pki.leaf(pki.new)


def setup(cfg, pki, new_leaf, *, now=THURSDAY, comes_back_serving=True, **kw):
    """e1 serves today's certificate; its restart makes it serve the new one (or not)."""
    prober = FakeProber({HOST: pki.current})

    def restarted() -> None:
        if comes_back_serving:
            prober.serving[HOST] = new_leaf

    box = FakeExpressway(on_restart=restarted)
    record = RenewalRecord(installed_sha256=sha256_of(new_leaf))
    ctx = make_context(cfg, record, devices=FakeDevices(box), prober=prober, now=now, **kw)
    return ctx, box, prober


def test_the_stages_that_change_the_box_come_after_the_approval_gate():
    gate = STAGES.index("approve")
    assert all(STAGES.index(s) > gate for s in ("ucm-restart", "install", "restart"))


async def test_a_box_already_serving_the_new_certificate_is_not_restarted(tmp_path, pki, new_leaf):
    ctx, box, prober = setup(stage_config(tmp_path, pki), pki, new_leaf)
    prober.serving[HOST] = new_leaf
    assert await stage_restart(ctx) == Advance("already serving the new certificate")
    assert box.restarts == 0


async def test_outside_the_window_it_waits_for_it(tmp_path, pki, new_leaf):
    ctx, box, _ = setup(stage_config(tmp_path, pki, window=WINDOW), pki, new_leaf, now=THURSDAY)
    outcome = await stage_restart(ctx)
    assert outcome == Wait(SATURDAY_0200, "outside the maintenance window (0 2 * * 6 UTC)")
    assert box.restarts == 0


async def test_inside_the_window_it_restarts_once_and_sees_the_new_certificate(
    tmp_path, pki, new_leaf
):
    cfg = stage_config(tmp_path, pki, window=WINDOW)
    ctx, box, prober = setup(cfg, pki, new_leaf, now=SATURDAY_0200 + timedelta(hours=1))
    outcome = await stage_restart(ctx)
    assert outcome == Advance("restarted via api; serving the new certificate on every endpoint")
    assert box.restarts == 1
    assert len(prober.probed) == 2 * len(cfg.target("e1").endpoints)  # before and after


async def test_the_wait_for_the_restart_takes_the_new_certificate_served_as_proof(
    tmp_path, pki, new_leaf
):
    """A restart whose down phase fell between two polls of the client (a busy process) is
    proven by the endpoints serving the uploaded certificate: only a restart activates it."""
    ctx, box, prober = setup(stage_config(tmp_path, pki), pki, new_leaf)
    assert isinstance(await stage_restart(ctx), Advance) and box.restarts == 1
    evidence = box.restart_evidence
    assert evidence is not None and await evidence()  # back up, serving the new certificate
    prober.serving[HOST] = pki.current
    assert not await evidence()  # still the old one: no proof, the client waits on


async def test_without_a_window_it_restarts_at_once(tmp_path, pki, new_leaf):
    ctx, box, _ = setup(stage_config(tmp_path, pki), pki, new_leaf, now=THURSDAY)
    assert isinstance(await stage_restart(ctx), Advance) and box.restarts == 1


async def test_back_with_the_old_certificate_is_retried_with_backoff(tmp_path, pki, new_leaf):
    cfg = stage_config(tmp_path, pki)
    ctx, box, _ = setup(cfg, pki, new_leaf, comes_back_serving=False, attempts=3)
    renewal = dataclasses.replace(ctx.target.renewal, verify_timeout=timedelta(0))
    ctx.target = dataclasses.replace(ctx.target, renewal=renewal)  # no waiting in a unit test
    outcome = await stage_restart(ctx)
    assert isinstance(outcome, Failed) and outcome.reason == OutcomeReason.RESTART_NOT_SERVING
    assert outcome.retry_at == THURSDAY + RETRY_BACKOFF[3]
    assert (
        "restarted (via api) but not serving the new certificate on e1.example.com" in outcome.why
    )
    assert box.restarts == 1


async def test_a_peer_restarting_elsewhere_makes_it_wait(tmp_path, pki, new_leaf):
    cfg = stage_config(tmp_path, pki)
    store = await Store.open(cfg.daemon.state)
    try:
        assert await store.claim_lease("restart:e1", "elsewhere:1:abc", THURSDAY, LEASE)
        ctx, box, _ = setup(cfg, pki, new_leaf, store=store, owner="me")
        outcome = await stage_restart(ctx)
        assert outcome == Wait(
            THURSDAY + timedelta(seconds=15),
            "another process (elsewhere:1:abc) is restarting a peer of e1",
        )
        assert box.restarts == 0
    finally:
        await store.close()
