"""Every state a renewal can reach has an operator way out (issue 13, finding 3): the test
walks every stage x active status, checks the commands `ways_out` names are documented in
docs/renewal.md, and runs them against a real store."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from expressway_certd_lab.pki import CA, cert_pem
from structlog.testing import capture_logs

from expressway_certd.config import load_config
from expressway_certd.monitor.errors import CertdError
from expressway_certd.monitor.events import Event, EventBus
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import ACTIVE_STATUSES, RenewalRow, Store
from expressway_certd.renewers.pipeline import STAGES, Pipeline, accepts_certificate, ways_out

DOC = Path(__file__).resolve().parents[2] / "docs" / "renewal.md"


def ways_out_doc() -> dict[str, str]:
    """status -> the doc table's row, from the section "Ways out"."""
    text = DOC.read_text()
    section = text.split("## Ways out", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `(\w+)`", line)
        if m:
            rows[m.group(1)] = line
    return rows


@pytest.fixture
async def env(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        f'[daemon]\nstate = "{tmp_path / "s.db"}"\n'
        '[[expressway]]\nname = "e1"\naddress = "e1.example.com"\n'
        'renewal = { ca = "portal" }\n'
        '[ca.portal]\nkind = "manual"\n'
    )
    config = load_config(path)
    store = await Store.open(config.daemon.state)
    events: list[Event] = []
    bus = EventBus()

    async def record(event: Event) -> None:
        events.append(event)

    bus.subscribe(record)
    pipeline = Pipeline(config, store, bus, Prober(TrustStore([])), {})
    yield pipeline, store, events
    await store.close()


async def put(store: Store, stage: str, status: str, data: dict | None = None) -> RenewalRow:
    now = datetime.now(UTC)
    row = RenewalRow(
        id=f"r-{stage}-{status}", target="e1", status=status, stage=stage, reason="t",
        created_at=now, updated_at=now, next_at=None, attempts=1, message="", data=data or {},
    )  # fmt: skip
    stored = await store.create_renewal(row)
    assert stored.id == row.id
    return row


def test_every_active_status_is_documented():
    assert set(ways_out_doc()) >= set(ACTIVE_STATUSES)


@pytest.mark.parametrize("status", ACTIVE_STATUSES)
@pytest.mark.parametrize("stage", STAGES)
async def test_every_state_has_a_documented_way_out(env, stage, status):
    pipeline, store, events = env
    row = await put(store, stage, status)
    commands = ways_out(row)
    assert commands, f"{stage}/{status}: no way out"
    doc_row = ways_out_doc()[status]
    for command in commands:
        verb = command.split()[1]
        assert f"`{verb}" in doc_row or f"{verb} " in doc_row, f"{status}: {verb} not documented"
    if status in ("blocked", "failed"):
        resumed = await pipeline.retry_now(row.id)
        assert (resumed.status, resumed.stage) == ("running", stage)
    # cancel works from every state, and a new renewal starts afresh after it
    cancelled = await pipeline.cancel(row.id, "alice")
    assert cancelled.status == "cancelled" and not cancelled.active
    assert events[-1].type == "RenewalCancelled" and events[-1].renewal_id == row.id
    steps = await store.steps(row.id)
    assert steps[-1].result == "cancelled" and "alice" in steps[-1].message
    fresh = await pipeline.start("e1", "ManualRequest: expressway-certd renew --now")
    assert fresh.id != row.id and (fresh.status, fresh.stage) == ("running", "snapshot")
    with pytest.raises(CertdError, match="already cancelled"):
        await pipeline.cancel(row.id, "alice")


async def test_provide_replaces_a_certificate_that_validate_refused(env):
    pipeline, store, _ = env
    ca = CA.create("Portal CA")
    key_holder, key = ca.issue("e1.example.com", ["e1.example.com"])

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(key_holder.subject)
        .sign(key, hashes.SHA256())
    )

    bad, _ = ca.issue("e1.example.com", ["wrong.example.com"], public_key=key.public_key())
    row = await put(
        store, "validate", "blocked",
        {"csr_pem": csr.public_bytes(Encoding.PEM).decode(),
         "issued": {"leaf_pem": cert_pem(bad).decode(), "chain_pem": "", "profile": "x"},
         "ca_changed": True, "trust_cas": [{"sha256": "00", "subject": "CN=old"}]},
    )  # fmt: skip
    assert accepts_certificate(row)
    good, _ = ca.issue("e1.example.com", ["e1.example.com"], public_key=key.public_key())
    new = await pipeline.provide(row.id, good, [ca.cert])
    assert (new.status, new.stage) == ("running", "issued")
    assert new.data["issued"]["leaf_pem"] == cert_pem(good).decode()
    assert "trust_cas" not in new.data and "ca_changed" not in new.data
    assert (await store.steps(row.id))[-1].result == "provided"


async def test_provide_names_what_the_handed_in_certificate_lacks(env):
    """The same comparison as every CA connector's (dropped_from): a hand-signed certificate
    missing a SAN is taken (validate refuses it next) and its step names the SAN."""
    pipeline, store, _ = env
    ca = CA.create("Portal CA")
    key_holder, key = ca.issue("e1.example.com", ["e1.example.com"])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(key_holder.subject)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("e1.example.com"), x509.DNSName("alt.example.com")]
            ),
            False,
        )
        .sign(key, hashes.SHA256())
    )
    row = await put(
        store, "submit", "waiting", {"csr_pem": csr.public_bytes(Encoding.PEM).decode()}
    )
    short, _ = ca.issue("e1.example.com", ["e1.example.com"], public_key=key.public_key())
    with capture_logs() as logs:
        await pipeline.provide(row.id, short, [ca.cert])
    step = (await store.steps(row.id))[-1]
    assert step.result == "provided"
    assert step.message.endswith("it lacks what the CSR asked for: SANs DNS:alt.example.com")
    assert [e["dropped"] for e in logs if e["event"] == "ca.dropped"] == [
        "SANs DNS:alt.example.com"
    ]


async def test_provide_is_refused_where_it_does_not_apply(env):
    pipeline, store, _ = env
    row = await put(store, "install", "failed")
    assert not accepts_certificate(row)
    ca = CA.create("Portal CA")
    leaf, _ = ca.issue("e1.example.com", ["e1.example.com"])
    with pytest.raises(CertdError, match=r"not waiting for a certificate.*cancel"):
        await pipeline.provide(row.id, leaf, [])
