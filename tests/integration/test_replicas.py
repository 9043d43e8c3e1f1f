"""The replica registry on a real PostgreSQL; refused on SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from monitor.errors import ConfigError
from monitor.replicas import Registry, Replica, assign
from monitor.store import Store
from tests.pg import fresh_database


@pytest.fixture(scope="module")
def pg_url(pg_server):
    return fresh_database(pg_server)


def replica(name: str) -> Replica:
    return Replica(id=f"{name}:1:00", host=name, pid=1, version="test")


async def test_register_heartbeat_and_death(pg_url):
    store = await Store.open(pg_url)
    try:
        regs = [Registry(store, replica(n), timeout=timedelta(seconds=30)) for n in "abc"]
        for r in regs:
            await r.register()
        assert await regs[0].live() == ["a:1:00", "b:1:00", "c:1:00"]

        # c stops heartbeating: an hour later (by the database's clock) it is dead
        async with store.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "UPDATE replicas SET heartbeat_at = now() - interval '1 hour' WHERE id = 'c:1:00'"
                )
            )
        await regs[0].heartbeat()
        await regs[1].heartbeat()
        live = await regs[1].live()
        assert live == ["a:1:00", "b:1:00"]
        split = assign([f"t{i}" for i in range(50)], live)
        assert set(split) == {"a:1:00", "b:1:00"}

        # c comes back (its heartbeat re-registers it) and is live again
        await regs[2].heartbeat()
        assert "c:1:00" in await regs[0].live()

        # a leaves cleanly; long-dead rows are pruned
        await regs[0].deregister()
        assert await regs[1].live() == ["b:1:00", "c:1:00"]
        async with store.engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE replicas SET heartbeat_at = now() - interval '2 days'")
            )
        assert await regs[1].prune(timedelta(days=1)) == 2
        assert await regs[1].live() == []
        # a pruned replica's heartbeat registers it again
        await regs[1].heartbeat()
        assert await regs[1].live() == ["b:1:00"]
    finally:
        await store.close()


async def test_replicas_on_sqlite_are_refused_with_the_fix(tmp_path):
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    try:
        with pytest.raises(ConfigError) as info:
            Registry(store, replica("a"), timeout=timedelta(seconds=30))
        message = str(info.value)
        assert "single-machine store" in message and "postgresql://" in message
    finally:
        await store.close()
