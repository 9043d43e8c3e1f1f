"""Cross-process locks of the renewal pipeline: leases in the database, their heartbeat, and
the one rule every lock follows (take it when free or expired; take it at once from a holder
whose database session is gone (PostgreSQL) or from a same-host holder that is gone;
otherwise leave it to its live holder or to expiry).

Three kinds of lock use it: a renewal's own lease (only its holder runs stages),
`restart:<cluster>` (one peer of a cluster restarts at a time) and `cucm:<name>` (one renewal
at a time changes a Unified CM). On PostgreSQL every holder also keeps a session advisory lock
of the same name (monitor/sessionlock.py) on a connection of its own while it holds the lease;
a process that can take that lock knows the lease's holder has no session any more (killed,
host gone) and takes the lease over at once, wherever the holder ran. A session that still
holds the lock after its lease ran out (its host vanished and the server has not noticed) is
a leftover: the next claimer ends it (Store.end_leftover_session), so such a lease waits no
longer than it did before session locks. SQLite has no sessions to judge: there a lease of
another host runs out. `exclusive` pairs an in-process
asyncio.Lock with the database lease for the named ones. Nothing here knows about stages or
renewals' contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from expressway_certd.monitor.sessionlock import SessionLock, SessionLocks
from expressway_certd.monitor.store import Store

log = structlog.get_logger("renewers.pipeline")

# Leases are renewed every LEASE / 3 while their holder works, so a holder that died without
# releasing one blocks the others for at most LEASE: on SQLite when it ran on another host
# (on PostgreSQL its session lock tells at once).
LEASE = timedelta(minutes=3)
# How long an operator command waits for this process's own run of the renewal to let go.
BUSY_WAIT = timedelta(seconds=5)


@contextlib.asynccontextmanager
async def keep_alive(renew: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """Call `renew` every LEASE / 3 while the body runs."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(LEASE.total_seconds() / 3)
            try:
                await renew()
            except Exception:  # a missed heartbeat is retried at the next one
                log.warning("lease heartbeat failed", exc_info=True)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def new_owner() -> str:
    """A lease owner name for this process: "host:pid:token"."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def gone_from_this_host(owner: str) -> bool:
    """True when a lease owner ("host:pid:token") is a process of this host that has ended.
    Holders on other hosts are never judged: their lease runs out instead."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False  # our own pid: another pipeline of this process (tests), alive
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, owned by another user
    return False


async def claim_or_take_over(
    name: str,
    claim: Callable[[str | None], Awaitable[bool]],
    holder: Callable[[], Awaitable[str | None]],
    *,
    session_gone: bool = False,
) -> bool:
    """The one rule of every lock (a renewal's lease, `restart:<cluster>`, `cucm:<name>`):
    take it when free or expired; take it at once from a holder whose session is gone
    (`session_gone`: this process holds the session lock every live holder keeps, so the
    holder's database session has ended, on whichever host it ran) or that was a process of
    this host and is gone (a killed process never releases its lease; without this the next
    one would wait out the whole LEASE); otherwise leave it to its live holder, or to expiry
    for holders on other hosts. `claim(None)` claims normally, `claim(owner)` also takes it
    from `owner`."""
    if await claim(None):
        return True
    gone = await holder()
    if gone is None:
        return False
    if session_gone:
        log.warning(
            "taking over the lease of a process whose database session is gone",
            lease=name,
            holder=gone,
        )
        return await claim(gone)
    if not gone_from_this_host(gone):
        return False
    log.warning("taking over the lease of a process that is gone", lease=name, holder=gone)
    return await claim(gone)


async def take_lease(
    store: Store, name: str, owner: str, now: datetime, *, session_gone: bool = False
) -> bool:
    """Claim the named lease (see claim_or_take_over)."""
    return await claim_or_take_over(
        name,
        lambda gone: store.claim_lease(name, owner, now, LEASE, take_from=gone),
        lambda: store.lease_owner(name),
        session_gone=session_gone,
    )


async def take_session_lock(
    locks: SessionLocks, name: str, end_leftover: Callable[[], Awaitable[bool]]
) -> SessionLock | None:
    """The session lock `name`, or None while a live session holds it. A session that holds
    it although the lease it guards ran out is a leftover of a vanished host: `end_leftover`
    ends it (Store.end_leftover_session), then the lock is tried once more."""
    session = await locks.try_lock(name)
    if session is None and await end_leftover():
        session = await locks.try_lock(name)
    return session


class RenewalHold:
    """This process's hold on one renewal: the lease in its row (what SQLite, the owner guard
    of every write and the status display go by) and, on PostgreSQL, the session lock
    `renewal:<id>` on a connection of its own, kept from the first `claim()` until
    `release()`. Use it through `holding`, which releases both on every way out (return,
    exception, cancellation)."""

    def __init__(
        self, store: Store, renewal_id: str, owner: str, now: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.renewal_id = renewal_id
        self.owner = owner
        self.now = now
        self._session: SessionLock | None = None

    async def claim(self) -> bool:
        """Take (or extend) the renewal's lease; False when a live process holds it."""
        locks = self.store.session_locks
        if self._session is not None and not await self._session.still_held():
            # Our session ended under us: another process may hold the renewal now; never
            # take it back on the strength of a lock that is gone.
            session, self._session = self._session, None
            await session.release()
        rid, store = self.renewal_id, self.store
        if locks is not None and self._session is None:
            name = f"renewal:{rid}"
            self._session = await take_session_lock(
                locks,
                name,
                lambda: store.end_leftover_session(name, self.now(), renewal_id=rid),
            )
            if self._session is None:
                return False  # its holder's session is alive: it is working the renewal
        claimed = await claim_or_take_over(
            f"renewal {rid}",
            lambda gone: store.claim_renewal(rid, self.owner, self.now(), LEASE, take_from=gone),
            lambda: store.renewal_lease_owner(rid),
            session_gone=self._session is not None,
        )
        if claimed and self._session is not None and not await self._session.still_held():
            # A peer judged our fresh lock a leftover and ended it just before we claimed:
            # let go (the peer takes it from here).
            await store.release_renewal(rid, self.owner)
            return False
        return claimed

    async def extend(self) -> bool:
        """The heartbeat: push the lease's expiry on while this process works the renewal."""
        return await self.store.claim_renewal(self.renewal_id, self.owner, self.now(), LEASE)

    async def release(self) -> None:
        """Give the lease back, then close the session lock's connection (even when the
        first fails or the task is cancelled)."""
        try:
            await self.store.release_renewal(self.renewal_id, self.owner)
        finally:
            session, self._session = self._session, None
            if session is not None:
                await session.release()


@contextlib.asynccontextmanager
async def holding(
    store: Store, renewal_id: str, owner: str, now: Callable[[], datetime]
) -> AsyncIterator[RenewalHold]:
    """A RenewalHold released whatever way the body ends."""
    hold = RenewalHold(store, renewal_id, owner, now)
    try:
        yield hold
    finally:
        await hold.release()


@contextlib.asynccontextmanager
async def exclusive(
    name: str,
    *,
    locks: dict[str, asyncio.Lock],
    store: Store | None,
    owner: str,
    now: Callable[[], datetime],
) -> AsyncIterator[str | None]:
    """Hold `name` against other renewals: an in-process lock, and a lease in the database
    for other processes (CLI, HA peers), with its session lock on PostgreSQL. Yields None
    when held, else who holds it."""
    lock = locks.setdefault(name, asyncio.Lock())
    async with lock:
        if store is None:
            yield None
            return
        session: SessionLock | None = None
        try:
            if store.session_locks is not None:
                lock_name = f"lease:{name}"
                session = await take_session_lock(
                    store.session_locks,
                    lock_name,
                    lambda: store.end_leftover_session(lock_name, now(), lease=name),
                )
                if session is None:  # its holder's session is alive
                    yield await store.lease_owner(name) or "another process"
                    return
            taken = await take_lease(store, name, owner, now(), session_gone=session is not None)
            if taken and session is not None and not await session.still_held():
                await store.release_lease(name, owner)  # ended just before we took it
                taken = False
            if not taken:
                yield await store.lease_owner(name) or "another process"
                return
            try:
                held = store
                async with keep_alive(lambda: held.claim_lease(name, owner, now(), LEASE)):
                    yield None
            finally:
                await store.release_lease(name, owner)
        finally:
            if session is not None:
                await session.release()
