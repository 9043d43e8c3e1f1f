"""Per-CA order limits: the pure verdict and the store-backed counter (SQLite)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from expressway_certd.config import load_config
from expressway_certd.monitor.config import Config
from expressway_certd.monitor.config_ca import CALimits
from expressway_certd.monitor.events import EventBus
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import RenewalRow, Store
from expressway_certd.renewers.ca.manual import ManualConnector
from expressway_certd.renewers.calimit import (
    HOUR,
    OrderLimiter,
    Usage,
    Verdict,
    judge_order,
    on_clock_of,
)
from expressway_certd.renewers.manager import RenewalManager
from expressway_certd.renewers.pipeline import Pipeline

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


async def in_submit(store: Store, *ids: str) -> None:
    """Renewal rows at stage submit (an order counts as open only while its renewal is there)."""
    for rid in ids:
        await store.create_renewal(
            RenewalRow(
                id=rid,
                target=f"t-{rid}",
                status="running",
                stage="submit",
                reason="t",
                created_at=T0,
                updated_at=T0,
                next_at=None,
                attempts=0,
                message="",
                data={},
            )
        )


def test_judge_within_limits_grants():
    assert judge_order(CALimits(10, 2), "corp", Usage(open=1, last_hour=9), [], T0).granted
    assert judge_order(CALimits(), "corp", Usage(open=500, last_hour=5000), [], T0).granted


def test_judge_concurrent_limit_names_the_key_and_rechecks_soon():
    v = judge_order(CALimits(0, 2), "corp", Usage(open=2, last_hour=2), [], T0)
    assert not v.granted and v.retry_at is not None and T0 < v.retry_at <= T0 + timedelta(minutes=5)
    assert "[ca.corp] concurrent_orders" in v.reason


def test_judge_hourly_limit_waits_until_the_oldest_order_ages_out():
    starts = [T0 - timedelta(minutes=50), T0 - timedelta(minutes=20), T0 - timedelta(minutes=5)]
    v = judge_order(CALimits(3, 0), "corp", Usage(open=0, last_hour=3), starts, T0)
    assert not v.granted and v.retry_at == starts[0] + HOUR
    assert "[ca.corp] orders_per_hour" in v.reason


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    yield s
    await s.close()


async def test_take_and_release_count_in_the_store(store):
    limits = CALimits(orders_per_hour=3, concurrent_orders=2)
    a, b = OrderLimiter(store), OrderLimiter(store)  # e.g. the daemon and the CLI
    await in_submit(store, "r1", "r2", "r3", "r4")
    assert (await a.take("corp", limits, "r1", T0)).granted
    assert (await a.take("corp", limits, "r1", T0)).granted  # idempotent: the same order
    assert (await b.take("corp", limits, "r2", T0)).granted
    refused = await a.take("corp", limits, "r3", T0)
    assert not refused.granted and "concurrent_orders" in refused.reason
    assert (await a.take("other-ca", limits, "r3", T0)).granted  # limits are per CA
    await b.release("r1", T0 + timedelta(minutes=1))
    assert (await a.take("corp", limits, "r3", T0 + timedelta(minutes=2))).granted
    await a.release("r2", T0 + timedelta(minutes=3))
    hourly = await a.take("corp", limits, "r4", T0 + timedelta(minutes=4))
    assert not hourly.granted and hourly.retry_at == T0 + HOUR  # r1 started at T0
    assert (await a.take("corp", limits, "r4", T0 + HOUR + timedelta(seconds=1))).granted
    assert await a.usage("corp", T0 + HOUR + timedelta(seconds=1)) == Usage(open=2, last_hour=2)


async def test_a_cancelled_renewal_does_not_hold_its_slot(store):
    limits = CALimits(concurrent_orders=1)
    limiter = OrderLimiter(store)
    await in_submit(store, "r1", "r2")
    assert (await limiter.take("corp", limits, "r1", T0)).granted
    assert not (await limiter.take("corp", limits, "r2", T0)).granted
    row = await store.renewal("r1")
    assert row is not None
    # cancelled by an operator (no stage ran, so nothing closed the order)
    await store.save_renewal(RenewalRow(**{**row.__dict__, "status": "cancelled"}))
    assert (await limiter.take("corp", limits, "r2", T0)).granted


async def test_the_pipeline_waits_at_submit_when_the_ca_is_at_its_limit(tmp_path):
    """Wiring: the runner asks for a slot before the submit stage; the renewal over the limit
    waits (its CA is never asked) and says which key holds it back."""
    path = tmp_path / "c.toml"
    text = f'[daemon]\nstate = "{tmp_path / "s.db"}"\ndata_dir = "{tmp_path / "data"}"\n'
    for name in ("e1", "e2"):
        text += f'[[expressway]]\nname = "{name}"\naddress = "{name}.example.com"\n'
        text += 'renewal = { ca = "portal" }\n'
    path.write_text(text + '[ca.portal]\nkind = "manual"\nconcurrent_orders = 1\n')
    cfg = load_config(path)
    assert cfg.cas["portal"].limits == CALimits(concurrent_orders=1)
    store = await Store.open(cfg.daemon.state)
    try:
        asked: list[str] = []

        class CountingManual(ManualConnector):
            async def submit(self, *args, **kwargs):
                asked.append("submit")
                return await super().submit(*args, **kwargs)

        connectors = {"portal": CountingManual(cfg.cas["portal"], data_dir=cfg.daemon.data_dir)}
        p = Pipeline(cfg, store, EventBus(), Prober(TrustStore([])), connectors)
        now = datetime.now(UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "e.example.com")]))
            .sign(key, hashes.SHA256())
        )
        csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        for rid, target in (("r1", "e1"), ("r2", "e2")):
            await store.create_renewal(
                RenewalRow(
                    id=rid,
                    target=target,
                    status="running",
                    stage="submit",
                    reason="t",
                    created_at=now,
                    updated_at=now,
                    next_at=None,
                    attempts=0,
                    message="",
                    data={"csr_pem": csr_pem},
                )
            )
        await p.run("r1")
        second = await p.run("r2")
        assert len(asked) == 1  # only the renewal with the slot reached its CA
        assert (second.status, second.stage) == ("waiting", "submit")
        assert "[ca.portal] concurrent_orders" in second.message
        assert second.next_at is not None and second.next_at > now
    finally:
        await store.close()


def test_a_retry_time_judged_on_the_databases_clock_is_moved_onto_the_callers():
    database_now = T0 + timedelta(minutes=90)  # the caller's clock is 90 minutes behind
    verdict = Verdict(False, database_now + timedelta(minutes=40), "full")
    moved = on_clock_of(verdict, database_now, T0)
    assert moved == Verdict(False, T0 + timedelta(minutes=40), "full")
    assert on_clock_of(Verdict(True), database_now, T0) == Verdict(True)


async def test_a_completed_order_wakes_the_longest_waiting_renewal_one_per_slot(store):
    """The limiter queues the renewals refused by concurrent_orders and wakes them, oldest
    first, one per order closed in this process; the slot is still taken in the store."""
    limits = CALimits(concurrent_orders=1)
    limiter = OrderLimiter(store)
    woken: list[str] = []
    limiter.on_wake = woken.append
    await in_submit(store, "r1", "r2", "r3", "r4")
    assert (await limiter.take("corp", limits, "r1", T0)).granted
    for rid in ("r2", "r3", "r4"):
        refused = await limiter.take("corp", limits, rid, T0)
        assert not refused.granted and refused.waits_for_slot
        # nothing wakes it sooner in another process: it asks again within the re-check
        assert refused.retry_at is not None and T0 < refused.retry_at <= T0 + timedelta(minutes=1)
    assert limiter.waiting("corp") == ["r2", "r3", "r4"] and woken == []
    await limiter.release("r1", T0)
    assert woken == ["r2"]  # one slot freed: one renewal woken, the longest waiting
    assert (await limiter.take("corp", limits, "r2", T0)).granted
    assert woken == ["r2"]  # no slot left: nobody else woken
    await limiter.release("r2", T0)
    assert woken == ["r2", "r3"]
    limiter.settle("r3")  # r3's run ended without asking (cancelled meanwhile): pass it on
    assert woken == ["r2", "r3", "r4"] and limiter.waiting("corp") == []
    assert (await limiter.take("corp", limits, "r4", T0)).granted
    limiter.settle("r4")  # it asked: nothing to pass on
    assert woken == ["r2", "r3", "r4"]
    await limiter.release("r-without-order", T0)  # closes nothing: wakes nobody
    assert woken == ["r2", "r3", "r4"]


async def test_a_woken_renewal_that_leaves_free_slots_wakes_the_next(store):
    limits = CALimits(concurrent_orders=3)
    limiter = OrderLimiter(store)
    woken: list[str] = []
    limiter.on_wake = woken.append
    await in_submit(store, "r1", "r2", "r3", "r4", "r5", "r6")
    for rid in ("r1", "r2", "r3"):
        assert (await limiter.take("corp", limits, rid, T0)).granted
    for rid in ("r4", "r5", "r6"):
        assert not (await limiter.take("corp", limits, rid, T0)).granted
    # r2 and r3 end without their orders being closed here (another process moved them on)
    for rid in ("r2", "r3"):
        row = await store.renewal(rid)
        assert row is not None
        await store.save_renewal(RenewalRow(**{**row.__dict__, "stage": "install"}))
    await limiter.release("r1", T0)
    assert woken == ["r4"]
    assert (await limiter.take("corp", limits, "r4", T0)).granted  # 1 open of 3: wake on
    assert woken == ["r4", "r5"]
    assert (await limiter.take("corp", limits, "r5", T0)).granted  # 2 open of 3: wake on
    assert woken == ["r4", "r5", "r6"]
    assert (await limiter.take("corp", limits, "r6", T0)).granted  # 3 of 3: nobody left
    assert await limiter.usage("corp", T0) == Usage(open=3, last_hour=6)


@dataclass
class TwoAtSubmit:
    """Two boxes renewing through one manual CA with `concurrent_orders = 1`: renewals r1 (e1)
    and r2 (e2) stand at submit with CSRs for one key; `asked` counts the CA's submissions."""

    cfg: Config
    store: Store
    connectors: dict[str, ManualConnector]
    asked: list[str]
    key: ec.EllipticCurvePrivateKey
    name: x509.Name
    now: datetime


async def two_at_submit(tmp_path: Path) -> TwoAtSubmit:
    path = tmp_path / "c.toml"
    text = f'[daemon]\nstate = "{tmp_path / "s.db"}"\ndata_dir = "{tmp_path / "data"}"\n'
    for name in ("e1", "e2"):
        text += f'[[expressway]]\nname = "{name}"\naddress = "{name}.example.com"\n'
        text += 'renewal = { ca = "portal" }\n'
    path.write_text(text + '[ca.portal]\nkind = "manual"\nconcurrent_orders = 1\n')
    cfg = load_config(path)
    asked: list[str] = []

    class CountingManual(ManualConnector):
        async def submit(self, *args, **kwargs):
            asked.append("submit")
            return await super().submit(*args, **kwargs)

    connectors: dict[str, ManualConnector] = {
        "portal": CountingManual(cfg.cas["portal"], data_dir=cfg.daemon.data_dir)
    }
    store = await Store.open(cfg.daemon.state)
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "e.example.com")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    for rid, target in (("r1", "e1"), ("r2", "e2")):
        await store.create_renewal(
            RenewalRow(
                id=rid, target=target, status="running", stage="submit", reason="t",
                created_at=now, updated_at=now, next_at=None, attempts=0, message="",
                data={"csr_pem": csr_pem},
            )
        )  # fmt: skip
    return TwoAtSubmit(cfg, store, connectors, asked, key, name, now)


async def test_the_pipeline_runs_a_waiting_renewal_as_soon_as_an_order_completes(tmp_path):
    """Wiring: a renewal refused a slot waits at submit with a re-check up to a minute away;
    when the order that held the slot completes (its certificate came: the renewal moved past
    issued), the pipeline hands the waiter to its spawner, and the waiter's run reaches the CA
    at once instead of at its re-check. The limit holds all along (one order open)."""
    boxes = await two_at_submit(tmp_path)
    cfg, store, connectors, asked = boxes.cfg, boxes.store, boxes.connectors, boxes.asked
    key, name, now = boxes.key, boxes.name, boxes.now
    try:
        p = Pipeline(cfg, store, EventBus(), Prober(TrustStore([])), connectors)
        spawned: list[str] = []
        p.wake_with(spawned.append)  # the daemon passes RenewalManager.spawn
        first = await p.run("r1")
        assert first.stage == "issued" and asked == ["submit"]  # r1 holds the one slot
        second = await p.run("r2")
        assert (second.status, second.stage) == ("waiting", "submit")
        assert second.next_at is not None and second.next_at > datetime.now(UTC)
        assert (await p.run("r2")).next_at == second.next_at  # not due: nothing happens
        assert asked == ["submit"] and spawned == []
        leaf = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=90))
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        await p.provide("r1", leaf, [])  # the CA's certificate came for r1
        assert spawned == []  # still at issued: the order is open until that stage is done
        moved = await p.run("r1")
        assert moved.stage not in ("submit", "issued")  # r1's order completed: slot free
        assert spawned == ["r2"]
        woken = await p.run("r2")  # what RenewalManager.spawn does with it
        assert asked == ["submit", "submit"] and woken.stage == "issued"
        assert await p.limiter.usage("portal", datetime.now(UTC)) == Usage(open=1, last_hour=2)
    finally:
        await store.close()


async def test_the_daemons_renewal_manager_runs_a_woken_renewal_by_itself(tmp_path):
    """Wiring in the daemon: RenewalManager hands the pipeline its spawner, so a renewal
    refused a slot reaches its CA once the order holding the slot completes, with no renewal
    check in between (its re-check is 30-60 s away)."""
    boxes = await two_at_submit(tmp_path)
    cfg, store, connectors, asked = boxes.cfg, boxes.store, boxes.connectors, boxes.asked
    try:
        manager = RenewalManager(
            cfg, store, EventBus(), Prober(TrustStore([])), connectors=connectors
        )
        await manager.pipeline.run("r1")
        waiting = await manager.pipeline.run("r2")
        assert waiting.status == "waiting" and asked == ["submit"]
        await manager.pipeline.cancel("r1", "alice")  # its order ends: the slot is free
        await manager.drain()  # the woken run of r2, spawned by the manager itself
        assert asked == ["submit", "submit"]
        row = await store.renewal("r2")
        assert row is not None and row.stage == "issued"
        await manager.aclose()
    finally:
        await store.close()
