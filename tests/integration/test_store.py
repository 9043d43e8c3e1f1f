"""The store on both backends: SQLite (default) and a real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from expressway_certd.monitor.errors import StoreError
from expressway_certd.monitor.events import ProbeFailed
from expressway_certd.monitor.store import EndpointRow, HistoryRow, Store
from tests.pg import fresh_database


@pytest.fixture(scope="module")
def pg_url(pg_server):
    return fresh_database(pg_server)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    s = await Store.open(url, history=3)
    yield s
    # leave PostgreSQL clean for the next test
    async with s._engine.begin() as conn:
        for table in ("endpoint_state", "observation_history", "audit_log", "leases"):
            await conn.execute(sa.text(f"DELETE FROM {table}"))
    await s.close()


def row(
    port: int, ok: bool = True, when: datetime | None = None, sha: str = "ab" * 32
) -> EndpointRow:
    when = when or datetime.now(UTC)
    return EndpointRow(
        target="expe", host="127.0.0.1", port=port, service="mra", observed_at=when, ok=ok,
        error_class=None if ok else "refused", error=None if ok else "connection refused",
        duration=0.01, tls_version="TLSv1.3", ok_observed_at=when if ok else None,
        sha256=sha, not_after=when + timedelta(days=30), chain_pem="PEM", chain_verified=True,
        verify_error=None, last_change_at=when,
    )  # fmt: skip


async def test_upsert_and_read_back_aware_times(store):
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await store.save_endpoints([row(443, when=t0), row(8443, when=t0)])
    await store.save_endpoints([row(443, ok=False, when=t0 + timedelta(minutes=5))])
    rows = {r.port: r for r in await store.load_endpoints()}
    assert set(rows) == {443, 8443}
    assert rows[443].ok is False and rows[443].error_class == "refused"
    assert rows[443].observed_at == t0 + timedelta(minutes=5)
    assert rows[443].observed_at.tzinfo is not None
    assert rows[8443].not_after == t0 + timedelta(days=30)


async def test_history_is_bounded_per_endpoint(store):
    now = datetime.now(UTC)
    for i in range(7):
        h = HistoryRow(
            target="expe", host="127.0.0.1", port=443, observed_at=now + timedelta(seconds=i),
            ok=True, error_class=None, sha256=f"{i:064x}", not_after=None, detail={"n": i},
        )  # fmt: skip
        other = HistoryRow(**{**h.__dict__, "port": 5061})
        await store.save_endpoints([], [h, other])
    history = await store.history_for("expe", "127.0.0.1", 443)
    assert [h.detail["n"] for h in history] == [4, 5, 6]
    assert len(await store.history_for("expe", "127.0.0.1", 5061)) == 3


async def test_audit_log_and_prune(store):
    old = datetime.now(UTC) - timedelta(days=400)
    for when in (old, datetime.now(UTC)):
        await store.append_event(
            ProbeFailed(
                target="expe", time=when, endpoint="h:443", error_class="timeout", error="no answer"
            )
        )
    events = await store.events(target="expe")
    assert [e.type for e in events] == ["ProbeFailed", "ProbeFailed"]
    assert events[0].payload["error_class"] == "timeout"
    assert "probe failed (timeout)" in events[0].summary
    assert await store.prune_audit(timedelta(days=365), datetime.now(UTC)) == 1
    assert len(await store.events()) == 1


async def test_forget_unconfigured(store):
    await store.save_endpoints([row(443), row(5061)])
    assert await store.delete_endpoints_except([("expe", "127.0.0.1", 443)]) == 1
    assert [r.port for r in await store.load_endpoints()] == [443]


async def test_bad_urls_give_clear_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create"):
        await Store.open(f"sqlite+aiosqlite:///{blocker}/sub/state.db")
    with pytest.raises(StoreError, match=r"cannot open postgresql\+asyncpg://certd:\*\*\*@"):
        await Store.open("postgresql+asyncpg://certd:topsecret@127.0.0.1:1/none")


async def test_named_leases(store):
    now = datetime.now(UTC)
    assert await store.claim_lease("restart:c", "a", now, timedelta(minutes=5))
    assert not await store.claim_lease("restart:c", "b", now, timedelta(minutes=5))
    assert await store.lease_owner("restart:c") == "a"
    assert await store.claim_lease("restart:c", "a", now, timedelta(minutes=5))  # extend
    # expired: anyone may take it
    assert await store.claim_lease(
        "restart:c", "b", now + timedelta(minutes=6), timedelta(minutes=5)
    )
    await store.release_lease("restart:c", "a")  # not a's any more: no effect
    assert await store.lease_owner("restart:c") == "b"
    await store.release_lease("restart:c", "b")
    assert await store.lease_owner("restart:c") is None
