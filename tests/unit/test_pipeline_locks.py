"""Locks of a dead process (issue 13, finding 6): a process SIGKILLed while it holds a lease
(a renewal's, `cucm:NAME`, `restart:CLUSTER`) never releases it; the next process on the same
host takes it over at once, whichever lock it is. A live holder keeps it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from expressway_certd.monitor.store import RenewalRow, Store
from expressway_certd.renewers.pipeline import LEASE, holding, take_lease

HOLDER = textwrap.dedent(
    """
    import asyncio, os, socket, sys
    from datetime import UTC, datetime
    from expressway_certd.monitor.store import Store
    from expressway_certd.renewers.pipeline import LEASE

    async def main():
        store = await Store.open(sys.argv[1])
        owner = f"{socket.gethostname()}:{os.getpid()}:held"
        assert await store.claim_lease(sys.argv[2], owner, datetime.now(UTC), LEASE)
        print(owner, flush=True)
        await asyncio.Event().wait()  # holds it until killed

    asyncio.run(main())
    """
)


async def hold(url: str, name: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, url, name,
        stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    return proc, line.decode().strip()


@pytest.mark.parametrize("name", ["cucm:cucm1", "restart:expressway-c.lab.example"])
async def test_lease_of_a_killed_process_is_taken_over_at_once(tmp_path, name):
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    store = await Store.open(url)
    me = f"{socket.gethostname()}:{os.getpid()}:next"
    proc, owner = await hold(url, name)
    try:
        assert await store.lease_owner(name) == owner
        assert not await take_lease(store, name, me, datetime.now(UTC))  # alive: kept
        os.kill(proc.pid, signal.SIGKILL)  # e.g. during the trust stage
        assert await proc.wait() == -signal.SIGKILL
        assert await take_lease(store, name, me, datetime.now(UTC))  # no 3-minute wait
        assert await store.lease_owner(name) == me
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await store.close()


async def test_holder_on_another_host_is_left_to_expiry(tmp_path):
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    try:
        other = "some-other-host:1:abc"
        assert await store.claim_lease("cucm:cucm1", other, datetime.now(UTC), LEASE)
        me = f"{socket.gethostname()}:{os.getpid()}:next"
        assert not await take_lease(store, "cucm:cucm1", me, datetime.now(UTC))
    finally:
        await store.close()


async def test_a_renewal_on_sqlite_keeps_leases_as_they_were(tmp_path):
    """SQLite has no sessions to judge: a renewal held by another host waits for the lease to
    run out; one held by a dead process of this host is taken over at once."""
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    assert store.session_locks is None
    now = datetime.now(UTC)
    row = RenewalRow(
        id="r1", target="t1", status="running", stage="submit", reason="t",
        created_at=now, updated_at=now, next_at=None, attempts=0, message="", data={},
    )  # fmt: skip
    await store.create_renewal(row)
    me = f"{socket.gethostname()}:{os.getpid()}:next"
    clock = lambda: datetime.now(UTC)  # noqa: E731
    try:
        assert await store.claim_renewal("r1", "some-other-host:1:abc", now, LEASE)
        async with holding(store, "r1", me, clock) as hold:
            assert not await hold.claim()
        assert await store.renewal_lease_owner("r1") == "some-other-host:1:abc"
        assert await store.claim_renewal("r1", "x", now + LEASE * 2, LEASE)  # ran out
        dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        await dead.wait()
        gone = f"{socket.gethostname()}:{dead.pid}:gone"
        assert await store.claim_renewal("r1", gone, now + LEASE * 4, LEASE, take_from="x")
        async with holding(store, "r1", me, clock) as hold:
            assert await hold.claim()  # a dead process of this host: at once
            assert await store.renewal_lease_owner("r1") == me
        assert await store.renewal_lease_owner("r1") is None
    finally:
        await store.close()
