"""The typed renewal record (renewers/pipeline/record.py) reads the `data` column of rows
written before it existed and writes the same shape back: the dicts below are what the
untyped pipeline stored (its keys and value shapes, copied from the stages that wrote them)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from expressway_certd.monitor.events import EventBus
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import RenewalRow, Store
from expressway_certd.renewers.expressway import ZoneState
from expressway_certd.renewers.pipeline import (
    CLIENT,
    SERVER,
    Pipeline,
    RecordError,
    RenewalRecord,
    TrustedCa,
    kind_of,
    record_of,
)
from expressway_certd.renewers.validate import Plan
from tests.unit.test_pipeline_runner import config  # the runner tests' two-target config

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)

# A renewal stored at stage verify by the untyped pipeline (every key it wrote, JSON-decoded).
TODAYS_ROW = {
    "snapshot": {
        "version": "X15.4", "role": "c", "cert_pem": "-----BEGIN CERTIFICATE-----\n...",
        "sha256": "ab" * 32, "aki": "cd" * 20, "issuer": "CN=Old CA",
        "not_after": "2027-01-01T00:00:00+00:00", "sans": ["DNS:c1.example.com"],
        "zones": [{"name": "To E", "kind": "TraversalClient", "state": "Active", "reason": ""}],
        "acme_scheduler": False, "server_eku_upload": None, "peer_version": None,
    },
    "plan": json.loads(json.dumps(dataclasses.asdict(Plan(
        target="c1", role="c", version="X15.4", sans=("c1.example.com",),
        required_eku=("1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"), zones=("traversal-client",),
        eku_rule="x15.4-c-needs-client-auth",
    )))),
    "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\n...",
    "handle": {"kind": "est", "id": 7},
    "retry_at": "2026-12-03T08:05:00+00:00",
    "pending_reason": "waiting for the CA manager",
    "issued": {"leaf_pem": "LEAF", "chain_pem": "CHAIN", "profile": None},
    "ca_changed": True,
    "trust_cas": [{"sha256": "ef" * 32, "subject": "CN=New CA"}],
    "approved_by": "CORP\\jdoe",
    "cucm_restarts": {
        "cucm1": {"Cisco CallManager": "restarted", "Cisco Tftp": "not-activated"},
        "cucm2": {"Cisco CallManager": "restarted"},
    },
    "installed_sha256": "12" * 32,
    "verify_deadline": "2026-12-03T08:10:00+00:00",
}  # fmt: skip


def test_a_row_in_todays_shape_reads_typed_and_writes_back_unchanged() -> None:
    record = RenewalRecord.from_data(TODAYS_ROW)
    assert record.snapshot is not None and record.snapshot.zones == (
        ZoneState("To E", "TraversalClient", "Active", ""),
    )
    assert record.plan is not None and record.plan.sans == ("c1.example.com",)
    assert record.retry_at == datetime(2026, 12, 3, 8, 5, tzinfo=UTC)
    assert record.trust_cas == (TrustedCa("ef" * 32, "CN=New CA"),)
    assert record.restarted("cucm1") == {
        "Cisco CallManager": "restarted",
        "Cisco Tftp": "not-activated",
    }
    assert json.loads(json.dumps(record.to_data())) == TODAYS_ROW


# A client certificate renewal (X15.5) past its restart: the keys only such a renewal writes.
CLIENT_ROW = {**TODAYS_ROW, "kind": "client", "client_restarted": True}


def test_every_field_of_the_record_is_a_stored_key() -> None:
    """A field added to the record without a key in the stored shape would be lost."""
    fields = {f.name for f in dataclasses.fields(RenewalRecord)} - {"extra"}
    assert fields == set(CLIENT_ROW)


def test_a_client_renewal_row_keeps_its_kind_and_old_rows_are_server_renewals() -> None:
    record = RenewalRecord.from_data(CLIENT_ROW)
    assert record.kind == CLIENT and record.client_restarted is True
    assert json.loads(json.dumps(record.to_data())) == CLIENT_ROW
    assert RenewalRecord.from_data(TODAYS_ROW).kind == SERVER
    row = RenewalRow(
        id="r1", target="c1", status="running", stage="csr", reason="t", created_at=NOW,
        updated_at=NOW, next_at=None, attempts=0, message="", data=TODAYS_ROW,
    )  # fmt: skip
    assert kind_of(row) == SERVER
    assert kind_of(dataclasses.replace(row, data=CLIENT_ROW)) == CLIENT


def test_a_kind_this_version_does_not_renew_is_a_record_error() -> None:
    with pytest.raises(RecordError, match="unknown renewal kind 'both'"):
        RenewalRecord.from_data({"kind": "both"})


def test_keys_of_another_version_are_kept() -> None:
    data = {"csr_pem": "X", "from_a_newer_version": {"a": 1}}
    assert RenewalRecord.from_data(data).to_data() == data


def test_an_empty_or_partial_row_loads() -> None:
    assert RenewalRecord.from_data({}).to_data() == {}
    early = {"snapshot": {"aki": "x"}, "issued": {"leaf_pem": "L"}}
    record = RenewalRecord.from_data(early)
    assert record.snapshot is not None and record.snapshot.aki == "x"
    assert record.issued is not None and record.issued.chain_pem == ""


def test_a_known_key_of_the_wrong_shape_names_the_renewal() -> None:
    row = RenewalRow(
        id="r9", target="c1", status="running", stage="approve", reason="t", created_at=NOW,
        updated_at=NOW, next_at=None, attempts=0, message="", data={"trust_cas": "oops"},
    )  # fmt: skip
    with pytest.raises(RecordError, match=r"renewal r9 \(c1\).*cancel"):
        record_of(row)


async def test_a_stored_row_round_trips_through_the_store(tmp_path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    try:
        row = RenewalRow(
            id="r1", target="c1", status="running", stage="verify", reason="t", created_at=NOW,
            updated_at=NOW, next_at=None, attempts=0, message="", data=TODAYS_ROW,
        )  # fmt: skip
        await store.create_renewal(row)
        stored = await store.renewal("r1")
        assert stored is not None
        assert record_of(stored).approved_by == "CORP\\jdoe"
        assert record_of(stored).to_data() == TODAYS_ROW
    finally:
        await store.close()


async def test_the_runner_blocks_a_row_it_cannot_read_and_keeps_its_data(tmp_path) -> None:
    cfg = config(tmp_path)
    store = await Store.open(cfg.daemon.state)
    try:
        bad = {"trust_cas": "oops", "csr_pem": "kept"}
        row = RenewalRow(
            id="r2", target="e1", status="running", stage="approve", reason="t",
            created_at=NOW - timedelta(minutes=1), updated_at=NOW - timedelta(minutes=1),
            next_at=None, attempts=0, message="", data=bad,
        )  # fmt: skip
        await store.create_renewal(row)
        pipeline = Pipeline(cfg, store, EventBus(), Prober(TrustStore([])), {"portal": None})
        after = await pipeline.run("r2")
        assert (after.status, after.stage) == ("blocked", "approve")
        assert "stored record" in after.message and "cancel" in after.message
        stored = await store.renewal("r2")
        assert stored is not None and stored.data == bad
    finally:
        await store.close()
