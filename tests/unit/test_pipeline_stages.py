"""Stages on their own, with a fake box (renewers/pipeline/stages/): csr reuses a fitting
pending CSR and never discards one that does not fit; approve gates by mode; install compares
before it uploads and retries with backoff when the box does not show the upload."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from expressway_certd_lab.pki import CA

from expressway_certd.monitor.errors import CAError, DeviceError
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.renewers.ca.base import CARequestError
from expressway_certd.renewers.expressway import OperationUnsupported
from expressway_certd.renewers.pipeline import (
    RETRY_BACKOFF,
    Advance,
    Blocked,
    Context,
    Failed,
    IssuedCert,
    OutcomeReason,
    RecordError,
    RenewalRecord,
    TrustedCa,
    Wait,
    stage_approve,
    stage_csr,
    stage_install,
)
from expressway_certd.renewers.pipeline.context import outcome_of_error
from expressway_certd.renewers.validate import Plan
from tests.unit.fakes import FakeDevices
from tests.unit.test_pipeline_runner import config

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
PLAN = Plan(
    target="e1", role="c", version="X15.4", sans=("e1.example.com", "c.example.com"),
    required_eku=("1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"),
)  # fmt: skip


def make_csr(*names: str) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )


def pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode()


class FakeBox:
    """The box's server certificate and pending CSR, and what the stages did to it."""

    def __init__(self, *, pending=None, installed=None, shows_upload: bool = True) -> None:
        self.pending = pending
        self.installed = installed
        self.shows_upload = shows_upload
        self.generated: list = []
        self.uploads: list = []

    async def pending_csr(self):
        return self.pending

    async def generate_csr(self, request):
        self.generated.append(request)
        self.pending = make_csr(*request.additional_fqdns)
        return self.pending

    async def server_certificate(self):
        return self.installed

    async def upload_server_certificate(self, leaf):
        self.uploads.append(leaf)
        if self.shows_upload:
            self.installed = leaf


@pytest.fixture
def cfg(tmp_path):
    return config(tmp_path)


def context(cfg, box: FakeBox, record: RenewalRecord, *, approval="auto", attempts=0) -> Context:
    target = cfg.target("e1")
    target = dataclasses.replace(
        target, renewal=dataclasses.replace(target.renewal, approval=approval)
    )
    return Context(
        renewal_id="r1", target=target, config=cfg, devices=FakeDevices(box), ca=None,
        ca_name="portal", prober=Prober(TrustStore([])), now=lambda: NOW, record=record,
        attempts=attempts,
    )  # fmt: skip


# ---- csr ------------------------------------------------------------------------------------


async def test_csr_generates_one_with_the_planned_sans(cfg):
    box = FakeBox()
    ctx = context(cfg, box, RenewalRecord(plan=PLAN))
    outcome = await stage_csr(ctx)
    assert outcome == Advance("CSR generated on the box for 2 names")
    assert [r.additional_fqdns for r in box.generated] == [PLAN.sans]
    assert ctx.record.csr_pem == pem(box.pending)


async def test_csr_reuses_a_fitting_pending_csr_and_knows_its_own(cfg):
    pending = make_csr("c.example.com", "e1.example.com")
    box = FakeBox(pending=pending)
    ctx = context(cfg, box, RenewalRecord(plan=PLAN))
    assert await stage_csr(ctx) == Advance("reused the CSR pending on the box")
    assert ctx.record.csr_pem == pem(pending) and box.generated == []
    assert await stage_csr(ctx) == Advance("CSR already generated")  # a second run: same CSR


async def test_csr_never_discards_a_pending_csr_for_other_names(cfg):
    box = FakeBox(pending=make_csr("other.example.com"))
    ctx = context(cfg, box, RenewalRecord(plan=PLAN))
    outcome = await stage_csr(ctx)
    assert isinstance(outcome, Blocked) and outcome.reason == OutcomeReason.CSR_PENDING_MISMATCH
    assert "other.example.com" in outcome.why and "it is kept" in outcome.why
    assert box.generated == [] and ctx.record.csr_pem is None


# ---- approve --------------------------------------------------------------------------------

NEW_CA = (TrustedCa("ab" * 32, "CN=New CA"),)


@pytest.mark.parametrize(
    ("approval", "record", "expected"),
    [
        ("auto", RenewalRecord(ca_changed=True), Advance("approval mode auto")),
        ("manual-if-ca-changed", RenewalRecord(ca_changed=False), Advance("same CA: no approval needed")),
        ("manual", RenewalRecord(approved_by="bob"), Advance("approved by bob")),
        (
            "manual-if-ca-changed",
            RenewalRecord(ca_changed=True, trust_cas=NEW_CA),
            Wait(NOW + timedelta(hours=1), f"the CA changed (new CA SHA-256 {'ab' * 32})", approval=True),
        ),
        ("manual", RenewalRecord(), Wait(NOW + timedelta(hours=1), "approval mode manual", approval=True)),
    ],
)  # fmt: skip
async def test_approve_by_mode(cfg, approval, record, expected):
    assert await stage_approve(context(cfg, FakeBox(), record, approval=approval)) == expected


# ---- install --------------------------------------------------------------------------------


@pytest.fixture
def leaf():
    cert, _ = CA.create("New CA").issue("e1.example.com", ["e1.example.com"])
    return cert


def issued(leaf) -> RenewalRecord:
    text = leaf.public_bytes(serialization.Encoding.PEM).decode()
    return RenewalRecord(issued=IssuedCert(leaf_pem=text, chain_pem=""))


async def test_install_uploads_then_reads_back(cfg, leaf):
    box = FakeBox(installed=None)
    ctx = context(cfg, box, issued(leaf))
    outcome = await stage_install(ctx)
    assert isinstance(outcome, Advance) and outcome.detail.startswith("uploaded ")
    assert box.uploads == [leaf]
    assert ctx.record.installed_sha256 == leaf.fingerprint(hashes.SHA256()).hex()


async def test_install_does_not_upload_what_is_installed(cfg, leaf):
    box = FakeBox(installed=leaf)
    ctx = context(cfg, box, issued(leaf))
    assert await stage_install(ctx) == Advance("already installed")
    assert box.uploads == [] and ctx.record.installed_sha256 is not None


async def test_install_retries_with_backoff_when_the_box_does_not_show_the_upload(cfg, leaf):
    box = FakeBox(installed=None, shows_upload=False)
    ctx = context(cfg, box, issued(leaf), attempts=2)
    outcome = await stage_install(ctx)
    assert isinstance(outcome, Failed) and "does not show the new certificate" in outcome.why
    assert outcome.retry_at == NOW + RETRY_BACKOFF[2]
    assert outcome.reason == OutcomeReason.UPLOAD_NOT_SHOWN
    assert ctx.record.installed_sha256 is None


# ---- errors a stage raises ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (CARequestError("ca: refused", reason="refused", retryable=False), Blocked, OutcomeReason.CA_REFUSED),
        (CARequestError("ca: 503", reason="unavailable", retryable=True), Failed, OutcomeReason.CA_UNAVAILABLE),
        (CAError("ca: down"), Failed, OutcomeReason.CA_UNAVAILABLE),
        (OperationUnsupported("e1: no zone status"), Blocked, OutcomeReason.DEVICE_REFUSED),
        (DeviceError("e1: 500"), Failed, OutcomeReason.DEVICE_UNAVAILABLE),
        (RecordError("r1: bad record"), Blocked, OutcomeReason.OPERATOR_ACTION),
        (ConnectionResetError("reset"), Failed, OutcomeReason.NETWORK),
        (TimeoutError(), Failed, OutcomeReason.NETWORK),
        (KeyError("x"), Failed, OutcomeReason.UNEXPECTED),
    ],
)  # fmt: skip
def test_an_error_becomes_an_outcome_with_its_reason(cfg, error, kind, reason):
    outcome = outcome_of_error(context(cfg, FakeBox(), RenewalRecord()), "csr", error)
    assert isinstance(outcome, kind) and outcome.reason == reason
    if isinstance(outcome, Failed):
        assert outcome.retry_at == NOW + RETRY_BACKOFF[0]
