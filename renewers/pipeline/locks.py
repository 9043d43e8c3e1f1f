"""Cross-process locks of the renewal pipeline: leases in the database, their heartbeat, and
the one rule every lock follows (take it when free or expired; take it at once from a
same-host holder that is gone; otherwise leave it to its live holder or to expiry).

Three kinds of lock use it: a renewal's own lease (only its holder runs stages),
`restart:<cluster>` (one peer of a cluster restarts at a time) and `cucm:<name>` (one renewal
at a time changes a Unified CM). `exclusive` pairs an in-process asyncio.Lock with the
database lease for the named ones. Nothing here knows about stages or renewals' contents.
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

from monitor.store import Store

log = structlog.get_logger("renewers.pipeline")

# Leases are renewed every LEASE / 3 while their holder works, so a holder that died without
# releasing one (on another host) blocks the others for at most LEASE.
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
) -> bool:
    """The one rule of every lock (a renewal's lease, `restart:<cluster>`, `cucm:<name>`):
    take it when free or expired; take it at once from a holder that was a process of this
    host and is gone (a killed process never releases its lease; without this the next one
    would wait out the whole LEASE); otherwise leave it to its live holder, or to expiry
    for holders on other hosts. `claim(None)` claims normally, `claim(owner)` also takes it
    from `owner`."""
    if await claim(None):
        return True
    gone = await holder()
    if gone is None or not gone_from_this_host(gone):
        return False
    log.warning("taking over the lease of a process that is gone", lease=name, holder=gone)
    return await claim(gone)


async def take_lease(store: Store, name: str, owner: str, now: datetime) -> bool:
    """Claim the named lease (see claim_or_take_over)."""
    return await claim_or_take_over(
        name,
        lambda gone: store.claim_lease(name, owner, now, LEASE, take_from=gone),
        lambda: store.lease_owner(name),
    )


async def claim_renewal(store: Store, renewal_id: str, owner: str, now: datetime) -> bool:
    """Claim a renewal's own lease (see claim_or_take_over)."""
    return await claim_or_take_over(
        f"renewal {renewal_id}",
        lambda gone: store.claim_renewal(renewal_id, owner, now, LEASE, take_from=gone),
        lambda: store.renewal_lease_owner(renewal_id),
    )


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
    for other processes (CLI, HA peers). Yields None when held, else who holds it."""
    lock = locks.setdefault(name, asyncio.Lock())
    async with lock:
        if store is not None and not await take_lease(store, name, owner, now()):
            yield await store.lease_owner(name) or "another process"
            return
        try:
            if store is None:
                yield None
            else:
                held = store
                async with keep_alive(lambda: held.claim_lease(name, owner, now(), LEASE)):
                    yield None
        finally:
            if store is not None:
                await store.release_lease(name, owner)
