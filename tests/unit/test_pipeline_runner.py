"""The runner's defects of issue 10: (1) an exception from a stage fails that renewal alone,
(2) no stale reads or last-writer-wins between the runner and operator commands, (3) no
magic string between the manual connector and the pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from expressway_certd_lab.pki import CA

from expressway_certd.config import load_config
from expressway_certd.monitor.errors import CertdError, DeviceError, StoreError
from expressway_certd.monitor.events import Event, EventBus
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import RenewalRow, Store
from expressway_certd.renewers import pipeline as pipeline_module
from expressway_certd.renewers.ca.manual import ManualConnector
from expressway_certd.renewers.manager import RenewalManager
from expressway_certd.renewers.pipeline import LEASE, Pipeline, RenewalRecord


class BrokenDevices:
    """e1's client hits a bug (RuntimeError); e2's box is unreachable (a DeviceError)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    @asynccontextmanager
    async def expressway(self, target):
        self.asked.append(target.name)
        if target.name == "e1":
            raise RuntimeError("unexpected answer shape")
        raise DeviceError(f"{target.name}: connection refused")
        yield

    def unified_cm(self, ucm):
        raise AssertionError("not used")


def config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        f'[daemon]\nstate = "{tmp_path / "s.db"}"\ndata_dir = "{tmp_path / "data"}"\n'
        '[[expressway]]\nname = "e1"\naddress = "e1.example.com"\nrenewal = { ca = "portal" }\n'
        '[[expressway]]\nname = "e2"\naddress = "e2.example.com"\nrenewal = { ca = "portal" }\n'
        '[ca.portal]\nkind = "manual"\n'
    )
    return load_config(path)


@pytest.fixture
async def env(tmp_path):
    cfg = config(tmp_path)
    store = await Store.open(cfg.daemon.state)
    events: list[Event] = []
    bus = EventBus()

    async def record(event: Event) -> None:
        events.append(event)

    bus.subscribe(record)
    yield cfg, store, bus, events
    await store.close()


async def test_an_exception_in_one_renewal_does_not_stop_the_others(env):
    cfg, store, bus, events = env
    devices = BrokenDevices()
    connectors = {"portal": ManualConnector(cfg.cas["portal"], data_dir=cfg.daemon.data_dir)}
    p = Pipeline(cfg, store, bus, Prober(TrustStore([])), connectors, devices=devices)
    e2 = await p.start("e2", "t")
    e1 = await p.start("e1", "t")  # newer: run_due runs it first
    with structlog.testing.capture_logs() as logs:
        await p.run_due()
    assert devices.asked == ["e1", "e2"]  # e2 still ran this tick
    row1, row2 = await store.renewal(e1.id), await store.renewal(e2.id)
    assert (row1.status, row1.stage) == ("failed", "snapshot")
    assert row1.next_at is not None and row1.next_at > row1.updated_at  # backoff
    assert "unexpected RuntimeError: unexpected answer shape" in row1.message
    assert "cancel" in row1.message
    assert (row2.status, row2.stage) == ("failed", "snapshot")
    assert [s.result for s in await store.steps(e1.id)] == ["failed"]
    failed = [e for e in events if e.type == "StageFailed"]
    assert {e.renewal_id for e in failed} == {e1.id, e2.id}
    raised = [entry for entry in logs if entry["event"] == "stage raised"]
    assert raised and raised[0]["exc_info"] is True and raised[0]["renewal"] == e1.id


class GatedStage:
    """Wraps the approve stage: it starts, then waits for the test to let it finish, so an
    operator command lands exactly while the stage runs (no sleeps)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, ctx):
        self.entered.set()
        await self.release.wait()
        return await pipeline_module.stage_approve(ctx)


async def put_waiting_approval(store: Store) -> RenewalRow:
    now = datetime.now(UTC)
    row = RenewalRow(
        id="r1", target="e1", status="waiting", stage="approve", reason="t", created_at=now,
        updated_at=now, next_at=now - timedelta(seconds=1), attempts=1,
        message="approval mode manual", data={"snapshot": {"aki": "x"}},
    )  # fmt: skip
    await store.create_renewal(row)
    return row


async def test_approve_during_a_running_stage_is_not_lost(env, monkeypatch, tmp_path):
    """Defect 2: the runner read the row without `approved_by`, an approve lands, then the
    runner's stale save would drop it. Now the approve waits for the lease (busy), and the
    retried approve is kept."""
    cfg, store, bus, _ = env
    text = (
        (tmp_path / "c.toml")
        .read_text()
        .replace(
            'renewal = { ca = "portal" }', 'renewal = { ca = "portal", approval = "manual" }', 1
        )
    )
    (tmp_path / "c.toml").write_text(text)
    cfg = load_config(tmp_path / "c.toml")
    gate = GatedStage()
    monkeypatch.setitem(pipeline_module.STAGE_FUNCTIONS, "approve", gate)
    runner = Pipeline(cfg, store, bus, Prober(TrustStore([])), {"portal": None})
    operator = Pipeline(cfg, store, bus, Prober(TrustStore([])), {})  # e.g. the CLI
    row = await put_waiting_approval(store)
    task = asyncio.create_task(runner.run(row.id))
    await gate.entered.wait()
    with pytest.raises(CertdError, match="busy"):
        await operator.approve(row.id, "bob")
    gate.release.set()
    ran = await task
    assert (ran.status, ran.stage) == ("waiting", "approve")  # not approved yet: waits again
    approved = await operator.approve(row.id, "bob")
    assert approved.data["approved_by"] == "bob"
    assert (await store.renewal(row.id)).data["approved_by"] == "bob"
    done = await runner.run(row.id)  # the runner reads it afresh after claiming
    assert done.stage == "install" or done.data.get("approved_by") == "bob"


@pytest.mark.parametrize("command", ["retry_now", "cancel"])
async def test_other_operator_commands_wait_for_a_running_stage(env, monkeypatch, command):
    """Defect 2 for `retry_now` (and `cancel`): while a stage runs, they write nothing and
    say the renewal is busy; once the stage is saved they apply to the fresh row."""
    cfg, store, bus, _ = env
    gate = GatedStage()
    monkeypatch.setitem(pipeline_module.STAGE_FUNCTIONS, "approve", gate)
    runner = Pipeline(cfg, store, bus, Prober(TrustStore([])), {"portal": None})
    operator = Pipeline(cfg, store, bus, Prober(TrustStore([])), {})  # e.g. the CLI
    row = await put_waiting_approval(store)
    task = asyncio.create_task(runner.run(row.id))
    await gate.entered.wait()
    act = {
        "retry_now": lambda: operator.retry_now(row.id),
        "cancel": lambda: operator.cancel(row.id, "bob"),
    }[command]
    with pytest.raises(CertdError, match="busy"):
        await act()
    assert (await store.renewal(row.id)).status == "waiting"  # nothing written meanwhile
    gate.release.set()
    ran = await task
    assert [s.result for s in await store.steps(row.id)] != []  # the stage's outcome was saved
    after = await act()
    assert after.updated_at >= ran.updated_at
    assert after.status == ("cancelled" if command == "cancel" else "running")


class OperatorBeforeClaim(Store):
    """The runner's store: its first claim of `renewal` first lets `operator` act, as another
    process (the CLI) would in the window between the runner's read and its claim."""

    runner_owner = ""
    operator: Callable[[], Awaitable[object]] | None = None

    async def claim_renewal(self, renewal_id, owner, now, ttl, *, take_from=None):
        if owner == self.runner_owner and self.operator is not None:
            act, self.operator = self.operator, None
            await act()
        return await super().claim_renewal(renewal_id, owner, now, ttl, take_from=take_from)


class UnreachableBoxes:
    """Every box refuses the connection (the install after approve then fails cleanly)."""

    @asynccontextmanager
    async def expressway(self, target):
        raise DeviceError(f"{target.name}: connection refused")
        yield

    def unified_cm(self, ucm):
        raise DeviceError(f"{ucm.name}: connection refused")


async def test_an_approve_between_the_runners_read_and_its_claim_is_kept(env, tmp_path):
    """Defect 2, the runner's side: `run` reads the row, an operator approves (holding the
    lease, then releasing it), then the runner claims. Without reading the row again after
    claiming, the runner would run approve on the stale row and save it without
    `approved_by`: the approval would be lost and the renewal wait again."""
    cfg, store, bus, _ = env
    text = (tmp_path / "c.toml").read_text()
    (tmp_path / "c.toml").write_text(
        text.replace('renewal = { ca = "portal" }', 'renewal = { ca = "portal", approval = "manual" }', 1)
    )  # fmt: skip
    cfg = load_config(tmp_path / "c.toml")
    runner_store = await OperatorBeforeClaim.open(cfg.daemon.state)
    try:
        runner = Pipeline(
            cfg, runner_store, bus, Prober(TrustStore([])), {"portal": None},
            devices=UnreachableBoxes(),
        )  # fmt: skip
        operator = Pipeline(cfg, store, bus, Prober(TrustStore([])), {})  # e.g. the CLI
        row = await put_waiting_approval(store)
        approvals: list[RenewalRow] = []

        async def approve() -> None:
            approvals.append(await operator.approve(row.id, "bob"))

        runner_store.runner_owner, runner_store.operator = runner.owner, approve
        ran = await runner.run(row.id)
        assert [a.data["approved_by"] for a in approvals] == ["bob"]  # the window was hit
        assert (ran.stage, ran.status) != ("approve", "waiting")  # approved: went on
        assert ran.stage == "install"
        assert (await store.renewal(row.id)).data["approved_by"] == "bob"
    finally:
        await runner_store.close()


async def test_a_writer_without_the_lease_cannot_overwrite(env):
    _, store, _, _ = env
    row = await put_waiting_approval(store)
    now = datetime.now(UTC)
    assert await store.claim_renewal(row.id, "host:1:a", now, LEASE)
    with pytest.raises(StoreError, match="no longer holds its lease"):
        await store.save_renewal(
            RenewalRow(**{**row.__dict__, "message": "stale"}), owner="host:2:b"
        )
    await store.save_renewal(RenewalRow(**{**row.__dict__, "message": "fresh"}), owner="host:1:a")
    assert (await store.renewal(row.id)).message == "fresh"


async def test_manual_ca_pending_reason_names_this_renewal(env, tmp_path):
    """Defect 3: the pipeline adds the `provide` command with the renewal id; the connector
    writes no placeholder for it to rewrite."""
    cfg, store, bus, _ = env
    connector = ManualConnector(cfg.cas["portal"], data_dir=tmp_path / "data")
    key_ca = CA.create("k")
    _, key = key_ca.issue("e1.example.com", ["e1.example.com"])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "e1.example.com")]))
        .sign(key, hashes.SHA256())
    )
    pending = await connector.submit(csr)
    assert "RENEWAL" not in pending.reason and pending.awaits_provide
    p = Pipeline(cfg, store, bus, Prober(TrustStore([])), {"portal": connector})
    ctx = pipeline_module.Context(
        renewal_id="20261203-abcd", target=cfg.target("e1"), config=cfg, devices=p.devices,
        ca=connector, ca_name="portal", prober=p.prober, now=lambda: datetime.now(UTC),
        record=RenewalRecord(csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode()),
    )  # fmt: skip
    outcome = await pipeline_module.stage_submit(ctx)
    assert "expressway-certd provide 20261203-abcd --cert" in ctx.record.pending_reason
    assert "RENEWAL" not in outcome.detail


class Crash(BaseException):
    """What a seam raises to stand for the process ending at that point."""


async def test_the_fault_seam_is_called_at_each_named_point_in_order(env):
    cfg, store, bus, _ = env
    points: list[tuple[str, str]] = []
    p = Pipeline(
        cfg, store, bus, Prober(TrustStore([])), {"portal": None}, devices=BrokenDevices(),
        fault_seam=lambda target, point: points.append((target, point)),
    )  # fmt: skip
    row = await p.start("e2", "t")
    await p.run(row.id)
    assert points == [("e2", "start"), ("e2", "snapshot-unsaved"), ("e2", "snapshot")]


async def test_a_crash_at_the_unsaved_point_leaves_the_stage_to_run_again(env):
    """`<stage>-unsaved` comes after the stage ran and before its outcome is persisted: a
    process ending there leaves the renewal as it was (no step row), so the next run repeats
    the stage; `<stage>` comes after persisting."""
    cfg, store, bus, _ = env

    def seam(target: str, point: str) -> None:
        if point == "snapshot-unsaved":
            raise Crash

    p = Pipeline(
        cfg, store, bus, Prober(TrustStore([])), {"portal": None}, devices=BrokenDevices(),
        fault_seam=seam,
    )  # fmt: skip
    row = await p.start("e2", "t")
    with pytest.raises(Crash):
        await p.run(row.id)
    after = await store.renewal(row.id)
    assert (after.stage, after.status, after.attempts) == ("snapshot", "running", 0)
    assert await store.steps(row.id) == []

    def after_persisting(target: str, point: str) -> None:
        if point == "snapshot":
            raise Crash

    p.fault_seam = after_persisting
    with pytest.raises(Crash):
        await p.run(row.id)
    assert [s.result for s in await store.steps(row.id)] == ["failed"]


class HeldDevices:
    """e1's box does not answer until the test lets it (a long restart, say); e2's refuses."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.release = asyncio.Event()

    @asynccontextmanager
    async def expressway(self, target):
        self.asked.append(target.name)
        if target.name == "e1":
            await self.release.wait()
        raise DeviceError(f"{target.name}: connection refused")
        yield

    def unified_cm(self, ucm):
        raise AssertionError("not used")


async def test_the_daemons_renewal_check_runs_each_due_renewal_in_its_own_task(env):
    """RenewalManager.run_due (the daemon's renewal check): a renewal whose stage takes long
    holds up neither the check nor the other due renewals (they ran one after the other)."""
    cfg, store, bus, _ = env
    devices = HeldDevices()
    e2_failed = asyncio.Event()

    async def watch(event: Event) -> None:
        if event.type == "StageFailed" and event.target == "e2":
            e2_failed.set()

    bus.subscribe(watch)
    connectors = {"portal": ManualConnector(cfg.cas["portal"], data_dir=cfg.daemon.data_dir)}
    manager = RenewalManager(
        cfg, store, bus, Prober(TrustStore([])), connectors=connectors, devices=devices
    )
    e2 = await manager.pipeline.start("e2", "t")
    await manager.pipeline.start("e1", "t")
    # returns while e1's stage is still held (the guards only stop a hung test)
    await asyncio.wait_for(manager.run_due(), 10)
    await asyncio.wait_for(e2_failed.wait(), 30)  # e2 ran to its outcome while e1 was held
    assert not devices.release.is_set() and sorted(devices.asked) == ["e1", "e2"]
    row2 = await store.renewal(e2.id)
    assert row2 is not None and (row2.status, row2.stage) == ("failed", "snapshot")
    devices.release.set()
    await manager.drain()
    assert manager.latest()["e1"].status == "failed"
    await manager.aclose()
