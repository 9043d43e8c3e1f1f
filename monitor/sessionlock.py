"""PostgreSQL session-level advisory locks, each held on a database connection of its own.

A process working a renewal holds `pg_try_advisory_lock` on a connection it keeps open until it
lets go; PostgreSQL drops the lock when that session ends, however it ends (the process exits,
is SIGKILLed, its host vanishes and the server notices the dead socket). So another replica
that can take the lock knows the holder's session is gone, without waiting out a lease TTL
(renewers/pipeline/locks.py decides what that allows).

The keys use PostgreSQL's two-integer key space (`pg_try_advisory_lock(int4, int4)`), which
does not overlap the single-bigint space that the schema migrations (monitor/migrations) and
the CA order limits (renewers/calimit.py) lock in: PostgreSQL's documentation (Advisory Lock
Functions: "these two key spaces do not overlap"; the pg_locks view tells them apart by
objsubid, 1 and 2), confirmed on the server by tests/integration/test_session_locks.py (the
same 64 bits locked in both spaces at once by two sessions). The two integers
are the 64-bit BLAKE2b digest of the lock's name ("renewal:<id>"), so two names share a key
only by a 2**-64 chance.

Each lock has its own connection from an engine without a pool (NullPool): letting go closes
that connection, so no lock can ever ride back into a pool with a reused connection, and the
locks never take connections from the store's pool (whose heartbeats and writes must not
wait behind long stages). A bounded number of locks of one kind (the name's prefix before
":", e.g. "renewal" or "lease") is held at a time per process (`limit`); one more waits for a
free place. Each kind has places of its own, so a holder of a renewal's lock can always get
a named lease's (a stage takes one while its renewal is held): no two kinds wait on each
other. SQLite has no such locks: the store offers none there.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from expressway_certd.monitor.errors import StoreError

log = structlog.get_logger("monitor.sessionlock")

# How many session locks (connections) of one kind one process holds at most at a time.
LIMIT = 16


def advisory_key(name: str) -> tuple[int, int]:
    """The two signed 32-bit keys of `name` in PostgreSQL's two-integer advisory key space."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    first, second = struct.unpack(">ii", digest)
    return int(first), int(second)


# The sessions holding a session lock: pg_locks shows a two-key advisory lock as classid =
# first key, objid = second key (both as unsigned oids), objsubid = 2.
HOLDERS_SQL = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted "
    "AND classid = CAST(:c AS oid) AND objid = CAST(:o AS oid)"
)


def holders_params(name: str) -> dict[str, int]:
    """The bind parameters of HOLDERS_SQL for the lock `name`."""
    first, second = advisory_key(name)
    return {"c": first & 0xFFFFFFFF, "o": second & 0xFFFFFFFF}


def _keys(name: str) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    first, second = advisory_key(name)
    return sa.literal(first, sa.Integer), sa.literal(second, sa.Integer)


class SessionLock:
    """One held lock and the connection (session) that holds it. `release()` closes the
    connection, which drops the lock; it is safe to call twice."""

    def __init__(self, name: str, conn: AsyncConnection, driver: Any, slot: asyncio.Semaphore):
        self.name = name
        self._conn: AsyncConnection | None = conn
        self._driver = driver  # asyncpg's connection: terminate() closes it without awaiting
        self._slot = slot

    async def still_held(self) -> bool:
        """Whether this session still holds the lock, asked on its own connection: False when
        the connection broke (the server restarted, the network dropped it, an administrator
        terminated the backend), after which another process may have taken the lock."""
        if self._conn is None:
            return False
        query = sa.text(HOLDERS_SQL + " AND pid = pg_backend_pid()")
        try:
            found = (await self._conn.execute(query, holders_params(self.name))).first()
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            log.warning("session lock lost", lock=self.name, error=str(exc))
            return False
        return found is not None

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await _close(conn, self._driver)
        finally:
            self._slot.release()


async def _close(conn: AsyncConnection, driver: Any) -> None:
    """Close the lock's connection; when that cannot finish (cancelled again, the server
    unreachable), drop the socket at once: the server then ends the session and its locks."""
    try:
        await conn.close()
    except Exception as exc:  # a broken connection: nothing to close politely
        log.warning("session lock connection dropped", error=str(exc))
        if driver is not None:
            driver.terminate()
    except BaseException:  # cancelled again while closing: drop it, let the cancel go on
        if driver is not None:
            driver.terminate()
        raise


class SessionLocks:
    """Takes session locks in one PostgreSQL database (`url`, the store's)."""

    def __init__(self, url: sa.URL, shown: str, *, limit: int = LIMIT) -> None:
        self._url = url
        self._shown = shown  # the URL without its password, for errors
        self._engine: AsyncEngine | None = None
        self._limit = limit
        self._slots: dict[str, asyncio.Semaphore] = {}  # kind -> its places

    def _engine_now(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = create_async_engine(self._url, poolclass=NullPool)
        return self._engine

    async def try_lock(self, name: str) -> SessionLock | None:
        """Take `name` on a new connection of its own and keep it; None when another session
        holds it (its holder is alive). Raises StoreError when the database cannot be asked."""
        slots = self._slots.setdefault(name.partition(":")[0], asyncio.Semaphore(self._limit))
        await slots.acquire()
        conn: AsyncConnection | None = None
        driver: Any = None
        try:
            conn = await self._engine_now().connect()
            # No transaction stays open while the lock is held for minutes.
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            driver = (await conn.get_raw_connection()).driver_connection
            got = await conn.scalar(sa.select(sa.func.pg_try_advisory_lock(*_keys(name))))
        except BaseException as exc:
            try:
                if conn is not None:
                    await _close(conn, driver)
            finally:
                slots.release()
            if isinstance(exc, sa.exc.SQLAlchemyError | OSError):
                raise StoreError(
                    f"lock {name}: cannot take its session lock in {self._shown}: {exc}; check "
                    "that PostgreSQL is reachable"
                ) from exc
            raise
        if not got:
            try:
                await _close(conn, driver)
            finally:
                slots.release()
            return None
        return SessionLock(name, conn, driver, slots)

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
