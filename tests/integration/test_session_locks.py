"""Session advisory locks hand a dead holder's renewal over at once (issue 11 part 1), on a real
PostgreSQL.

A holder in a child process keeps a renewal (or a named lease such as `restart:<cluster>`):
its lease row says "owned until now + 3 min" and its session lock is held. While it lives, this
process cannot take over, though it is on another host as far as the owner ids go (so the
same-host shortcut of renewers/pipeline/locks.py does not apply). Once the holder's session is
gone (the process SIGKILLed, or its backend terminated as when its host drops off the
network) this process takes over at once, with the lease row still unexpired. The session
lock's connection is closed on every way out of a hold (success, exception, cancellation),
and the keys live apart from the single-bigint locks of the migrations and the CA limits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from expressway_certd.config import load_config
from expressway_certd.monitor.errors import CertdError, StoreError
from expressway_certd.monitor.events import EventBus
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.sessionlock import SessionLocks, advisory_key
from expressway_certd.monitor.store import RenewalRow, Store, leases, renewals
from expressway_certd.renewers.manager import RenewalManager
from expressway_certd.renewers.pipeline import LEASE, Pipeline, holding
from expressway_certd.renewers.pipeline.locks import exclusive
from tests.pg import fresh_database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ELSEWHERE = "replica-on-another-host"  # the holder's host in its owner id: not this one

HOLDER = textwrap.dedent(
    """
    import asyncio, os, sys
    from datetime import UTC, datetime, timedelta
    from expressway_certd.monitor.store import Store
    from expressway_certd.renewers.pipeline import holding
    from expressway_certd.renewers.pipeline import locks
    from expressway_certd.renewers.pipeline.locks import exclusive

    async def main():
        url, kind, name, owner = sys.argv[1:5]
        if len(sys.argv) > 5:  # a short lease, to see it run out while the session stays
            locks.LEASE = timedelta(seconds=float(sys.argv[5]))
        store = await Store.open(url, migrate=False)
        now = lambda: datetime.now(UTC)
        if kind == "renewal":
            async with holding(store, name, owner, now) as hold:
                assert await hold.claim()
                print(os.getpid(), flush=True)
                await asyncio.Event().wait()  # works the renewal until killed
        else:
            async with exclusive(name, locks={}, store=store, owner=owner, now=now) as held:
                assert held is None, held
                print(os.getpid(), flush=True)
                await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@pytest.fixture(scope="module")
def pg_url(pg_server):
    return fresh_database(pg_server)


@pytest.fixture
async def store(pg_url):
    s = await Store.open(pg_url)
    yield s
    await s.close()


async def new_renewal(store: Store, rid: str, target: str) -> RenewalRow:
    now = datetime.now(UTC)
    row = RenewalRow(
        id=rid, target=target, status="running", stage="submit", reason="test",
        created_at=now, updated_at=now, next_at=None, attempts=0, message="", data={},
    )  # fmt: skip
    return await store.create_renewal(row)


async def start_holder(
    url: str, kind: str, name: str, owner: str, *lease: str
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, url, kind, name, owner, *lease,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == str(proc.pid).encode(), line
    return proc


async def lock_sessions(store: Store, name: str) -> list[int]:
    """Backend pids holding the session lock `name` (pg_locks shows a two-key advisory lock
    as classid = first key, objid = second key, objsubid = 2, both as unsigned oids)."""
    first, second = advisory_key(name)
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
                "AND classid = CAST(:c AS oid) AND objid = CAST(:o AS oid) AND granted"
            ),
            {"c": first & 0xFFFFFFFF, "o": second & 0xFFFFFFFF},
        )
        return [int(r[0]) for r in rows]


async def sessions(store: Store) -> int:
    """Client sessions open on the server now (this query's own included)."""
    async with store.engine.connect() as conn:
        return int(
            await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                )
            )
            or 0
        )


async def lease_row(store: Store, rid: str) -> tuple[str | None, datetime | None]:
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(renewals.c.lease_owner, renewals.c.lease_until).where(
                    renewals.c.id == rid
                )
            )
        ).one()
        return row[0], row[1]


async def end_session(store: Store, proc: asyncio.subprocess.Process, how: str, name: str) -> None:
    """End the holder's session: SIGKILL its process, or terminate its backend (as when its
    host is cut off: the process may live on, its session does not)."""
    if how == "sigkill":
        os.kill(proc.pid, signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
        return
    (pid,) = await lock_sessions(store, name)
    async with store.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.pg_terminate_backend(pid)))
    await released(store, name)


async def released(store: Store, name: str) -> None:
    """Wait until no session holds `name` (the server ends a backend asynchronously)."""
    for _ in range(200):
        if not await lock_sessions(store, name):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} still held by {await lock_sessions(store, name)}")


@asynccontextmanager
async def holder(
    url: str, kind: str, name: str, owner: str, *lease: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await start_holder(url, kind, name, owner, *lease)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:survivor"


@pytest.mark.parametrize("how", ["sigkill", "terminate-backend"])
async def test_a_renewal_is_taken_over_as_soon_as_its_holders_session_is_gone(pg_url, store, how):
    rid = f"r-{how}"
    row = await new_renewal(store, rid, f"t-{how}")
    theirs = f"{ELSEWHERE}:4242:{how}"
    now = lambda: datetime.now(UTC)  # noqa: E731
    async with holder(pg_url, "renewal", rid, theirs) as proc:
        owner, until = await lease_row(store, rid)
        assert owner == theirs and until is not None and until > now() + LEASE / 2
        assert len(await lock_sessions(store, f"renewal:{rid}")) == 1
        baseline = await sessions(store)
        async with holding(store, rid, me(), now) as hold:
            assert not await hold.claim()  # alive: its session refuses, whatever the host
        assert (await lease_row(store, rid))[0] == theirs
        assert await sessions(store) == baseline  # the refused try kept no connection

        await end_session(store, proc, how, f"renewal:{rid}")
        _, until = await lease_row(store, rid)
        assert until is not None and until > now() + LEASE / 2  # the lease has not run out
        async with holding(store, rid, me(), now) as hold:
            assert await hold.claim()  # at once, not after LEASE
            assert (await lease_row(store, rid))[0] == me()
            assert len(await lock_sessions(store, f"renewal:{rid}")) == 1  # ours now
            # The former holder's writes are refused from now on (the owner guard).
            with pytest.raises(StoreError, match="no longer holds its lease"):
                await store.save_renewal(row, owner=theirs)
        assert await lease_row(store, rid) == (None, None)
        assert not await lock_sessions(store, f"renewal:{rid}")


async def test_a_named_lease_is_taken_over_as_soon_as_its_holders_session_is_gone(pg_url, store):
    name = "restart:expressway-c.lab.example"
    theirs = f"{ELSEWHERE}:4242:restart"
    now = lambda: datetime.now(UTC)  # noqa: E731
    async with holder(pg_url, "lease", name, theirs) as proc:
        assert await store.lease_owner(name) == theirs
        async with exclusive(name, locks={}, store=store, owner=me(), now=now) as held:
            assert held == theirs
        await end_session(store, proc, "sigkill", f"lease:{name}")
        async with store.engine.connect() as conn:
            until = await conn.scalar(sa.select(leases.c.until).where(leases.c.name == name))
        assert until is not None and until > now() + LEASE / 2  # not expired
        async with exclusive(name, locks={}, store=store, owner=me(), now=now) as held:
            assert held is None
            assert await store.lease_owner(name) == me()
    assert await store.lease_owner(name) is None
    assert not await lock_sessions(store, f"lease:{name}")


async def test_the_session_lock_is_released_on_every_way_out(store):
    rid = "r-ways-out"
    await new_renewal(store, rid, "t-ways-out")
    now = lambda: datetime.now(UTC)  # noqa: E731
    name = f"renewal:{rid}"
    baseline = await sessions(store)

    async with holding(store, rid, me(), now) as hold:  # success
        assert await hold.claim()
        assert await hold.claim()  # a second claim keeps the one session
        assert len(await lock_sessions(store, name)) == 1
        assert await sessions(store) == baseline + 1
    assert not await lock_sessions(store, name)
    assert await sessions(store) == baseline

    with pytest.raises(RuntimeError, match="stage broke"):  # an exception
        async with holding(store, rid, me(), now) as hold:
            assert await hold.claim()
            raise RuntimeError("stage broke")
    assert not await lock_sessions(store, name)
    assert await sessions(store) == baseline

    held = asyncio.Event()

    async def works_until_cancelled() -> None:
        async with holding(store, rid, me(), now) as hold:
            assert await hold.claim()
            held.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(works_until_cancelled())  # cancellation
    await asyncio.wait_for(held.wait(), 30)
    assert len(await lock_sessions(store, name)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not await lock_sessions(store, name)
    assert await sessions(store) == baseline
    assert await lease_row(store, rid) == (None, None)


class StuckDevices:
    """A box that never answers (the stage hangs until cancelled), or whose client raises."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.entered = asyncio.Event()

    @asynccontextmanager
    async def expressway(self, target):
        self.entered.set()
        if self.fail:
            raise ValueError("the client broke")  # not a CertdError: an unexpected bug
        await asyncio.Event().wait()
        yield

    def unified_cm(self, ucm):
        raise AssertionError("not used")


def config(tmp_path, target: str):
    path = tmp_path / "c.toml"
    path.write_text(
        f'[daemon]\nstate = "{tmp_path / "s.db"}"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[[expressway]]\nname = "{target}"\naddress = "{target}.example.com"\n'
        'renewal = { ca = "portal" }\n[ca.portal]\nkind = "manual"\n'
    )
    return load_config(path)


def pipeline_of(cfg, store: Store, devices: object = None) -> Pipeline:
    manager = RenewalManager(cfg, store, EventBus(), Prober(TrustStore([])), devices=devices)  # type: ignore[arg-type]
    return manager.pipeline


@pytest.mark.parametrize("fail", [False, True], ids=["cancelled", "raised"])
async def test_a_pipeline_run_closes_its_session_lock_whatever_ends_it(store, tmp_path, fail):
    target = f"stuck-{fail}"
    devices = StuckDevices(fail)
    pipeline = pipeline_of(config(tmp_path, target), store, devices)
    row = await pipeline.start(target, "test")
    baseline = await sessions(store)
    task = asyncio.create_task(pipeline.run(row.id))
    await asyncio.wait_for(devices.entered.wait(), 30)
    if not fail:
        assert len(await lock_sessions(store, f"renewal:{row.id}")) == 1  # held while working
        assert await sessions(store) == baseline + 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        done = await asyncio.wait_for(task, 30)
        assert done.status == "failed"  # the runner mapped the bug to this renewal failing
    assert not await lock_sessions(store, f"renewal:{row.id}")
    assert await sessions(store) == baseline
    assert await lease_row(store, row.id) == (None, None)


async def test_an_operator_command_is_refused_while_a_live_holder_works_the_renewal(
    pg_url, store, tmp_path
):
    pipeline = pipeline_of(config(tmp_path, "busy"), store)
    row = await new_renewal(store, "r-busy", "busy")
    async with holder(pg_url, "renewal", row.id, f"{ELSEWHERE}:4242:busy") as proc:
        with pytest.raises(CertdError, match="busy: a stage is running in another process"):
            await pipeline.cancel(row.id, "alice")
        await end_session(store, proc, "sigkill", f"renewal:{row.id}")
        cancelled = await pipeline.cancel(row.id, "alice")  # at once, from any replica
        assert cancelled.status == "cancelled"


async def test_renewal_keys_live_apart_from_the_single_key_locks(store):
    """The same 64 bits taken as one bigint key (the space calimit and the migrations use)
    are a different lock: both are granted at once to two sessions."""
    name = "renewal:apart"
    (bigint,) = struct.unpack(">q", struct.pack(">ii", *advisory_key(name)))
    locks = store.session_locks
    assert locks is not None
    held = await locks.try_lock(name)
    assert held is not None
    try:
        async with store.engine.connect() as conn:
            assert await conn.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(bigint)))
            await conn.rollback()
        assert await locks.try_lock(name) is None  # the two-key lock itself is still held
    finally:
        await held.release()


async def test_locks_of_one_kind_are_bounded_and_kinds_do_not_wait_on_each_other(store):
    assert store.session_locks is not None
    other = SessionLocks(store.engine.url, store.url)  # another process's
    ours = SessionLocks(store.engine.url, store.url, limit=2)
    held = [await ours.try_lock("renewal:one"), await ours.try_lock("renewal:two")]
    assert all(h is not None for h in held)
    third = asyncio.create_task(ours.try_lock("renewal:three"))
    named = await ours.try_lock("lease:restart:c")  # another kind: its own places
    assert named is not None
    assert not third.done()  # waits for one of the two renewal places
    assert held[0] is not None
    await held[0].release()
    got = await asyncio.wait_for(third, 30)
    assert got is not None and len(await lock_sessions(store, "renewal:three")) == 1
    for h in (held[1], got, named):
        assert h is not None
        await h.release()
        await h.release()  # twice is harmless
    # A refused try gives its place back at once.
    theirs = await other.try_lock("renewal:taken")
    assert theirs is not None
    try:
        assert await ours.try_lock("renewal:taken") is None
        assert await ours.try_lock("renewal:taken") is None
        free = await asyncio.wait_for(ours.try_lock("renewal:free"), 30)
        assert free is not None
        await free.release()
    finally:
        await theirs.release()
        await other.aclose()
        await ours.aclose()


async def test_a_holder_whose_session_broke_never_takes_the_renewal_back(pg_url, store):
    rid = "r-broken"
    await new_renewal(store, rid, "t-broken")
    other = await Store.open(pg_url, migrate=False)
    now = lambda: datetime.now(UTC)  # noqa: E731
    first, second = f"{ELSEWHERE}:1:first", f"{ELSEWHERE}-2:2:second"
    try:
        async with (
            holding(store, rid, first, now) as ours,
            holding(other, rid, second, now) as theirs,
        ):
            assert await ours.claim()
            (pid,) = await lock_sessions(store, f"renewal:{rid}")
            async with store.engine.connect() as conn:  # e.g. the network dropped it
                assert await conn.scalar(sa.select(sa.func.pg_terminate_backend(pid)))
            await released(store, f"renewal:{rid}")
            assert await theirs.claim()  # the session is gone: taken over
            assert not await ours.claim()  # and not taken back by the one that lost it
            assert (await lease_row(store, rid))[0] == second
            assert await theirs.claim()  # still theirs
        assert not await lock_sessions(store, f"renewal:{rid}")
    finally:
        await other.close()


@pytest.mark.parametrize("kind", ["renewal", "lease"])
async def test_a_vanished_hosts_leftover_session_is_ended_once_its_lease_runs_out(
    pg_url, store, kind
):
    """A host that vanishes without closing its connections leaves its session on the server
    (without TCP keepalives, for hours): here the holder is stopped (SIGSTOP), so its socket
    stays open and its lease stops being renewed. While the lease runs the lock refuses;
    once it ran out, the next claimer ends that session and takes over."""
    if kind == "renewal":
        rid = "r-leftover"
        await new_renewal(store, rid, "t-leftover")
        name, lock = rid, f"renewal:{rid}"
    else:
        name = "cucm:leftover"
        lock = f"lease:{name}"
    now = lambda: datetime.now(UTC)  # noqa: E731

    async def until() -> datetime | None:
        if kind == "renewal":
            return (await lease_row(store, name))[1]
        async with store.engine.connect() as conn:
            value = await conn.scalar(sa.select(leases.c.until).where(leases.c.name == name))
            return value

    async def claim() -> bool:
        if kind == "renewal":
            async with holding(store, name, me(), now) as hold:
                return await hold.claim()
        async with exclusive(name, locks={}, store=store, owner=me(), now=now) as held:
            return held is None

    async with holder(pg_url, kind, name, f"{ELSEWHERE}:4242:leftover", "6") as proc:
        os.kill(proc.pid, signal.SIGSTOP)  # its host is gone; the server does not know
        try:
            (theirs,) = await lock_sessions(store, lock)
            expiry = await until()
            assert expiry is not None and expiry > now()
            assert not await claim()  # the lease runs: left alone
            assert await lock_sessions(store, lock) == [theirs]
            await asyncio.sleep((expiry - now()).total_seconds() + 0.2)  # until it ran out
            if kind == "renewal":
                async with holding(store, name, me(), now) as hold:
                    assert await hold.claim()
                    assert (await lease_row(store, name))[0] == me()
                    assert theirs not in await lock_sessions(store, lock)
            else:
                async with exclusive(name, locks={}, store=store, owner=me(), now=now) as held:
                    assert held is None
                    assert await store.lease_owner(name) == me()
                    assert theirs not in await lock_sessions(store, lock)
        finally:
            os.kill(proc.pid, signal.SIGKILL)


class PeerEndsOurLockFirst(Store):
    """A store on which a peer ends our fresh session lock (judging it a leftover) between our
    taking it and our claim of the lease: the race Store.end_leftover_session leaves open."""

    async def claim_renewal(self, renewal_id, owner, now, ttl, *, take_from=None):  # type: ignore[no-untyped-def]
        (pid,) = await lock_sessions(self, f"renewal:{renewal_id}")
        async with self.engine.connect() as conn:
            assert await conn.scalar(sa.select(sa.func.pg_terminate_backend(pid)))
        await released(self, f"renewal:{renewal_id}")
        return await super().claim_renewal(renewal_id, owner, now, ttl, take_from=take_from)


async def test_a_claim_whose_lock_was_ended_meanwhile_lets_go(pg_url, store):
    rid = "r-raced"
    await new_renewal(store, rid, "t-raced")
    raced = await PeerEndsOurLockFirst.open(pg_url, migrate=False)
    try:
        async with holding(raced, rid, me(), lambda: datetime.now(UTC)) as hold:
            assert not await hold.claim()  # the lease was claimed, then given back
            assert await lease_row(store, rid) == (None, None)
    finally:
        await raced.close()
