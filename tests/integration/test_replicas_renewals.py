"""Renewal checks split by owner, on a real PostgreSQL (issue 11 part 1).

Two replicas share one database: each resumes only the renewals of the targets it owns (by the
same rendezvous split that decides polling), together they cover every due renewal exactly
once, and an operator command for a target works from the replica that does not own it.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from expressway_certd.config import load_config
from expressway_certd.monitor.errors import DeviceError
from expressway_certd.monitor.events import EventBus
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.replicas import Ownership
from expressway_certd.monitor.store import RenewalRow, Store
from expressway_certd.renewers.manager import RenewalManager
from tests.pg import fresh_database

pytestmark = pytest.mark.integration

TARGETS = [f"e{i}" for i in range(12)]
REPLICAS = ("a:1:00", "b:1:00")


class RecordingDevices:
    """Records which targets' boxes a replica contacted; every box is unreachable, so each
    renewal run contacts its box once (snapshot) and then backs off."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    @asynccontextmanager
    async def expressway(self, target):
        self.asked.append(target.name)
        raise DeviceError(f"{target.name}: connection refused")
        yield

    def unified_cm(self, ucm):
        raise AssertionError("not used")


def config(tmp_path, approval: str = "auto"):
    path = tmp_path / "c.toml"
    text = f'[daemon]\nstate = "{tmp_path / "s.db"}"\ndata_dir = "{tmp_path / "data"}"\n'
    for name in TARGETS:
        text += (
            f'[[expressway]]\nname = "{name}"\naddress = "{name}.example.com"\n'
            f'renewal = {{ ca = "portal", approval = "{approval}" }}\n'
        )
    path.write_text(text + '[ca.portal]\nkind = "manual"\n')
    return load_config(path)


@pytest.fixture
def pg_url(pg_server):  # a fresh database each: the tests start renewals for the same targets
    return fresh_database(pg_server)


def replica(me: str, cfg, store: Store) -> tuple[RenewalManager, RecordingDevices, Ownership]:
    ownership = Ownership(me)
    ownership.update(REPLICAS, TARGETS)
    devices = RecordingDevices()
    manager = RenewalManager(
        cfg, store, EventBus(), Prober(TrustStore([])), devices=devices, owns=ownership.owns
    )
    return manager, devices, ownership


async def test_each_replica_runs_only_the_renewals_of_its_targets(pg_url, tmp_path):
    cfg = config(tmp_path)
    stores = [await Store.open(pg_url) for _ in REPLICAS]
    try:
        (ma, da, oa), (mb, db, ob) = (
            replica(r, cfg, s) for r, s in zip(REPLICAS, stores, strict=True)
        )
        assert oa.owned and ob.owned and not (oa.owned & ob.owned)  # both own some
        for name in TARGETS:
            await ma.pipeline.start(name, "test")
        await ma.run_due()
        await mb.run_due()
        await ma.drain()  # run_due runs each renewal in its own task
        await mb.drain()
        assert sorted(da.asked) == sorted(oa.owned)
        assert sorted(db.asked) == sorted(ob.owned)
        assert sorted(da.asked + db.asked) == sorted(TARGETS)  # every one, exactly once
        # The backlog is the fleet's, read from the database: both replicas count all twelve.
        assert ma.backlog["portal"].waiting == mb.backlog["portal"].waiting == len(TARGETS)
        for row in await stores[0].renewals_for(active_only=True, limit=100):
            assert (row.status, row.stage) == ("failed", "snapshot")  # ran, backed off
        # The box of a target the replica does not own is never read for a decision either.
        foreign = sorted(ob.owned)[0]
        await ma.after_poll(cfg.target(foreign), [object()])  # type: ignore[list-item]
        assert foreign not in da.asked
        await ma.aclose()
        await mb.aclose()
    finally:
        for s in stores:
            await s.close()


async def test_an_operator_command_works_from_a_replica_that_does_not_own_the_target(
    pg_url, tmp_path
):
    cfg = config(tmp_path, approval="manual")
    stores = [await Store.open(pg_url) for _ in REPLICAS]
    try:
        (ma, _, oa), (mb, db, _) = (
            replica(r, cfg, s) for r, s in zip(REPLICAS, stores, strict=True)
        )
        target = sorted(oa.owned)[0]
        now = datetime.now(UTC)
        row = RenewalRow(
            id=f"op-{target}", target=target, status="waiting", stage="approve", reason="t",
            created_at=now, updated_at=now, next_at=now + timedelta(days=1), attempts=1,
            message="approval mode manual", data={"snapshot": {"aki": "x"}},
        )  # fmt: skip
        await stores[0].create_renewal(row)
        approved = await mb.pipeline.approve(row.id, "bob")  # from the replica that does not own it
        assert approved.data["approved_by"] == "bob"
        await mb.run_due()
        await mb.drain()
        assert target not in db.asked  # approved, but b leaves the run to its owner
        stored = await stores[1].renewal(row.id)
        assert stored is not None and stored.data["approved_by"] == "bob"
        await ma.aclose()
        await mb.aclose()
    finally:
        for s in stores:
            await s.close()
