"""The replica registry on a real PostgreSQL; refused on SQLite, where a state file has one
daemon."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from expressway_certd.monitor.errors import ConfigError
from expressway_certd.monitor.replicas import Registry, Replica, assign, hold_sqlite_state
from expressway_certd.monitor.store import Store
from tests.helpers import DaemonProcess, free_port
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


def test_a_sqlite_state_file_is_held_by_one_daemon_at_a_time(tmp_path):
    state = tmp_path / "new" / "state.db"
    first = hold_sqlite_state(state)
    lock = state.with_name("state.db.daemon-lock")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    with pytest.raises(ConfigError) as info:
        hold_sqlite_state(state)
    message = str(info.value)
    assert f"another expressway-certd daemon (pid {os.getpid()} on " in message
    assert str(state) in message and "postgresql://" in message
    first.close()  # the daemon stopped (or died: the kernel drops the lock)
    hold_sqlite_state(state).close()


def sqlite_daemon_config(tmp_path: Path, name: str, port: int) -> Path:
    path = tmp_path / name
    path.write_text(
        f'[daemon]\nlisten = "127.0.0.1:{port}"\nstate = "{tmp_path / "state.db"}"\n'
        'poll_interval = "1m"\nprobe_timeout = "1s"\n\n'
        '[[expressway]]\nname = "expe"\nrole = "e"\naddress = "expe.example.com"\n'
        f'endpoints = [{{ host = "127.0.0.1", port = {free_port()}, service = "https" }}]\n'
    )
    return path


async def test_a_second_daemon_on_one_sqlite_file_is_refused_until_the_first_is_gone(tmp_path):
    """Issue 11: replicas on SQLite are refused with a clear error. Two `run` processes on one
    SQLite file would both poll every target and export every series twice."""
    port1, port2, port3 = free_port(), free_port(), free_port()
    first = await DaemonProcess(sqlite_daemon_config(tmp_path, "a.toml", port1), port1).start()
    try:
        await first.wait_for("/healthz", lambda status, _: status == 200)
        second = DaemonProcess(sqlite_daemon_config(tmp_path, "b.toml", port2), port2)
        await second.start()
        assert second.proc is not None
        try:
            code = await asyncio.wait_for(second.proc.wait(), 60)
        except TimeoutError:
            await second.stop()
            raise AssertionError(f"the second daemon was not refused:\n{second.output()}") from None
        assert code == 2, second.output()
        out = second.output()
        assert first.proc is not None
        assert f"another expressway-certd daemon (pid {first.proc.pid} on " in out
        assert "set [daemon] state = 'postgresql://user@host/db' on every replica" in out
        assert "Traceback" not in out
        await second.stop()
    finally:
        await first.stop(signal.SIGKILL)  # no clean release: the kernel drops the lock
    third = await DaemonProcess(sqlite_daemon_config(tmp_path, "c.toml", port3), port3).start()
    try:
        await third.wait_for("/healthz", lambda status, _: status == 200)
    finally:
        assert await third.stop(signal.SIGTERM) == 0
