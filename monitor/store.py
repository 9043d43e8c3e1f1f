"""The state store: latest observation per endpoint, bounded history, and the audit log.

SQLAlchemy 2 async Core. SQLite (aiosqlite) by default, PostgreSQL (asyncpg) for HA; only
portable types and ON CONFLICT upserts that both dialects speak. The tables below describe the
schema at the newest revision of monitor/migrations (Alembic), which creates and upgrades it
when the store opens; tests/integration/test_migrations.py checks that the two agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from alembic.util import CommandError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from expressway_certd.monitor import migrations
from expressway_certd.monitor.config_base import redact_url
from expressway_certd.monitor.errors import StoreError
from expressway_certd.monitor.events import Event
from expressway_certd.monitor.migrations import SchemaStatus
from expressway_certd.monitor.sessionlock import HOLDERS_SQL, SessionLocks, holders_params

log = structlog.get_logger("monitor.store")

# After ending a leftover session: how long to wait, at most, for its lock to be released.
TERMINATE_POLLS = 50
TERMINATE_POLL_SECONDS = 0.1

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),  # revisions applied (for 0.1's check)
)

# One row per endpoint: the status of the latest probe, and the cert of the latest good one.
endpoint_state = sa.Table(
    "endpoint_state",
    metadata,
    sa.Column("target", sa.String(255), primary_key=True),
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("port", sa.Integer, primary_key=True),
    sa.Column("service", sa.String(64), nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("error_class", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("duration", sa.Float, nullable=False, default=0.0),
    sa.Column("tls_version", sa.String(32)),
    sa.Column("ok_observed_at", sa.DateTime(timezone=True)),
    sa.Column("sha256", sa.String(64)),
    sa.Column("not_after", sa.DateTime(timezone=True)),
    sa.Column("chain_pem", sa.Text),
    sa.Column("chain_verified", sa.Boolean),
    sa.Column("verify_error", sa.Text),
    sa.Column("last_change_at", sa.DateTime(timezone=True)),
)

# Kept on every change of what an endpoint serves or of its probe status, bounded per endpoint.
observation_history = sa.Table(
    "observation_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("error_class", sa.String(64)),
    sa.Column("sha256", sa.String(64)),
    sa.Column("not_after", sa.DateTime(timezone=True)),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Index("ix_history_endpoint", "target", "host", "port", "id"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("renewal_id", sa.String(64)),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Index("ix_audit_target_time", "target", "time"),
)


# One row per renewal attempt of a target; `data` is the stage context as JSON.
renewals = sa.Table(
    "renewals",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("next_at", sa.DateTime(timezone=True)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("lease_owner", sa.String(255)),  # the process running it now (HA-safe claim)
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Index("ix_renewals_target", "target", "created_at"),
)
# Named leases between processes, e.g. "restart:<cluster>" so that only one peer of a
# cluster restarts at a time even when a CLI and a daemon (or two HA daemons) run renewals.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("until", sa.DateTime(timezone=True), nullable=False),
)

ACTIVE_STATUSES = ("running", "waiting", "failed", "blocked")
# At most one active renewal per target, enforced by the database itself (both dialects).
sa.Index(
    "ux_renewals_one_active",
    renewals.c.target,
    unique=True,
    sqlite_where=renewals.c.status.in_(ACTIVE_STATUSES),
    postgresql_where=renewals.c.status.in_(ACTIVE_STATUSES),
)

renewal_steps = sa.Table(
    "renewal_steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("renewal_id", sa.String(32), nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("result", sa.String(16), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Index("ix_steps_renewal", "renewal_id", "id"),
)

# Running daemons sharing a PostgreSQL database (monitor/replicas.py); times are the
# database's clock, so that hosts with skewed clocks agree on who is alive.
replicas = sa.Table(
    "replicas",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_replicas_heartbeat", "heartbeat_at"),
)


# Orders sent to each CA (renewers/calimit.py): the shared counter behind `[ca.NAME]`
# orders_per_hour and concurrent_orders, so that the limits hold across replicas.
ca_orders = sa.Table(
    "ca_orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ca", sa.String(64), nullable=False),
    sa.Column("renewal_id", sa.String(32), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_ca_orders_ca", "ca", "started_at"),
    sa.Index("ix_ca_orders_renewal", "renewal_id"),
)


@dataclass(frozen=True)
class RenewalRow:
    id: str
    target: str
    status: str  # running, waiting, failed (retrying), blocked (operator), done, cancelled
    stage: str
    reason: str
    created_at: datetime
    updated_at: datetime
    next_at: datetime | None
    attempts: int
    message: str
    data: dict[str, Any]

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def kind(self) -> str:
        """Which certificate the renewal renews: "client" (the X15.5 client certificate) when
        its record says so, else "server" (rows of earlier versions have no kind)."""
        kind = self.data.get("kind") if isinstance(self.data, dict) else None
        return "client" if kind == "client" else "server"


@dataclass(frozen=True)
class StepRow:
    renewal_id: str
    stage: str
    result: str
    at: datetime
    seconds: float
    message: str


@dataclass(frozen=True)
class EndpointRow:
    """One endpoint_state row as read back."""

    target: str
    host: str
    port: int
    service: str
    observed_at: datetime
    ok: bool
    error_class: str | None
    error: str | None
    duration: float
    tls_version: str | None
    ok_observed_at: datetime | None
    sha256: str | None
    not_after: datetime | None
    chain_pem: str | None
    chain_verified: bool | None
    verify_error: str | None
    last_change_at: datetime | None


@dataclass(frozen=True)
class HistoryRow:
    target: str
    host: str
    port: int
    observed_at: datetime
    ok: bool
    error_class: str | None
    sha256: str | None
    not_after: datetime | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class AuditRow:
    id: int
    time: datetime
    type: str
    target: str
    renewal_id: str | None
    severity: str
    summary: str
    payload: dict[str, Any]


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Store:
    """Async access to the state database. Create with `await Store.open(url)`."""

    def __init__(self, engine: AsyncEngine, url: str, history: int) -> None:
        self._engine = engine
        self.url = redact_url(url)
        self.history = history
        # SQLite has one writer at a time; queueing writes here beats "database is locked".
        self._sqlite = engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock()
        self._upsert_stmt: Any = None
        self.schema: SchemaStatus | None = None  # after open: where the schema stands
        self.schema_before: SchemaStatus | None = None  # ... and where it stood before
        # PostgreSQL's session advisory locks (monitor/sessionlock.py); SQLite has none.
        self.session_locks: SessionLocks | None = (
            SessionLocks(engine.url, self.url) if engine.dialect.name == "postgresql" else None
        )

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; serialised in-process on SQLite."""
        if self._sqlite:
            async with self._write_lock, self._engine.begin() as conn:
                yield conn
        else:
            async with self._engine.begin() as conn:
                yield conn

    @classmethod
    async def open(cls, url: str, *, history: int = 100, migrate: bool = True) -> Store:
        """Open the database and upgrade its schema to the newest revision this release ships.

        `migrate=False` only connects (for `db current`); the schema is then left untouched."""
        _prepare_sqlite_file(url)
        try:
            engine = create_async_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreError(f"state: unusable database URL {redact_url(url)}: {exc}") from exc
        store = cls(engine, url, history)
        if migrate:
            try:
                await store.upgrade_schema()
            except BaseException:
                await engine.dispose()
                raise
        return store

    async def close(self) -> None:
        if self.session_locks is not None:
            await self.session_locks.aclose()
        await self._engine.dispose()

    @property
    def engine(self) -> AsyncEngine:
        """For modules that own their tables' queries (monitor/replicas.py)."""
        return self._engine

    async def ping(self) -> bool:
        try:
            async with self._engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (sa.exc.SQLAlchemyError, OSError):
            return False
        return True

    async def upgrade_schema(self) -> SchemaStatus:
        """Apply pending migrations in one transaction; refuses a schema newer than ours."""
        try:
            async with self._write() as conn:
                before, after = await conn.run_sync(migrations.upgrade_sync, self.url)
        except CommandError as exc:
            raise migrations.schema_error(self.url, exc) from exc
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise StoreError(f"state: cannot open {self.url}: {exc}") from exc
        self.schema_before, self.schema = before, after
        return after

    async def schema_status(self) -> SchemaStatus:
        """Where the database stands, without changing it."""
        try:
            async with self._engine.connect() as conn:
                return await conn.run_sync(migrations.status_sync, self.url)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise StoreError(f"state: cannot open {self.url}: {exc}") from exc

    def _upsert(self) -> Any:
        """One INSERT ... ON CONFLICT statement, built once and executed with many rows."""
        if self._upsert_stmt is None:
            insert = sqlite.insert if self._sqlite else postgresql.insert
            stmt = insert(endpoint_state)
            keys = {"target", "host", "port"}
            self._upsert_stmt = stmt.on_conflict_do_update(
                index_elements=["target", "host", "port"],
                set_={
                    c.name: stmt.excluded[c.name] for c in endpoint_state.c if c.name not in keys
                },
            )
        return self._upsert_stmt

    async def save_endpoints(
        self, rows: Sequence[EndpointRow], history: Sequence[HistoryRow] = ()
    ) -> None:
        """Upsert endpoint rows and append history rows (pruned to `history` per endpoint)."""
        if not rows and not history:
            return
        async with self._write() as conn:
            if rows:
                await conn.execute(self._upsert(), [r.__dict__ for r in rows])
            for h in history:
                entry = h.__dict__.copy()
                entry["detail"] = json.dumps(h.detail, sort_keys=True)
                await conn.execute(observation_history.insert().values(**entry))
                await self._prune_history(conn, h.target, h.host, h.port)

    async def _prune_history(
        self, conn: AsyncConnection, target: str, host: str, port: int
    ) -> None:
        t = observation_history
        same = sa.and_(t.c.target == target, t.c.host == host, t.c.port == port)
        keep_from = (
            sa.select(t.c.id).where(same).order_by(t.c.id.desc()).offset(self.history).limit(1)
        ).scalar_subquery()
        await conn.execute(t.delete().where(same, t.c.id <= keep_from))

    async def load_endpoints(self) -> list[EndpointRow]:
        async with self._engine.connect() as conn:
            result = await conn.execute(sa.select(endpoint_state))
            rows = []
            for r in result.mappings():
                data = dict(r)
                for k in ("observed_at", "ok_observed_at", "not_after", "last_change_at"):
                    data[k] = _aware(data[k])
                rows.append(EndpointRow(**data))
            return rows

    async def delete_endpoints_except(self, keep: Iterable[tuple[str, str, int]]) -> int:
        """Forget endpoints no longer configured; returns how many were removed."""
        keep_set = set(keep)
        existing = await self.load_endpoints()
        gone = [
            (r.target, r.host, r.port)
            for r in existing
            if (r.target, r.host, r.port) not in keep_set
        ]
        if not gone:
            return 0
        t = endpoint_state
        async with self._write() as conn:
            for target, host, port in gone:
                await conn.execute(
                    t.delete().where(t.c.target == target, t.c.host == host, t.c.port == port)
                )
        return len(gone)

    async def history_for(self, target: str, host: str, port: int) -> list[HistoryRow]:
        t = observation_history
        query = (
            sa.select(t)
            .where(t.c.target == target, t.c.host == host, t.c.port == port)
            .order_by(t.c.id)
        )
        async with self._engine.connect() as conn:
            out = []
            for r in (await conn.execute(query)).mappings():
                out.append(
                    HistoryRow(
                        target=r["target"],
                        host=r["host"],
                        port=r["port"],
                        observed_at=_aware(r["observed_at"]) or datetime.now(UTC),
                        ok=r["ok"],
                        error_class=r["error_class"],
                        sha256=r["sha256"],
                        not_after=_aware(r["not_after"]),
                        detail=json.loads(r["detail"]),
                    )
                )
            return out

    async def append_event(self, event: Event) -> None:
        async with self._write() as conn:
            await conn.execute(
                audit_log.insert().values(
                    time=event.time,
                    type=event.type,
                    target=event.target,
                    renewal_id=event.renewal_id,
                    severity=event.severity,
                    summary=event.summary(),
                    payload=json.dumps(event.payload(), sort_keys=True, default=str),
                )
            )

    async def events(
        self, *, target: str | None = None, types: Sequence[str] = (), limit: int = 100
    ) -> list[AuditRow]:
        """Most recent events first."""
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if target is not None:
            query = query.where(audit_log.c.target == target)
        if types:
            query = query.where(audit_log.c.type.in_(list(types)))
        async with self._engine.connect() as conn:
            return [
                AuditRow(
                    id=r["id"],
                    time=_aware(r["time"]) or datetime.now(UTC),
                    type=r["type"],
                    target=r["target"],
                    renewal_id=r["renewal_id"],
                    severity=r["severity"],
                    summary=r["summary"],
                    payload=json.loads(r["payload"]),
                )
                for r in (await conn.execute(query)).mappings()
            ]

    # ---- renewals ------------------------------------------------------------------------

    async def create_renewal(self, row: RenewalRow) -> RenewalRow:
        """Insert a renewal unless the target already has an active one (then return that)."""
        async with self._write() as conn:
            existing = (
                (
                    await conn.execute(
                        sa.select(renewals)
                        .where(
                            renewals.c.target == row.target, renewals.c.status.in_(ACTIVE_STATUSES)
                        )
                        .limit(1)
                    )
                )
                .mappings()
                .first()
            )
            if existing is not None:
                return _renewal(existing)
            values = row.__dict__.copy()
            values["data"] = json.dumps(row.data, sort_keys=True)
            await conn.execute(renewals.insert().values(**values))
        return row

    async def save_renewal(
        self, row: RenewalRow, step: StepRow | None = None, *, owner: str | None = None
    ) -> None:
        """Persist a renewal's new state (and the step that led to it) in one transaction.
        `owner`: only while that process holds the renewal's lease, so a writer that lost it
        (or never had it) cannot overwrite what the holder wrote (raises StoreError)."""
        values = row.__dict__.copy()
        values["data"] = json.dumps(row.data, sort_keys=True)
        del values["id"]
        where = [renewals.c.id == row.id]
        if owner is not None:
            where.append(renewals.c.lease_owner == owner)
        async with self._write() as conn:
            result = await conn.execute(renewals.update().where(*where).values(**values))
            if result.rowcount != 1:
                if owner is not None:
                    raise StoreError(
                        f"renewal {row.id}: not saved: this process ({owner}) no longer holds "
                        "its lease (another process took it over); that process carries on"
                    )
                raise StoreError(f"renewal {row.id}: not found in {self.url}")
            if step is not None:
                await conn.execute(renewal_steps.insert().values(**step.__dict__))

    async def claim_renewal(
        self,
        renewal_id: str,
        owner: str,
        now: datetime,
        ttl: timedelta,
        *,
        take_from: str | None = None,
    ) -> bool:
        """Take (or extend) the lease on a renewal; False when another process holds it.
        `take_from`: also take it while that owner (a process known to be gone) holds it."""
        r = renewals.c
        free = [r.lease_until.is_(None), r.lease_until < now, r.lease_owner == owner]
        if take_from is not None:
            free.append(r.lease_owner == take_from)
        async with self._write() as conn:
            result = await conn.execute(
                renewals.update()
                .where(r.id == renewal_id, sa.or_(*free))
                .values(lease_owner=owner, lease_until=now + ttl)
            )
            return bool(result.rowcount == 1)

    async def renewal_lease_owner(self, renewal_id: str) -> str | None:
        """Who holds the renewal's lease (expired or not); None when nobody."""
        r = renewals.c
        async with self._engine.connect() as conn:
            owner = (
                await conn.execute(sa.select(r.lease_owner).where(r.id == renewal_id))
            ).scalar_one_or_none()
            return str(owner) if owner is not None else None

    async def claim_lease(
        self,
        name: str,
        owner: str,
        now: datetime,
        ttl: timedelta,
        *,
        take_from: str | None = None,
    ) -> bool:
        """Take the named lease when free or expired (or extend our own); False when held.
        `take_from`: also take it while that owner (a process known to be gone) holds it."""
        t = leases.c
        free = [t.until < now, t.owner == owner]
        if take_from is not None:
            free.append(t.owner == take_from)
        async with self._write() as conn:
            result = await conn.execute(
                leases.update()
                .where(t.name == name, sa.or_(*free))
                .values(owner=owner, until=now + ttl)
            )
            if result.rowcount == 1:
                return True
            exists = (await conn.execute(sa.select(t.name).where(t.name == name))).first()
            if exists is not None:
                return False
        try:
            async with self._write() as conn:
                await conn.execute(leases.insert().values(name=name, owner=owner, until=now + ttl))
        except sa.exc.IntegrityError:
            return False  # another process inserted it first
        return True

    async def lease_owner(self, name: str) -> str | None:
        async with self._engine.connect() as conn:
            owner = (
                await conn.execute(sa.select(leases.c.owner).where(leases.c.name == name))
            ).scalar_one_or_none()
            return str(owner) if owner is not None else None

    async def release_lease(self, name: str, owner: str) -> None:
        async with self._write() as conn:
            await conn.execute(
                leases.delete().where(leases.c.name == name, leases.c.owner == owner)
            )

    async def end_leftover_session(
        self, lock: str, now: datetime, *, renewal_id: str | None = None, lease: str | None = None
    ) -> bool:
        """PostgreSQL: end the session holding session lock `lock` when the lease it guards (a
        renewal's, or the named `lease`) has run out: its holder stopped renewing the lease
        for a whole LEASE while its session stayed, so that session is a leftover (its host
        vanished and the server has not noticed: without TCP keepalives it would for hours).
        The lease row stays locked (FOR UPDATE) meanwhile, so no claim lands in between; a
        holder that claims just after finds its lock gone and lets go. True when a session
        was ended; False on SQLite, while the lease runs, or when the database refuses."""
        if self.session_locks is None:
            return False
        if renewal_id is not None:
            query = sa.select(renewals.c.lease_until).where(renewals.c.id == renewal_id)
        else:
            query = sa.select(leases.c.until).where(leases.c.name == lease)
        try:
            async with self._write() as conn:
                until = _aware((await conn.execute(query.with_for_update())).scalar())
                if until is None or until >= now:
                    return False
                rows = await conn.execute(sa.text(HOLDERS_SQL), holders_params(lock))
                pids = [int(r[0]) for r in rows]
                ended = not pids  # nobody holds it any more: worth another try too
                for pid in pids:
                    done = bool(await conn.scalar(sa.select(sa.func.pg_terminate_backend(pid))))
                    log.warning(
                        "ended the leftover session of an expired lease",
                        lock=lock, backend=pid, lease_until=until.isoformat(), ended=done,
                    )  # fmt: skip
                    ended = ended or done
                if pids:
                    # pg_terminate_backend only signals the backend: its session lock goes
                    # when the process has exited, a moment later. A claim made before then
                    # would still find the lock held, so wait (bounded) until it is released.
                    for _ in range(TERMINATE_POLLS):
                        rows = await conn.execute(sa.text(HOLDERS_SQL), holders_params(lock))
                        if not {int(r[0]) for r in rows} & set(pids):
                            break
                        await asyncio.sleep(TERMINATE_POLL_SECONDS)
                return ended
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            log.warning(
                "cannot end the leftover session of an expired lease; it holds until the "
                "server notices its client is gone (lower tcp_keepalives_idle on the server, "
                "or grant the replicas' role pg_signal_backend)",
                lock=lock, error=str(exc),
            )  # fmt: skip
            return False

    async def release_renewal(self, renewal_id: str, owner: str) -> None:
        r = renewals.c
        async with self._write() as conn:
            await conn.execute(
                renewals.update()
                .where(r.id == renewal_id, r.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    async def renewal(self, renewal_id: str) -> RenewalRow | None:
        async with self._engine.connect() as conn:
            r = (
                (await conn.execute(sa.select(renewals).where(renewals.c.id == renewal_id)))
                .mappings()
                .first()
            )
            return _renewal(r) if r is not None else None

    async def renewals_for(
        self, target: str | None = None, *, active_only: bool = False, limit: int = 50
    ) -> list[RenewalRow]:
        """Newest first."""
        query = sa.select(renewals).order_by(renewals.c.created_at.desc()).limit(limit)
        if target is not None:
            query = query.where(renewals.c.target == target)
        if active_only:
            query = query.where(renewals.c.status.in_(ACTIVE_STATUSES))
        async with self._engine.connect() as conn:
            return [_renewal(r) for r in (await conn.execute(query)).mappings()]

    async def steps(self, renewal_id: str) -> list[StepRow]:
        t = renewal_steps
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(t).where(t.c.renewal_id == renewal_id).order_by(t.c.id)
            )
            return [
                StepRow(
                    renewal_id=r["renewal_id"],
                    stage=r["stage"],
                    result=r["result"],
                    at=_aware(r["at"]) or datetime.now(UTC),
                    seconds=r["seconds"],
                    message=r["message"],
                )
                for r in rows.mappings()
            ]

    async def prune_audit(self, older_than: timedelta, now: datetime) -> int:
        async with self._write() as conn:
            result = await conn.execute(
                audit_log.delete().where(audit_log.c.time < now - older_than)
            )
            return int(result.rowcount or 0)


def _renewal(r: Any) -> RenewalRow:
    return RenewalRow(  # lease columns stay in the database: they are nobody else's business
        id=r["id"],
        target=r["target"],
        status=r["status"],
        stage=r["stage"],
        reason=r["reason"],
        created_at=_aware(r["created_at"]) or datetime.now(UTC),
        updated_at=_aware(r["updated_at"]) or datetime.now(UTC),
        next_at=_aware(r["next_at"]),
        attempts=r["attempts"],
        message=r["message"],
        data=json.loads(r["data"]),
    )


def _prepare_sqlite_file(url: str) -> None:
    """Create the SQLite file's directory (0700) and the file itself (0600) before first use."""
    if not (url.startswith("sqlite") and ":///" in url):
        return
    path = Path(url.split(":///", 1)[1])
    if str(path) in ("", ":memory:"):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            path.touch(mode=0o600)
    except OSError as exc:
        raise StoreError(
            f"state: cannot create {path}: {exc.strerror}; set [daemon] state to a writable path"
        ) from exc
