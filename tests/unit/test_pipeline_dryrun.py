"""The dry run behind `plan` (renewers/pipeline/dryrun.py) runs the pipeline's own snapshot
and preflight stages against a fake box and a fake CA: what it records is what a renewal
would record, a refusal is the stage's own outcome, and nothing past preflight runs."""

from __future__ import annotations

import pytest
from expressway_certd_lab.pki import CA

from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.renewers import pipeline as pipeline_module
from expressway_certd.renewers.ca.base import CACapabilities
from expressway_certd.renewers.expressway import OperationUnsupported, SystemInfo, ZoneState
from expressway_certd.renewers.pipeline import DRY_RUN_STAGES, STAGES, Advance, dry_run
from tests.unit.fakes import FakeDevices
from tests.unit.test_pipeline_runner import config

SERVER_AUTH, CLIENT_AUTH = "1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"


class FakeBox:
    """An Expressway-C on X15.4 that answers the snapshot's reads and records every call."""

    def __init__(self, cert, *, zones_supported: bool = True) -> None:
        self.cert = cert
        self.zones_supported = zones_supported
        self.calls: list[str] = []

    async def system_info(self):
        self.calls.append("system_info")
        return SystemInfo(name="e1", version="X15.4", role="c")

    async def server_certificate(self):
        self.calls.append("server_certificate")
        return self.cert

    async def zones(self):
        self.calls.append("zones")
        if not self.zones_supported:
            raise OperationUnsupported("e1: the box's API has no zone status (/api/raml)")
        return [ZoneState("To E", "TraversalClient", "Active")]

    async def acme_scheduler(self, role=None):
        self.calls.append("acme_scheduler")
        return False

    async def server_eku_upload_if_relevant(self, role):
        self.calls.append("server_eku_upload_if_relevant")
        return None


class FakeCA:
    def __init__(self, ekus: frozenset[str] | None) -> None:
        self.ekus = ekus

    def capabilities(self) -> CACapabilities:
        return CACapabilities(kind="fake", ekus=self.ekus)

    async def submit(self, csr):
        raise AssertionError("the dry run never submits")


@pytest.fixture
def current():
    leaf, _ = CA.create("Old CA").issue("e1.example.com", ["e1.example.com"])
    return leaf


async def run(tmp_path, box, ca):
    cfg = config(tmp_path)
    return await dry_run(
        cfg,
        cfg.target("e1"),
        ca,
        FakeDevices(box, "the dry run never touches Unified CM"),
        Prober(TrustStore([])),
    )


async def test_the_dry_run_records_what_snapshot_and_preflight_would(tmp_path, current):
    box = FakeBox(current)
    result = await run(tmp_path, box, FakeCA(frozenset({SERVER_AUTH, CLIENT_AUTH})))
    assert [stage for stage, _ in result.outcomes] == ["snapshot", "preflight"]
    assert all(isinstance(o, Advance) for _, o in result.outcomes) and result.stopped is None
    snap, plan = result.record.snapshot, result.record.plan
    assert snap is not None and (snap.version, snap.role) == ("X15.4", "c")
    assert snap.zones == (ZoneState("To E", "TraversalClient", "Active"),)
    assert plan is not None and plan.sans == ("e1.example.com",)
    assert set(plan.required_eku) == {SERVER_AUTH, CLIENT_AUTH}  # X15.4 C: FN74362
    # read-only: the box was only read, and nothing past preflight ran
    assert set(box.calls) <= {
        "system_info", "server_certificate", "zones", "acme_scheduler",
        "server_eku_upload_if_relevant",
    }  # fmt: skip
    assert STAGES[:2] == DRY_RUN_STAGES


async def test_a_ca_that_cannot_deliver_the_eku_is_refused_by_preflight(tmp_path, current):
    result = await run(tmp_path, FakeBox(current), FakeCA(frozenset({SERVER_AUTH})))
    assert result.stopped is not None
    stage, why = result.stopped
    assert stage == "preflight" and "without TLS Web Client Authentication" in why
    assert result.record.plan is not None  # the plan is still shown


async def test_a_box_without_zone_status_stops_the_dry_run_at_snapshot(tmp_path, current):
    """The renewal blocks there (issue 9), so `plan` must say so rather than plan on."""
    result = await run(tmp_path, FakeBox(current, zones_supported=False), FakeCA(None))
    assert result.stopped == ("snapshot", "e1: the box's API has no zone status (/api/raml)")
    assert result.record.snapshot is None and len(result.outcomes) == 1


async def test_the_dry_run_calls_the_stage_functions_the_runner_calls(
    tmp_path, current, monkeypatch
):
    """One table for both: replacing a stage in STAGE_FUNCTIONS changes the dry run too."""
    seen: list[str] = []
    real = pipeline_module.STAGE_FUNCTIONS["preflight"]

    async def spy(ctx):
        seen.append(ctx.target.name)
        return await real(ctx)

    monkeypatch.setitem(pipeline_module.STAGE_FUNCTIONS, "preflight", spy)
    await run(tmp_path, FakeBox(current), FakeCA(None))
    assert seen == ["e1"]
