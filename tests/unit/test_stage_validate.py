"""Stage validate (step C) with a fake CA and the daemon's trust anchors: nothing that fails
a check passes; the chain must build to an anchor the operator configured (never to a root
the CA's answer brought along); a missing root is completed from the CA or the anchors; a new
CA passes only with a path to a root pinned for it, which becomes what the trust stage pushes."""

from __future__ import annotations

import pytest
from expressway_certd_lab.pki import CA

from expressway_certd.monitor.facts import cert_pem
from expressway_certd.monitor.probe import TrustStore
from expressway_certd.renewers.pipeline import Advance, Blocked, OutcomeReason, TrustedCa
from expressway_certd.renewers.pipeline.context import sha256_of
from expressway_certd.renewers.pipeline.stages.validate import stage_validate
from tests.unit.fakes import FakeCA, FakeProber
from tests.unit.stagekit import issued_record, make_context, make_pki, stage_config


@pytest.fixture(scope="module")
def pki():
    return make_pki()


def prober(*anchors) -> FakeProber:
    """The daemon's trust bundle ([daemon] trust_bundle) holding `anchors`."""
    return FakeProber(trust=TrustStore(certificates=anchors))


async def test_a_certificate_of_the_same_ca_passes_without_trust_changes(tmp_path, pki):
    cfg = stage_config(tmp_path, pki)
    ctx = make_context(
        cfg, issued_record(pki, pki.leaf(pki.old), [pki.old.cert]), prober=prober(pki.old.cert)
    )
    outcome = await stage_validate(ctx)
    assert isinstance(outcome, Advance)
    assert outcome.detail.startswith("SANs, EKU, KU, key, validity and chain OK; not after ")
    assert "new CA" not in outcome.detail
    assert ctx.record.ca_changed is False and ctx.record.trust_cas is None


async def test_a_new_ca_passes_with_a_path_to_its_pinned_root(tmp_path, pki):
    cfg = stage_config(tmp_path, pki, pinned=True)
    leaf = pki.leaf(pki.new)
    ctx = make_context(cfg, issued_record(pki, leaf, [pki.new.cert, pki.new_root.cert]))
    outcome = await stage_validate(ctx)
    assert isinstance(outcome, Advance) and "new CA, chains to a pinned anchor" in outcome.detail
    assert ctx.record.ca_changed is True
    assert ctx.record.trust_cas == tuple(
        TrustedCa(sha256_of(c), c.subject.rfc4514_string())
        for c in (pki.new.cert, pki.new_root.cert)
    )


async def test_a_new_ca_without_a_pinned_root_blocks(tmp_path, pki):
    cfg = stage_config(tmp_path, pki, pinned=False)
    leaf = pki.leaf(pki.new)
    # The daemon's bundle trusts the new root, so the chain verifies; nothing pins it for the CA.
    ctx = make_context(
        cfg, issued_record(pki, leaf, [pki.new.cert, pki.new_root.cert]),
        prober=prober(pki.new_root.cert),
    )  # fmt: skip
    outcome = await stage_validate(ctx)
    assert isinstance(outcome, Blocked) and outcome.reason == OutcomeReason.CA_NOT_PINNED
    assert "has no pinned trust anchor" in outcome.why and "nothing was installed" in outcome.why
    assert ctx.record.trust_cas is None


async def test_without_any_trust_anchor_nothing_can_be_verified(tmp_path, pki):
    cfg = stage_config(tmp_path, pki, pinned=False)
    ctx = make_context(cfg, issued_record(pki, pki.leaf(pki.old), [pki.old.cert]))
    outcome = await stage_validate(ctx)
    assert isinstance(outcome, Blocked) and outcome.reason == OutcomeReason.NO_TRUST_ANCHOR
    assert "[daemon] trust_bundle" in outcome.why and "[ca.portal] trust_anchors" in outcome.why


async def test_a_certificate_for_other_names_is_refused(tmp_path, pki):
    cfg = stage_config(tmp_path, pki)
    leaf = pki.leaf(pki.old, sans=("wrong.example.com",))
    ctx = make_context(cfg, issued_record(pki, leaf, [pki.old.cert]), prober=prober(pki.old.cert))
    outcome = await stage_validate(ctx)
    assert isinstance(outcome, Blocked) and outcome.reason == OutcomeReason.VALIDATE_REFUSED
    assert "nothing was installed" in outcome.why and "renew e1 --now" in outcome.why
    assert ctx.record.ca_changed is None


async def test_a_root_the_cas_answer_brought_is_no_anchor(tmp_path, pki):
    cfg = stage_config(tmp_path, pki)
    rogue = CA.create("Rogue Root CA")
    leaf = pki.leaf(rogue)
    # The answer carries its own root; only the configured anchors count (issue 13).
    ctx = make_context(cfg, issued_record(pki, leaf, [rogue.cert]), prober=prober(pki.old.cert))
    outcome = await stage_validate(ctx)
    assert isinstance(outcome, Blocked) and outcome.reason == OutcomeReason.VALIDATE_REFUSED
    assert "expressway-certd provide r1 --cert CERT.pem --chain CHAIN.pem" in outcome.why


async def test_a_chain_without_its_root_is_completed_from_the_ca(tmp_path, pki):
    cfg = stage_config(tmp_path, pki)
    leaf = pki.leaf(pki.new)
    ca = FakeCA(chain=[pki.new.cert, pki.new_root.cert])
    ctx = make_context(cfg, issued_record(pki, leaf, [pki.new.cert]), ca=ca)
    assert isinstance(await stage_validate(ctx), Advance)
    assert ctx.record.issued is not None
    assert ctx.record.issued.chain_pem == cert_pem(pki.new.cert) + cert_pem(pki.new_root.cert)


async def test_a_root_the_ca_never_sends_comes_from_the_trust_anchors(tmp_path, pki):
    cfg = stage_config(tmp_path, pki, pinned=False)
    leaf = pki.leaf(pki.old)
    other = CA.create("Unrelated Root CA")
    ctx = make_context(
        cfg, issued_record(pki, leaf, []), ca=FakeCA(chain=[]),
        prober=prober(other.cert, pki.old.cert),
    )  # fmt: skip
    assert isinstance(await stage_validate(ctx), Advance)
    assert ctx.record.issued is not None
    assert ctx.record.issued.chain_pem == cert_pem(pki.old.cert)  # its issuer's root only
