"""Stages preflight and submit with fakes: preflight plans the SANs and the EKU from the
snapshot and refuses a CA that cannot deliver them before anything changes; submit sends the
CSR to the CA exactly once and persists the certificate or the handle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from expressway_certd.monitor.facts import cert_pem
from expressway_certd.renewers.ca.base import Issued, Pending
from expressway_certd.renewers.expressway import ZoneState
from expressway_certd.renewers.pipeline import Advance, Blocked, OutcomeReason, RenewalRecord
from expressway_certd.renewers.pipeline.context import sha256_of
from expressway_certd.renewers.pipeline.stages.preflight import stage_preflight
from expressway_certd.renewers.pipeline.stages.submit import stage_submit
from tests.unit.fakes import FakeCA
from tests.unit.stagekit import make_context, make_pki, snapshot_of, stage_config

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
SERVER_AUTH, CLIENT_AUTH = "1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"
ZONES = (ZoneState("Traversal to E", "TraversalClient", "Active"),)


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.fixture
def cfg(tmp_path, pki):
    return stage_config(tmp_path, pki)


async def test_preflight_plans_the_sans_and_both_ekus_of_a_traversal_client(cfg, pki):
    record = RenewalRecord(snapshot=snapshot_of(pki.current, zones=ZONES))
    ctx = make_context(cfg, record, ca=FakeCA(ekus=frozenset({SERVER_AUTH, CLIENT_AUTH})))
    outcome = await stage_preflight(ctx)
    assert isinstance(outcome, Advance)
    assert outcome.detail.startswith("SANs e1.example.com; EKU serverAuth+clientAuth (rule ")
    plan = ctx.record.plan
    assert plan is not None and plan.sans == ("e1.example.com",)
    assert set(plan.required_eku) == {SERVER_AUTH, CLIENT_AUTH}


async def test_preflight_refuses_a_ca_that_cannot_deliver_the_eku(cfg, pki):
    record = RenewalRecord(snapshot=snapshot_of(pki.current, zones=ZONES))
    ctx = make_context(cfg, record, ca=FakeCA(ekus=frozenset({SERVER_AUTH})))
    outcome = await stage_preflight(ctx)
    assert isinstance(outcome, Blocked) and outcome.reason == OutcomeReason.PREFLIGHT_REFUSED
    assert ctx.record.plan is not None  # the plan is kept for `status`


def csr_record(pki, **changes) -> RenewalRecord:
    pem = pki.csr.public_bytes(serialization.Encoding.PEM).decode()
    return RenewalRecord(csr_pem=pem, **changes)


async def test_submit_persists_what_the_ca_issued(cfg, pki):
    leaf = pki.leaf(pki.old)
    ca = FakeCA([Issued(leaf, (pki.old.cert,))])
    ctx = make_context(cfg, csr_record(pki), ca=ca, now=NOW)
    assert await stage_submit(ctx) == Advance(f"issued {sha256_of(leaf)[:16]}")
    assert ca.submitted == [pki.csr]
    assert ctx.record.issued is not None and ctx.record.issued.leaf_pem == cert_pem(leaf)


async def test_submit_persists_the_handle_of_a_pending_request(cfg, pki):
    until = NOW + timedelta(minutes=2)
    ca = FakeCA([Pending({"order": "1"}, until, "order processing")])
    ctx = make_context(cfg, csr_record(pki), ca=ca, now=NOW)
    assert await stage_submit(ctx) == Advance("pending at the CA: order processing")
    assert (ctx.record.handle, ctx.record.retry_at) == ({"order": "1"}, until)


@pytest.mark.parametrize("done", ["handle", "issued"])
async def test_submit_never_sends_the_csr_twice(cfg, pki, done):
    leaf = pki.leaf(pki.old)
    base = {"handle": {"order": "1"}} if done == "handle" else {}
    record = csr_record(pki, **base)
    if done == "issued":
        ctx0 = make_context(cfg, record, ca=FakeCA([Issued(leaf, ())]))
        await stage_submit(ctx0)
        record = ctx0.record
    ca = FakeCA()
    ctx = make_context(cfg, record, ca=ca, now=NOW)
    assert await stage_submit(ctx) == Advance("already submitted")
    assert ca.submitted == []
