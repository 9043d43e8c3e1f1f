"""Stage issued with a fake CA: it asks again by the persisted handle (never submits twice),
waits until the CA's retry time without asking, persists a new handle and reason while the
CA has not issued, and refuses a record with neither a certificate nor a handle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from expressway_certd.monitor.facts import cert_pem
from expressway_certd.renewers.ca.base import Issued, Pending
from expressway_certd.renewers.pipeline import (
    Advance,
    Blocked,
    OutcomeReason,
    RecordError,
    RenewalRecord,
    Wait,
)
from expressway_certd.renewers.pipeline.context import outcome_of_error, sha256_of
from expressway_certd.renewers.pipeline.stages.issued import stage_issued
from tests.unit.fakes import FakeCA
from tests.unit.stagekit import PLAN, issued_record, make_context, make_pki, stage_config

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
HANDLE = {"order": "https://ca.example/order/1"}


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.fixture
def cfg(tmp_path, pki):
    return stage_config(tmp_path, pki)


def pending_record(**changes) -> RenewalRecord:
    return RenewalRecord(plan=PLAN, handle=HANDLE, **changes)


async def test_a_certificate_at_hand_needs_no_question(cfg, pki):
    ca = FakeCA()
    record = issued_record(pki, pki.leaf(pki.old), [pki.old.cert])
    ctx = make_context(cfg, record, ca=ca, now=NOW)
    assert await stage_issued(ctx) == Advance("certificate at hand")
    assert ca.polled == [] and ca.submitted == []


async def test_before_the_cas_retry_time_it_waits_without_asking(cfg):
    ca = FakeCA()
    later = NOW + timedelta(minutes=10)
    ctx = make_context(
        cfg, pending_record(retry_at=later, pending_reason="awaiting approval"), ca=ca, now=NOW
    )
    assert await stage_issued(ctx) == Wait(later, "awaiting approval")
    assert ca.polled == []


async def test_the_ca_is_asked_by_the_persisted_handle_and_issues(cfg, pki):
    leaf = pki.leaf(pki.old)
    ca = FakeCA([Issued(leaf, (pki.old.cert,))])
    ctx = make_context(cfg, pending_record(retry_at=NOW - timedelta(seconds=1)), ca=ca, now=NOW)
    assert await stage_issued(ctx) == Advance(f"issued {sha256_of(leaf)[:16]}")
    assert ca.polled == [HANDLE] and ca.submitted == []  # asked again, never submitted again
    assert ctx.record.issued is not None and ctx.record.issued.leaf_pem == cert_pem(leaf)
    assert ctx.record.issued.chain_pem == cert_pem(pki.old.cert)
    assert ctx.record.handle is None and ctx.record.retry_at is None


async def test_while_pending_the_new_handle_and_reason_are_persisted(cfg):
    until = NOW + timedelta(minutes=5)
    ca = FakeCA([Pending({"order": "2"}, until, "order processing")])
    ctx = make_context(cfg, pending_record(), ca=ca, now=NOW)
    assert await stage_issued(ctx) == Wait(until, "pending at the CA: order processing")
    record = ctx.record
    assert (record.handle, record.retry_at, record.pending_reason) == (
        {"order": "2"},
        until,
        "order processing",
    )


async def test_a_request_only_an_operator_completes_names_the_command(cfg):
    until = NOW + timedelta(hours=1)
    ca = FakeCA([Pending(HANDLE, until, "send the CSR to the PKI team", awaits_provide=True)])
    ctx = make_context(cfg, pending_record(), ca=ca, now=NOW)
    outcome = await stage_issued(ctx)
    assert isinstance(outcome, Wait) and outcome.until == until
    assert "'expressway-certd provide r1 --cert CERT.pem [--chain CHAIN.pem]'" in outcome.why
    assert ctx.record.pending_reason is not None and "provide r1" in ctx.record.pending_reason


async def test_no_certificate_and_no_handle_blocks_with_the_way_out(cfg):
    ca = FakeCA()
    ctx = make_context(cfg, RenewalRecord(plan=PLAN), ca=ca, now=NOW)
    with pytest.raises(RecordError) as raised:
        await stage_issued(ctx)
    outcome = outcome_of_error(ctx, "issued", raised.value)
    assert isinstance(outcome, Blocked) and outcome.reason == OutcomeReason.OPERATOR_ACTION
    assert (
        "expressway-certd provide r1" in outcome.why and "expressway-certd cancel r1" in outcome.why
    )
    assert ca.polled == []
