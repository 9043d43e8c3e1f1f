"""Deadline risk at scrape time is cached: 1,000 renewable targets scraped again and again cost
one computation (one history read per target) per refresh, and a changed certificate or
config recomputes at once (expressway_certd/deadline_metrics.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from expressway_certd_lab.pki import CA
from prometheus_client import CollectorRegistry

from expressway_certd.config import load_config
from expressway_certd.deadline_metrics import METRIC, REFRESH, DeadlineCache
from expressway_certd.http import build_app
from expressway_certd.monitor.endpoint import Endpoint
from expressway_certd.monitor.errors import StoreError
from expressway_certd.monitor.events import EventBus
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import RenewalRow, Store
from expressway_certd.monitor.watch import EndpointState, Monitor
from expressway_certd.renewers.deadline import DeadlineEstimate

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TARGETS = 1000


class CountingStore(Store):
    """The real store, counting the history reads the estimates make."""

    history_reads = 0

    async def renewals_for(
        self, target: str | None = None, *, active_only: bool = False, limit: int = 50
    ) -> list[RenewalRow]:
        if target is not None:
            CountingStore.history_reads += 1
        return await super().renewals_for(target, active_only=active_only, limit=limit)


async def ready() -> tuple[bool, dict[str, object]]:
    return True, {}


def config_text(n: int) -> str:
    boxes = "".join(
        f"[[expressway]]\nname = 'e{i}'\nrole = 'c'\naddress = 'e{i}.example.com'\n"
        "renewal = { ca = 'hand' }\n"
        for i in range(n)
    )
    return boxes + "[ca.hand]\nkind = 'manual'\n"


def states_for(n: int, not_after_days: int) -> dict:
    ca = CA.create("Cache Root")
    leaf, _ = ca.issue("e.example.com", ["e.example.com"], days=not_after_days)
    facts = facts_from_x509(leaf)
    out = {}
    for i in range(n):
        ep = Endpoint(f"e{i}.example.com", 443, "https")
        state = EndpointState(f"e{i}", ep, T0, True, None, None, 0.01, "TLSv1.3", facts=facts)
        out[state.key] = state
    return out


@pytest.fixture
async def store(tmp_path: Path):
    store = await CountingStore.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    CountingStore.history_reads = 0
    yield store
    await store.close()


async def test_a_thousand_targets_scraped_five_times_cost_one_computation(tmp_path, store):
    path = tmp_path / "certd.toml"
    path.write_text(config_text(TARGETS))
    monitor = Monitor(load_config(path), Prober(TrustStore()), store, EventBus())
    monitor.states.update(states_for(TARGETS, 60))
    cache = DeadlineCache.of(monitor)
    client = TestClient(
        TestServer(build_app(monitor, CollectorRegistry(), ready, deadline_cache=cache))
    )
    await client.start_server()
    try:
        for _ in range(5):
            resp = await client.get("/metrics")
            text = await resp.text()
            assert sum(1 for line in text.splitlines() if line.startswith(METRIC + "{")) == TARGETS
        assert cache.computations == 1
        assert CountingStore.history_reads == TARGETS  # one read per target, not per scrape
        await client.get("/")  # the status page shares the same estimates
        assert cache.computations == 1
    finally:
        await client.close()


def estimates_counter() -> tuple[list[int], DeadlineCache, list[object]]:
    calls = [0]
    key: list[object] = ["v1"]

    async def compute(now: datetime) -> list[DeadlineEstimate]:
        calls[0] += 1
        return []

    return calls, DeadlineCache(compute, lambda: key[0]), key


async def test_recomputed_after_refresh_and_when_inputs_change():
    calls, cache, key = estimates_counter()
    for second in range(100):
        await cache.get(T0 + timedelta(seconds=second))
    assert calls == [1]
    await cache.get(T0 + REFRESH)  # stale
    assert calls == [2]
    key[0] = "v2"  # a certificate renewed, or the config reloaded
    await cache.get(T0 + REFRESH + timedelta(seconds=1))
    assert calls == [3]
    await cache.get(T0)  # the clock went back: not trusted
    assert calls == [4]


async def test_a_failed_computation_is_not_cached():
    calls = [0]

    async def compute(now: datetime) -> list[DeadlineEstimate]:
        calls[0] += 1
        if calls[0] == 1:
            raise StoreError("store: database is locked; retry")
        return []

    cache = DeadlineCache(compute, lambda: "k")
    with pytest.raises(StoreError):
        await cache.get(T0)
    assert await cache.get(T0) == []
    assert await cache.get(T0) == []
    assert calls == [2]
