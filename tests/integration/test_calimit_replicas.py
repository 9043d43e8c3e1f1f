"""Per-CA limits hold across replicas: several processes' limiters on one real PostgreSQL,
racing for slots, never open more orders than `concurrent_orders` nor start more than
`orders_per_hour` in an hour (the advisory transaction lock serialises the count and the take).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from expressway_certd.monitor.config_ca import CALimits
from expressway_certd.monitor.store import Store
from expressway_certd.renewers.calimit import HOUR, OrderLimiter
from tests.pg import fresh_database
from tests.unit.test_calimit import in_submit

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pg_url(pg_server):
    return fresh_database(pg_server)


async def test_replicas_racing_for_slots_never_exceed_the_limits(pg_url):
    stores = [await Store.open(pg_url) for _ in range(3)]  # three replicas' connections
    try:
        limiters = [OrderLimiter(s) for s in stores]
        limits = CALimits(orders_per_hour=25, concurrent_orders=7)
        await in_submit(stores[0], *(f"r{i}" for i in range(60)))
        await in_submit(stores[0], *(f"w{n}-{i}" for n in range(7, 26) for i in range(10)))

        async def ask(i: int) -> bool:
            return (await limiters[i % 3].take("corp", limits, f"r{i}", T0)).granted

        granted = await asyncio.gather(*(ask(i) for i in range(60)))
        assert sum(granted) == 7  # exactly the concurrent limit, not one more
        usage = await limiters[0].usage("corp", T0)
        assert usage.open == 7
        # Orders complete one by one; the hourly limit then caps the starts at 25.
        started = 7
        for i in range(60):
            if not granted[i]:
                continue
            await limiters[i % 3].release(f"r{i}", T0)
        while True:
            waves = await asyncio.gather(
                *(limiters[i % 3].take("corp", limits, f"w{started}-{i}", T0) for i in range(10))
            )
            got = [w for w in waves if w.granted]
            if not got:
                assert all("orders_per_hour" in w.reason or "concurrent" in w.reason for w in waves)
                break
            started += len(got)
            assert started <= 25
            for i, w in enumerate(waves):
                if w.granted:
                    await limiters[i % 3].release(f"w{started - len(got)}-{i}", T0)
        assert started == 25
    finally:
        for s in stores:
            await s.close()


async def test_a_retry_time_is_on_the_asking_replicas_own_clock(pg_url):
    """Replica a's clock is two hours behind, b's an hour ahead: the orders a starts are in b's
    last hour (PostgreSQL's clock), and the retry time each one gets is on its own clock,
    about an hour ahead of it (not the database's: a would wait three hours, b not at all)."""
    stores = [await Store.open(pg_url) for _ in range(2)]
    try:
        a, b = (OrderLimiter(s) for s in stores)
        limits = CALimits(orders_per_hour=3)
        await in_submit(stores[0], *(f"skew{i}" for i in range(5)))
        real = datetime.now(UTC)
        a_now, b_now = real - timedelta(hours=2), real + timedelta(hours=1)
        for i in range(3):
            assert (await a.take("skewed", limits, f"skew{i}", a_now)).granted
            await a.release(f"skew{i}", a_now)  # issued at once: only the hourly limit counts
        for limiter, now, rid in ((b, b_now, "skew3"), (a, a_now, "skew4")):
            verdict = await limiter.take("skewed", limits, rid, now)
            assert not verdict.granted and "orders_per_hour" in verdict.reason
            assert verdict.retry_at is not None
            assert timedelta(minutes=50) < verdict.retry_at - now <= HOUR  # on its own clock
        assert (await b.usage("skewed", b_now)).last_hour == 3
        assert (await a.usage("skewed", a_now - timedelta(days=1))).last_hour == 3
    finally:
        for s in stores:
            await s.close()


async def test_the_hour_is_the_databases_whatever_the_hosts_clocks_say(pg_url):
    """Replica a's clock is right, b's runs two hours ahead, c's two hours behind: an order a
    started just now is in the hour for b and c too, and c's order counts for a."""
    stores = [await Store.open(pg_url) for _ in range(3)]
    try:
        a, b, c = (OrderLimiter(s) for s in stores)
        limits = CALimits(orders_per_hour=1)
        await in_submit(stores[0], "s1", "s2", "s3")
        now = datetime.now(UTC)
        assert (await a.take("skew1", limits, "s1", now)).granted
        await a.release("s1", now)  # done: only the hourly limit can refuse now
        ahead = await b.take("skew1", limits, "s2", now + timedelta(hours=2))
        assert not ahead.granted and "orders_per_hour" in ahead.reason
        assert (await b.usage("skew1", now + timedelta(hours=2))).last_hour == 1
        assert (await c.take("skew2", limits, "s3", now - timedelta(hours=2))).granted
        await c.release("s3", now - timedelta(hours=2))
        behind = await a.take("skew2", limits, "s1", now)
        assert not behind.granted and "orders_per_hour" in behind.reason
    finally:
        for s in stores:
            await s.close()
