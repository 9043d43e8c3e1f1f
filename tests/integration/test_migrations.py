"""Schema migrations on SQLite and a real PostgreSQL: 0.1 databases upgrade with every row kept."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from expressway_certd.monitor import migrations
from expressway_certd.monitor import store as store_module
from expressway_certd.monitor.errors import StoreError
from expressway_certd.monitor.events import ProbeFailed
from expressway_certd.monitor.store import Store
from tests.helpers import free_port
from tests.integration import schema_0_1 as v01

REPO = Path(__file__).resolve().parents[2]
_db_numbers = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request, tmp_path):
    """A URL of an empty database of each dialect (a fresh PostgreSQL database per test)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    server = request.getfixturevalue("pg_server")
    name = f"certd_{next(_db_numbers)}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(sa.text(f"CREATE DATABASE {name}"))
    await admin.dispose()
    return server.rsplit("/", 1)[0] + f"/{name}"


async def run_sync(url: str, fn, *args):
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn, *args)
    finally:
        await engine.dispose()


T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)

# One or more rows in every 0.1 table, with every column set (NULLs where 0.1 wrote them).
ROWS_0_1: dict[str, list[dict]] = {
    "endpoint_state": [
        dict(target="expe", host="10.0.0.1", port=443, service="mra", observed_at=T0, ok=True,
             error_class=None, error=None, duration=0.25, tls_version="TLSv1.3",
             ok_observed_at=T0, sha256="ab" * 32, not_after=T0 + timedelta(days=90),
             chain_pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
             chain_verified=True, verify_error=None, last_change_at=T0),
        dict(target="expe", host="10.0.0.1", port=5061, service="sip", observed_at=T0, ok=False,
             error_class="refused", error="connection refused", duration=0.0, tls_version=None,
             ok_observed_at=None, sha256=None, not_after=None, chain_pem=None,
             chain_verified=None, verify_error="unable to get local issuer", last_change_at=None),
    ],
    "observation_history": [
        dict(target="expe", host="10.0.0.1", port=443, observed_at=T0, ok=True,
             error_class=None, sha256="ab" * 32, not_after=T0 + timedelta(days=90),
             detail=json.dumps({"cert": "new"})),
        dict(target="expe", host="10.0.0.1", port=5061, observed_at=T0, ok=False,
             error_class="refused", sha256=None, not_after=None, detail="{}"),
    ],
    "audit_log": [
        dict(time=T0, type="ProbeFailed", target="expe", renewal_id=None,
             severity="warning", summary="expe: probe failed (refused)",
             payload=json.dumps({"error_class": "refused"})),
        dict(time=T0 + timedelta(hours=1), type="RenewalStarted", target="expe",
             renewal_id="r1", severity="info", summary="renewal started", payload="{}"),
    ],
    "renewals": [
        dict(id="r1", target="expe", status="waiting", stage="approval", reason="expiry",
             created_at=T0, updated_at=T0 + timedelta(minutes=1), next_at=T0 + timedelta(hours=1),
             attempts=2, message="waiting for approval", data=json.dumps({"csr": "pem"}),
             lease_owner="host:123", lease_until=T0 + timedelta(minutes=3)),
        dict(id="r0", target="expe", status="done", stage="done", reason="expiry",
             created_at=T0 - timedelta(days=300), updated_at=T0 - timedelta(days=299),
             next_at=None, attempts=0, message="", data="{}", lease_owner=None,
             lease_until=None),
    ],
    "leases": [dict(name="restart:expe-cluster", owner="host:123", until=T0 + timedelta(minutes=5))],
    "renewal_steps": [
        dict(renewal_id="r1", stage="csr", result="advance", at=T0, seconds=1.5,
             message="CSR generated on expe"),
    ],
}  # fmt: skip


def fill_0_1(conn: sa.Connection) -> None:
    v01.create_0_1(conn)
    for name, rows in ROWS_0_1.items():
        conn.execute(v01.metadata.tables[name].insert(), rows)


def _norm(value):
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    return value


# Serial ids are the database's business (0.1 never wrote them); compared without them.
SERIAL = {"observation_history", "audit_log", "renewal_steps"}


def read_all(conn: sa.Connection) -> dict[str, list[dict]]:
    out = {}
    for name in [*ROWS_0_1, "schema_version"]:
        table = sa.Table(name, sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(table)).mappings().all()
        out[name] = sorted(
            (
                {k: _norm(v) for k, v in r.items() if not (name in SERIAL and k == "id")}
                for r in rows
            ),
            key=repr,
        )
    return out


async def test_a_0_1_database_is_stamped_and_upgraded_with_every_row_kept(db_url):
    await run_sync(db_url, fill_0_1)

    store = await Store.open(db_url)
    try:
        assert store.schema_before is not None and store.schema_before.legacy
        assert store.schema is not None and store.schema.up_to_date
        assert store.schema.current == store.schema.head
        # every row, every column, through the raw tables
        async with store._engine.connect() as conn:
            after = await conn.run_sync(read_all)
        for name, rows in ROWS_0_1.items():
            assert after[name] == sorted(rows, key=repr), name
        chain = migrations._revisions_from_base(migrations.script_directory())
        assert after["schema_version"] == [{"version": len(chain)}]
        # ... and through the store's own reads
        endpoints = {r.port: r for r in await store.load_endpoints()}
        assert endpoints[443].not_after == T0 + timedelta(days=90)
        assert endpoints[5061].error == "connection refused"
        assert [h.detail for h in await store.history_for("expe", "10.0.0.1", 443)] == [
            {"cert": "new"}
        ]
        assert [e.type for e in await store.events(target="expe")] == [
            "RenewalStarted",
            "ProbeFailed",
        ]
        r1 = await store.renewal("r1")
        assert r1 is not None and r1.data == {"csr": "pem"} and r1.attempts == 2
        assert await store.renewal_lease_owner("r1") == "host:123"
        assert [s.message for s in await store.steps("r1")] == ["CSR generated on expe"]
        assert await store.lease_owner("restart:expe-cluster") == "host:123"
        # new rows still get fresh ids after the stamp (sequences/autoincrement intact)
        store_events = await store.events(limit=1)
        await store.append_event(_probe_failed())
        assert (await store.events(limit=1))[0].id > store_events[0].id
    finally:
        await store.close()

    # opening again changes nothing
    again = await Store.open(db_url)
    try:
        assert again.schema_before == again.schema and again.schema.up_to_date
    finally:
        await again.close()


def _probe_failed():

    return ProbeFailed(
        target="expe", time=datetime.now(UTC), endpoint="h:1", error_class="timeout", error="x"
    )


def _diff(conn: sa.Connection, metadata: sa.MetaData) -> list:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return compare_metadata(context, metadata)


async def test_revision_0001_creates_exactly_the_0_1_schema(db_url):
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrations.upgrade_sync, "db", migrations.RELEASE_0_1)
            assert await conn.run_sync(_diff, v01.metadata) == []
    finally:
        await engine.dispose()


async def test_the_newest_revision_matches_the_store_tables(db_url):
    """Fails when a column is added to monitor/store.py without a revision (or vice versa)."""
    store = await Store.open(db_url)
    try:
        async with store._engine.connect() as conn:
            assert await conn.run_sync(_diff, store_module.metadata) == []
    finally:
        await store.close()


async def test_a_newer_schema_is_refused_with_the_fix(db_url):
    store = await Store.open(db_url)
    await store.close()

    def stamp_future(conn: sa.Connection) -> None:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeed'"))

    await run_sync(db_url, stamp_future)
    with pytest.raises(StoreError) as info:
        await Store.open(db_url)
    message = str(info.value)
    assert "schema revision f00dfeed, newer than this expressway-certd" in message
    assert "restore the state backup" in message
    # nothing was touched
    version = await run_sync(
        db_url, lambda c: c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    )
    assert version == "f00dfeed"


async def test_a_0_1_database_marked_newer_is_refused(db_url):
    await run_sync(db_url, fill_0_1)
    await run_sync(db_url, lambda c: c.execute(sa.text("UPDATE schema_version SET version = 3")))
    with pytest.raises(StoreError, match="schema_version 3, newer than this"):
        await Store.open(db_url)


async def test_a_half_schema_is_not_mistaken_for_0_1(db_url):
    def half(conn: sa.Connection) -> None:
        v01.schema_version.create(conn)
        conn.execute(v01.schema_version.insert().values(version=1))

    await run_sync(db_url, half)
    with pytest.raises(StoreError, match=r"not an expressway-certd 0\.1 database"):
        await Store.open(db_url)


NEXT_REVISION = '''
"""Add endpoint_state.note (a test revision)."""
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{head}"


def upgrade() -> None:
    op.add_column("endpoint_state", sa.Column("note", sa.Text))


def downgrade() -> None:
    op.drop_column("endpoint_state", "note")
'''


async def test_adding_a_column_is_one_new_file_and_older_releases_then_refuse(
    db_url, tmp_path, monkeypatch
):
    await run_sync(db_url, fill_0_1)
    scripts = tmp_path / "migrations"
    shutil.copytree(migrations.SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrations.script_directory().get_current_head()
    chain = migrations._revisions_from_base(migrations.script_directory())
    (scripts / "versions" / "9001_endpoint_note.py").write_text(
        NEXT_REVISION.replace("{head}", str(head))
    )

    with monkeypatch.context() as m:
        m.setattr(migrations, "SCRIPTS", scripts)  # "the next release"
        store = await Store.open(db_url)
        try:
            assert store.schema is not None and store.schema.current == "9001"
            assert store.schema_before is not None
            assert store.schema_before.pending == (*chain[1:], "9001")
            assert len(await store.load_endpoints()) == 2  # rows survived the table rebuild
        finally:
            await store.close()

    def columns(conn: sa.Connection):
        version = conn.execute(sa.text("SELECT version FROM schema_version")).scalar()
        return version, [c["name"] for c in sa.inspect(conn).get_columns("endpoint_state")]

    version, cols = await run_sync(db_url, columns)
    assert "note" in cols and version == len(chain) + 1  # a 0.1 binary (knows 1) refuses it
    with pytest.raises(StoreError, match="schema revision 9001, newer than this"):
        await Store.open(db_url)  # this release knows only 0001


async def test_replicas_starting_together_migrate_once(request):
    server = request.getfixturevalue("pg_server")
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(sa.text("CREATE DATABASE certd_together"))
    await admin.dispose()
    url = server.rsplit("/", 1)[0] + "/certd_together"
    stores = await asyncio.gather(*(Store.open(url) for _ in range(3)))
    try:
        fresh = [s for s in stores if s.schema_before and s.schema_before.current is None]
        assert len(fresh) == 1  # the others waited on the lock and found it done
    finally:
        for s in stores:
            await s.close()


def test_the_wheel_ships_the_migrations(tmp_path):
    src = tmp_path / "src"  # a copy: setuptools leaves build/ behind in the tree it builds
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in ("expressway_certd", "monitor", "renewers", "alerts"):
        # symlinks=True: expressway_certd/monitor is a link to monitor/, as git checks it out
        shutil.copytree(
            REPO / package,
            src / package,
            symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("expressway_certd-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"expressway_certd/monitor/migrations/versions/{p.name}"
        for p in (REPO / "monitor/migrations/versions").glob("*.py")
    }
    assert shipped <= names
    assert "expressway_certd/monitor/migrations/__init__.py" in names


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "expressway_certd.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_db_verb_and_daemon_refusal_as_processes(tmp_path):

    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await run_sync(url, fill_0_1)
    cfg = tmp_path / "certd.toml"
    cfg.write_text(
        f'[daemon]\nlisten = "127.0.0.1:{free_port()}"\nstate = "{tmp_path / "state.db"}"\n'
    )

    current = cli("db", "current", "--config", str(cfg))
    assert current.returncode == 1, current.stderr  # pending: tells a deployment script
    assert "released 0.1 schema (not yet stamped); to do: stamp 0001" in current.stdout
    upgrade = cli("db", "upgrade", "--config", str(cfg))
    assert upgrade.returncode == 0, upgrade.stderr
    assert "(after stamping 0.1)" in upgrade.stdout and "up to date" in upgrade.stdout
    assert cli("db", "current", "--config", str(cfg)).returncode == 0

    await run_sync(
        url, lambda c: c.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    )
    for args in (("db", "current"), ("run",)):
        refused = cli(*args, "--config", str(cfg))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "schema revision f00dfeed, newer than this expressway-certd" in refused.stderr
        assert "restore the state backup" in refused.stderr
