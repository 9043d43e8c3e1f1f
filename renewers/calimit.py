"""Per-CA order limits (`[ca.NAME]` orders_per_hour, concurrent_orders) shared through the store.

An order is one certificate request: it opens when a renewal reaches its submit stage and
closes when the certificate is issued or the renewal ends. Every process that runs renewals
(any number of replicas, the CLI) counts the orders of a CA in the `ca_orders` table and takes
a slot in the same transaction; on PostgreSQL that transaction first takes a transaction-level
advisory lock named after the CA, so two replicas never both take the last slot. SQLite is a
one-machine store: an asyncio lock per CA serialises this process's renewals and SQLite's own
write lock the rest. The database is the counter; there is no consensus of our own. On
PostgreSQL the hour is also the database's (`now()`), so replicas whose host clocks differ
count the same orders in the same hour.

A renewal that gets no slot waits at submit until `Verdict.retry_at`: when the oldest order of
the last hour ages out (orders per hour), or a minute later (concurrent orders: the slot frees
when another order completes, which is not known in advance).
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.config_ca import CALimits
from monitor.errors import StoreError
from monitor.store import ACTIVE_STATUSES, Store, ca_orders, renewals

HOUR = timedelta(hours=1)
ORDER_STAGES = ("submit", "issued")  # a CA order is open from submit until the cert is issued
CONCURRENT_RECHECK = timedelta(minutes=1)


@dataclass(frozen=True)
class Verdict:
    granted: bool
    retry_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class Usage:
    """What one CA carries now: open orders and orders started in the last hour."""

    open: int
    last_hour: int


def judge_order(
    limits: CALimits, ca: str, usage: Usage, starts: list[datetime], now: datetime
) -> Verdict:
    """Whether one more order fits `limits`; `starts` are the last hour's start times, oldest
    first. Pure: the store part only counts."""
    if limits.concurrent_orders and usage.open >= limits.concurrent_orders:
        return Verdict(
            False,
            now + CONCURRENT_RECHECK,
            f"CA {ca}: {usage.open} orders open, the limit is {limits.concurrent_orders} "
            f"([ca.{ca}] concurrent_orders); waiting for one to complete",
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


class OrderLimiter:
    """Takes and releases order slots of the CAs in one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._local: dict[str, asyncio.Lock] = {}

    async def take(self, ca: str, limits: CALimits, renewal_id: str, now: datetime) -> Verdict:
        """A slot for `renewal_id`'s order at `ca`, or when to ask again. Idempotent: a renewal
        that already holds an open order (a resumed submit) keeps it."""
        async with self._local.setdefault(ca, asyncio.Lock()):
            try:
                async with self.store.engine.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        key = zlib.crc32(f"certd:ca:{ca}".encode())
                        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
                        # Replicas' host clocks may differ: the hour is the database's, as
                        # the replica registry's heartbeats are.
                        now = await _database_now(conn)
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
                        return Verdict(True)
                    if limits.limited:
                        usage, starts = await self._usage(conn, ca, now)
                        verdict = judge_order(limits, ca, usage, starts, now)
                        if not verdict.granted:
                            return verdict
                    await conn.execute(
                        ca_orders.insert().values(ca=ca, renewal_id=renewal_id, started_at=now)
                    )
                    return Verdict(True)
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                raise StoreError(
                    f"CA {ca}: cannot count orders in {self.store.url}: {exc}; check that the "
                    "database is reachable"
                ) from exc

    async def release(self, renewal_id: str, now: datetime) -> None:
        """Close the renewal's open order (its certificate came, or the renewal ended)."""
        try:
            async with self.store.engine.begin() as conn:
                await conn.execute(
                    ca_orders.update()
                    .where(ca_orders.c.renewal_id == renewal_id, ca_orders.c.ended_at.is_(None))
                    .values(ended_at=now)
                )
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise StoreError(
                f"renewal {renewal_id}: cannot close its CA order in {self.store.url}: {exc}"
            ) from exc

    async def usage(self, ca: str, now: datetime) -> Usage:
        async with self.store.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                now = await _database_now(conn)
            return (await self._usage(conn, ca, now))[0]

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


async def _database_now(conn: AsyncConnection) -> datetime:
    """PostgreSQL's clock (the transaction's start), shared by every replica."""
    value = await conn.scalar(sa.select(sa.func.now()))
    if not isinstance(value, datetime):
        raise StoreError(f"the database answered now() with {value!r}, not a time")
    return _aware(value)


def _aware(value: datetime) -> datetime:
    """SQLite gives naive datetimes back; the store writes UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
