"""The API's guards: bearer tokens for writes and (optionally) reads, and the events cap."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from expressway_certd.config import load_config
from expressway_certd.http import EVENTS_CAP, build_app
from expressway_certd.monitor.config import Secret
from expressway_certd.monitor.events import EventBus, RenewalDue
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import Store
from expressway_certd.monitor.watch import Monitor

READ = "read-token-0123456789"
WRITE = "write-token-0123456789"


async def ready() -> tuple[bool, dict[str, object]]:
    return True, {}


@pytest.fixture
async def store(tmp_path: Path):
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    yield store
    await store.close()


async def client_for(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch, **tokens: str
) -> TestClient:
    path = tmp_path / "certd.toml"
    path.write_text("[[expressway]]\nname = 'e1'\naddress = 'e1.example.com'\n")
    config = load_config(path)
    secrets = {}
    for key, value in tokens.items():
        monkeypatch.setenv(f"CERTD_TEST_{key.upper()}", value)
        secrets[key] = Secret(f"env:CERTD_TEST_{key.upper()}", f"daemon.{key}")
    monitor = Monitor(config, Prober(TrustStore()), store, EventBus())
    app = build_app(monitor, CollectorRegistry(), ready, **secrets)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def add_events(store: Store, count: int) -> None:
    now = datetime.now(UTC)
    for i in range(count):
        await store.append_event(RenewalDue(target="e1", time=now, reason="Test", message=str(i)))


async def test_events_limit_cannot_bypass_the_cap(tmp_path, store, monkeypatch):
    await add_events(store, 7)
    client = await client_for(tmp_path, store, monkeypatch)
    try:
        for bad in ("-1", "0", "abc", "1e3", "9" * 5000):
            resp = await client.get(f"/api/v1/events?limit={bad}")
            assert resp.status == 400, bad
            assert "positive whole number" in await resp.text()
        resp = await client.get("/api/v1/events?limit=5")
        assert resp.status == 200 and len(await resp.json()) == 5
        resp = await client.get("/api/v1/events?limit=999999")
        assert resp.status == 200 and len(await resp.json()) == 7
    finally:
        await client.close()
    assert EVENTS_CAP == 1000


async def test_read_api_open_without_read_token(tmp_path, store, monkeypatch):
    client = await client_for(tmp_path, store, monkeypatch)
    try:
        resp = await client.get("/api/v1/targets")
        assert resp.status == 200
        assert [t["name"] for t in await resp.json()] == ["e1"]
    finally:
        await client.close()


async def test_read_token_guards_api_reads_but_not_metrics(tmp_path, store, monkeypatch):
    client = await client_for(tmp_path, store, monkeypatch, api_read_token=READ, api_token=WRITE)
    try:
        for path in (
            "/",
            "/api/v1/targets",
            "/api/v1/endpoints",
            "/api/v1/events",
            "/api/v1/renewals",
        ):
            resp = await client.get(path)
            assert resp.status == 401, path
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            resp = await client.get(path, headers={"Authorization": "Bearer wrong"})
            assert resp.status == 401, path
            resp = await client.get(path, headers={"Authorization": "Bearer "})
            assert resp.status == 401, path
            for token in (READ, WRITE):  # the write token may read too
                resp = await client.get(path, headers={"Authorization": f"Bearer {token}"})
                assert resp.status == 200, path
        for path in ("/metrics", "/healthz", "/readyz"):
            assert (await client.get(path)).status == 200, path
        # The read token does not open the mutating calls.
        resp = await client.post(
            "/api/v1/targets/e1/renew", headers={"Authorization": f"Bearer {READ}"}
        )
        assert resp.status == 401
    finally:
        await client.close()
