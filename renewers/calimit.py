"""Per-CA order limits (`[ca.NAME]` orders_per_hour, concurrent_orders) shared through the store.

An order is one certificate request: it opens when a renewal reaches its submit stage and
closes when the certificate is issued or the renewal ends. Every process that runs renewals
(any number of replicas, the CLI) counts the orders of a CA in the `ca_orders` table and takes
a slot in the same transaction; on PostgreSQL that transaction first takes a transaction-level
advisory lock named after the CA, so two replicas never both take the last slot. SQLite is a
one-machine store: an asyncio lock per CA serialises this process's renewals and SQLite's own
write lock the rest. The database is the counter; there is no consensus of our own.

A renewal that gets no slot waits at submit until `Verdict.retry_at`: when the oldest order of
the last hour ages out (orders per hour: known in advance, exact), or, for concurrent orders,
when a slot frees. A slot frees when another order completes, which is not known in advance:
in the process that closes the order (`release`), the limiter wakes the renewal of this process
that has waited longest for that CA (`on_wake`, wired by the pipeline to run it at once), one
per closed order; a woken renewal that takes a slot while more are free wakes the next, and one
that no longer waits (cancelled, run elsewhere) passes its wake on (`settle`). A slot freed by
another process (a replica, the CLI) is found at the renewal's re-check, 30 to 60 s after it was
refused (`recheck_after`: jittered, so the waiters of many replicas do not ask together). The
wake only makes a renewal ask sooner: every grant is still counted in the database as above, so
a wake can never exceed a limit.

The hour is the database's on PostgreSQL: an order's start is stamped, and the last hour
counted, by the server's clock (`clock_timestamp()`, read after the advisory lock is held;
`now()` would be the transaction's start, before the wait for the lock), so replicas whose
host clocks disagree still count the same orders in the same hour. `retry_at` is handed back
on the caller's clock (the same distance from its `now`). SQLite is one machine: its clock is
the caller's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from expressway_certd.monitor.config_ca import CALimits
from expressway_certd.monitor.errors import StoreError
from expressway_certd.monitor.store import ACTIVE_STATUSES, Store, ca_orders, renewals

HOUR = timedelta(hours=1)
ORDER_STAGES = ("submit", "issued")  # a CA order is open from submit until the cert is issued
CONCURRENT_RECHECK = timedelta(minutes=1)  # the longest a refused renewal waits to ask again


@dataclass(frozen=True)
class Verdict:
    granted: bool
    retry_at: datetime | None = None
    reason: str = ""
    waits_for_slot: bool = False  # refused by concurrent_orders: a completed order may wake it


def recheck_after(rng: random.Random) -> timedelta:
    """When a renewal refused by `concurrent_orders` asks again if nothing wakes it sooner:
    between half of CONCURRENT_RECHECK and all of it, drawn anew each time."""
    return CONCURRENT_RECHECK * rng.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Usage:
    """What one CA carries now: open orders and orders started in the last hour."""

    open: int
    last_hour: int


def judge_order(
    limits: CALimits,
    ca: str,
    usage: Usage,
    starts: list[datetime],
    now: datetime,
    recheck: timedelta = CONCURRENT_RECHECK,
) -> Verdict:
    """Whether one more order fits `limits`; `starts` are the last hour's start times, oldest
    first; `recheck`: when a renewal refused by concurrent_orders asks again unless woken.
    Pure: the store part only counts."""
    if limits.concurrent_orders and usage.open >= limits.concurrent_orders:
        return Verdict(
            False,
            now + recheck,
            f"CA {ca}: {usage.open} orders open, the limit is {limits.concurrent_orders} "
            f"([ca.{ca}] concurrent_orders); waiting for one to complete",
            waits_for_slot=True,
        )
    if limits.orders_per_hour and usage.last_hour >= limits.orders_per_hour:
        # The slot frees when enough of the hour's orders age out for one more to fit.
        excess = usage.last_hour - limits.orders_per_hour
        frees = starts[excess] + HOUR if excess < len(starts) else now + CONCURRENT_RECHECK
        return Verdict(
            False,
            max(frees, now + timedelta(seconds=1)),
            f"CA {ca}: {usage.last_hour} orders in the last hour, the limit is "
            f"{limits.orders_per_hour} ([ca.{ca}] orders_per_hour); next slot at "
            f"{frees.isoformat(timespec='seconds')}",
        )
    return Verdict(True)


Wake = Callable[[str], None]  # called with a renewal id: run it now, its slot may be free


class OrderLimiter:
    """Takes and releases order slots of the CAs in one store, and wakes this process's
    renewals waiting for a slot when one of its orders completes."""

    def __init__(self, store: Store, *, rng: random.Random | None = None) -> None:
        self.store = store
        self._local: dict[str, asyncio.Lock] = {}
        self._rng = rng or random.Random()
        # CA -> renewals of this process refused by concurrent_orders, longest waiting first
        self._waiting: dict[str, dict[str, None]] = {}
        self._woken: dict[str, str] = {}  # renewal -> CA: woken, has not asked since
        self.on_wake: Wake | None = None  # without it, waiters ask again at their re-check

    def waiting(self, ca: str) -> list[str]:
        """This process's renewals waiting for a slot at `ca`, longest waiting first."""
        return list(self._waiting.get(ca, ()))

    def _wake_next(self, ca: str) -> bool:
        """Wake the renewal that has waited longest for a slot at `ca`; False if none waits."""
        queue = self._waiting.get(ca)
        if not queue or self.on_wake is None:
            return False
        renewal_id = next(iter(queue))
        del queue[renewal_id]
        self._woken[renewal_id] = ca
        self.on_wake(renewal_id)
        return True

    def settle(self, renewal_id: str) -> None:
        """After a woken renewal's run: if it never asked for its slot (it was cancelled, or
        is run by another process), the wake passes to the next waiter of its CA."""
        ca = self._woken.pop(renewal_id, None)
        if ca is not None:
            self._wake_next(ca)

    def _asked(
        self, ca: str, renewal_id: str, verdict: Verdict, limits: CALimits, open_: int
    ) -> None:
        """Book-keeping after `take` judged: a refused waiter queues, a granted one leaves the
        queue and, when more slots are free, wakes the next."""
        self._woken.pop(renewal_id, None)
        queue = self._waiting.setdefault(ca, {})
        if not verdict.granted:
            if verdict.waits_for_slot:
                queue.setdefault(renewal_id, None)
            return
        queue.pop(renewal_id, None)
        if limits.concurrent_orders and open_ + 1 < limits.concurrent_orders:
            self._wake_next(ca)

    async def take(self, ca: str, limits: CALimits, renewal_id: str, now: datetime) -> Verdict:
        """A slot for `renewal_id`'s order at `ca`, or when to ask again. Idempotent: a renewal
        that already holds an open order (a resumed submit) keeps it."""
        async with self._local.setdefault(ca, asyncio.Lock()):
            try:
                async with self.store.engine.begin() as conn:
                    at = now
                    if conn.dialect.name == "postgresql":
                        key = zlib.crc32(f"certd:ca:{ca}".encode())
                        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
                        # Replicas' host clocks may differ: the hour is the database's, as
                        # the replica registry's heartbeats are.
                        at = await _database_now(conn)
                    held = await conn.scalar(
                        sa.select(sa.func.count())
                        .select_from(ca_orders)
                        .where(
                            ca_orders.c.ca == ca,
                            ca_orders.c.renewal_id == renewal_id,
                            ca_orders.c.ended_at.is_(None),
                        )
                    )
                    if held:
                        self._asked(ca, renewal_id, Verdict(True), CALimits(), 0)
                        return Verdict(True)
                    usage = Usage(open=0, last_hour=0)
                    if limits.limited:
                        usage, starts = await self._usage(conn, ca, at)
                        verdict = judge_order(
                            limits, ca, usage, starts, at, recheck_after(self._rng)
                        )
                        if not verdict.granted:
                            self._asked(ca, renewal_id, verdict, limits, usage.open)
                            return on_clock_of(verdict, at, now)
                    await conn.execute(
                        ca_orders.insert().values(ca=ca, renewal_id=renewal_id, started_at=at)
                    )
                # committed: the slot is this renewal's
                self._asked(ca, renewal_id, Verdict(True), limits, usage.open)
                return Verdict(True)
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                raise StoreError(
                    f"CA {ca}: cannot count orders in {self.store.url}: {exc}; check that the "
                    "database is reachable"
                ) from exc

    async def release(self, renewal_id: str, now: datetime) -> None:
        """Close the renewal's open order (its certificate came, or the renewal ended), and
        wake a renewal of this process waiting for a slot at that CA."""
        try:
            async with self.store.engine.begin() as conn:
                pg = conn.dialect.name == "postgresql"
                closed = await conn.execute(
                    ca_orders.update()
                    .where(ca_orders.c.renewal_id == renewal_id, ca_orders.c.ended_at.is_(None))
                    .values(ended_at=sa.func.clock_timestamp() if pg else now)
                    .returning(ca_orders.c.ca)
                )
                cas = [str(row[0]) for row in closed]
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise StoreError(
                f"renewal {renewal_id}: cannot close its CA order in {self.store.url}: {exc}"
            ) from exc
        self._woken.pop(renewal_id, None)
        for queue in self._waiting.values():
            queue.pop(renewal_id, None)  # it ended, or its order completed: it waits no more
        for ca in cas:  # committed: the slot is free for whoever asks first
            self._wake_next(ca)

    async def usage(self, ca: str, now: datetime) -> Usage:
        """What `ca` carries now (the last hour by the database's clock on PostgreSQL)."""
        async with self.store.engine.connect() as conn:
            at = await _database_now(conn) if conn.dialect.name == "postgresql" else now
            return (await self._usage(conn, ca, at))[0]

    @staticmethod
    async def _usage(conn: AsyncConnection, ca: str, now: datetime) -> tuple[Usage, list[datetime]]:
        # An order is open while its renewal is active at submit or issued: a renewal
        # cancelled by an operator, or moved on by a process that died before closing the
        # order, does not hold a slot.
        in_order = sa.select(renewals.c.id).where(
            renewals.c.status.in_(ACTIVE_STATUSES), renewals.c.stage.in_(ORDER_STAGES)
        )
        open_ = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(ca_orders)
            .where(
                ca_orders.c.ca == ca,
                ca_orders.c.ended_at.is_(None),
                ca_orders.c.renewal_id.in_(in_order),
            )
        )
        rows = await conn.execute(
            sa.select(ca_orders.c.started_at)
            .where(ca_orders.c.ca == ca, ca_orders.c.started_at > now - HOUR)
            .order_by(ca_orders.c.started_at)
        )
        starts = [_aware(r[0]) for r in rows]
        return Usage(open=int(open_ or 0), last_hour=len(starts)), starts


def on_clock_of(verdict: Verdict, database_now: datetime, now: datetime) -> Verdict:
    """`verdict` judged at `database_now`, its retry time moved onto the caller's clock."""
    if verdict.retry_at is None:
        return verdict
    return dataclasses.replace(verdict, retry_at=now + (verdict.retry_at - database_now))


async def _database_now(conn: AsyncConnection) -> datetime:
    """PostgreSQL's clock now (not the transaction's start: a lock may have been waited for)."""
    value = await conn.scalar(sa.select(sa.func.clock_timestamp()))
    if not isinstance(value, datetime):
        raise StoreError(
            f"CA limits: the database answered {value!r} for clock_timestamp(), not a time; "
            "check that [daemon] state names a PostgreSQL database"
        )
    return _aware(value)


def _aware(value: datetime) -> datetime:
    """SQLite gives naive datetimes back; the store writes UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
