"""Stage trust (step D) with fake boxes and a fake Unified CM: a new CA goes to the renewing
box, its traversal peer and the peer's cluster (nobody else), and to every Unified CM node's
configured stores; nothing is ever removed from a trust list; the same CA changes nothing;
without a pinned root nothing is pushed anywhere."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from expressway_certd.monitor.store import Store
from expressway_certd.renewers.expressway import TrustedCasLost
from expressway_certd.renewers.pipeline import Advance, Blocked, OutcomeReason, Wait
from expressway_certd.renewers.pipeline.context import outcome_of_error, sha256_of
from expressway_certd.renewers.pipeline.locks import LEASE
from expressway_certd.renewers.pipeline.stages.trust import stage_trust
from tests.unit.fakes import FakeDevices, FakeExpressway, FakeUnifiedCM
from tests.unit.stagekit import issued_record, make_context, make_pki, snapshot_of, stage_config

BOXES = ("e1", "e2", "e3", "other")


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.fixture
def cfg(tmp_path, pki):
    return stage_config(tmp_path, pki)


def fleet(pki, **kw):
    """Every configured box, each trusting the old CA (and e2 a CA of its own)."""
    boxes = {name: FakeExpressway(name, trusted=[pki.old.cert]) for name in BOXES}
    boxes["e2"].trusted.append(pki.new_root.cert)  # already trusts the new root
    return boxes, FakeDevices(None, boxes=boxes, ucm=FakeUnifiedCM(), **kw)


def new_ca_record(pki, role="c"):
    record = issued_record(pki, pki.leaf(pki.new), [pki.new.cert, pki.new_root.cert])
    return dataclasses.replace(record, snapshot=snapshot_of(pki.current, role=role))


async def test_a_new_ca_is_trusted_by_every_tls_peer_and_nothing_is_removed(cfg, pki):
    boxes, devices = fleet(pki)
    before = {name: list(box.trusted) for name, box in boxes.items()}
    ctx = make_context(cfg, new_ca_record(pki), devices=devices)
    outcome = await stage_trust(ctx)
    path = [pki.new.cert, pki.new_root.cert]
    assert outcome == Advance(
        "new CA trusted by e1 (+2), e2 (+1), e3 (+2), cm/pub (tomcat, callmanager), "
        "cm/sub (tomcat, callmanager)"
    )
    assert ctx.record.ca_changed is True
    for name in ("e1", "e2", "e3"):
        box = boxes[name]
        assert box.trusted[: len(before[name])] == before[name]  # nothing removed or reordered
        assert all(c in box.trusted for c in path)
        assert len({sha256_of(c) for c in box.trusted}) == len(box.trusted)  # no duplicates
    assert boxes["other"].calls == [] and boxes["other"].trusted == before["other"]
    ucm = devices.ucm
    for node in ("pub", "sub"):
        for store in ("tomcat", "callmanager"):
            assert ucm.stores[(node, store)] == path
    assert ucm.restarts == []  # services restart later, in stage ucm-restart


async def test_running_it_again_adds_nothing(cfg, pki):
    boxes, devices = fleet(pki)
    ctx = make_context(cfg, new_ca_record(pki), devices=devices)
    await stage_trust(ctx)
    after = {name: list(box.trusted) for name, box in boxes.items()}
    outcome = await stage_trust(ctx)
    assert isinstance(outcome, Advance) and "e1 (+0), e2 (+0), e3 (+0)" in outcome.detail
    assert {name: box.trusted for name, box in boxes.items()} == after


async def test_the_same_ca_changes_no_trust_list(cfg, pki):
    _, devices = fleet(pki)
    record = issued_record(pki, pki.leaf(pki.old), [pki.old.cert])
    ctx = make_context(cfg, record, devices=devices)
    outcome = await stage_trust(ctx)
    assert isinstance(outcome, Advance) and outcome.detail.startswith("same CA (AKI ")
    assert ctx.record.ca_changed is False
    assert devices.opened == [] and devices.ucm.stores == {}


async def test_an_expressway_e_leaves_unified_cm_alone(tmp_path, pki):
    cfg = stage_config(tmp_path, pki)
    _, devices = fleet(pki)
    ctx = make_context(cfg, new_ca_record(pki, role="e"), devices=devices)
    outcome = await stage_trust(ctx)
    assert isinstance(outcome, Advance) and "cm/" not in outcome.detail
    assert devices.ucm.stores == {} and "cm" not in devices.opened


async def test_without_a_pinned_root_nothing_is_pushed(tmp_path, pki):
    cfg = stage_config(tmp_path, pki, pinned=False)
    boxes, devices = fleet(pki)
    ctx = make_context(cfg, new_ca_record(pki), devices=devices)
    outcome = await stage_trust(ctx)
    assert isinstance(outcome, Blocked) and outcome.reason == OutcomeReason.CA_NOT_PINNED
    assert devices.opened == [] and all(box.calls == [] for box in boxes.values())


async def test_a_box_that_dropped_cas_blocks_the_renewal(cfg, pki):
    lost = TrustedCasLost("e2: the upload made the box drop CN=Old Root CA; uploaded again")
    boxes, devices = fleet(pki)
    boxes["e2"].fail["add_trusted_cas"] = lost
    ctx = make_context(cfg, new_ca_record(pki), devices=devices)
    with pytest.raises(TrustedCasLost) as raised:
        await stage_trust(ctx)
    outcome = outcome_of_error(ctx, "trust", raised.value)
    assert isinstance(outcome, Blocked) and outcome.reason == OutcomeReason.DEVICE_REFUSED


async def test_another_process_updating_the_unified_cm_makes_it_wait(cfg, pki):
    store = await Store.open(cfg.daemon.state)
    try:
        now = datetime.now(UTC)
        assert await store.claim_lease("cucm:cm", "elsewhere:1:abc", now, LEASE)
        _, devices = fleet(pki)
        ctx = make_context(cfg, new_ca_record(pki), devices=devices, store=store, owner="me")
        outcome = await stage_trust(ctx)
        assert isinstance(outcome, Wait)
        assert outcome.why == "another renewal (elsewhere:1:abc) is updating Unified CM cm"
        assert devices.ucm.stores == {}
    finally:
        await store.close()
