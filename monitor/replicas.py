"""Replicas groundwork: a registry of live daemons in PostgreSQL and the split of targets.

Several `expressway-certd run` processes can share one PostgreSQL database. Each registers a
row in `replicas` and heartbeats it; a replica is live while its heartbeat is younger than the
timeout, judged by the database's clock (`now()`), so skewed host clocks do not matter.
Targets are split among the live replicas by rendezvous (highest-random-weight) hashing:
every replica computes the same owner for a target from the same membership, nothing moves
while membership is unchanged, and when a replica joins or leaves only the targets it gains or
held move. SQLite is a one-machine store for one daemon: a second daemon on the same SQLite
state file is refused at start (`hold_sqlite_state`), and so are replicas on it.

The daemon (expressway_certd/daemon.py) registers whenever its store is PostgreSQL, heartbeats
every `heartbeat_interval(poll_interval)`, and after each heartbeat recomputes which targets it
owns (`Ownership.update`): it polls and exports only those (docs/operations.md, "Replicas").
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from expressway_certd.monitor.errors import ConfigError, StoreError
from expressway_certd.monitor.store import Store, replicas


def _score(replica: str, target: str) -> int:
    digest = hashlib.sha256(f"{replica}\0{target}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def owner(target: str, live: Iterable[str]) -> str | None:
    """The live replica that owns `target` (highest score; ties broken by id), or None."""
    best: tuple[int, str] | None = None
    for replica in live:
        key = (_score(replica, target), replica)
        if best is None or key > best:
            best = key
    return best[1] if best is not None else None


def assign(targets: Iterable[str], live: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Every live replica -> the targets it owns (sorted); every target has exactly one owner."""
    out: dict[str, list[str]] = {r: [] for r in live}
    for target in targets:
        chosen = owner(target, live)
        if chosen is not None:
            out[chosen].append(target)
    return {r: tuple(sorted(ts)) for r, ts in out.items()}


def moved(before: Mapping[str, Sequence[str]], after: Mapping[str, Sequence[str]]) -> set[str]:
    """Targets whose owner differs between two assignments."""

    def owners(a: Mapping[str, Sequence[str]]) -> dict[str, str]:
        return {t: r for r, ts in a.items() for t in ts}

    old, new = owners(before), owners(after)
    return {t for t in old.keys() | new.keys() if old.get(t) != new.get(t)}


MIN_HEARTBEAT = timedelta(seconds=1)
MAX_HEARTBEAT = timedelta(seconds=10)
TIMEOUT_HEARTBEATS = 3  # a replica is dead after missing this many heartbeats


def heartbeat_interval(poll_interval: timedelta) -> timedelta:
    """How often a replica heartbeats: a third of the poll interval, between 1 s and 10 s."""
    return max(MIN_HEARTBEAT, min(MAX_HEARTBEAT, poll_interval / 3))


def heartbeat_timeout(poll_interval: timedelta) -> timedelta:
    """How long a silent replica counts as live: three heartbeats."""
    return heartbeat_interval(poll_interval) * TIMEOUT_HEARTBEATS


@dataclass(frozen=True)
class Change:
    """What one ownership update changed for this replica."""

    gained: frozenset[str]
    lost: frozenset[str]


class Ownership:
    """Which targets this replica owns, from the latest live membership it saw.

    Before the first update (or when this replica is not in the live list, e.g. its heartbeat
    was late) it counts itself live: a replica always polls at least what it would own, so a
    target is never left unpolled because of our own late heartbeat.
    """

    def __init__(self, me: str) -> None:
        self.me = me
        self.live: tuple[str, ...] = (me,)
        self.owned: frozenset[str] = frozenset()

    def update(self, live: Iterable[str], targets: Iterable[str]) -> Change:
        members = sorted(set(live) | {self.me})
        owned = frozenset(t for t in targets if owner(t, members) == self.me)
        change = Change(gained=owned - self.owned, lost=self.owned - owned)
        self.live, self.owned = tuple(members), owned
        return change

    def owns(self, target: str) -> bool:
        return target in self.owned


def require_postgresql(store_url: str, dialect: str) -> None:
    """Replicas share state through PostgreSQL; refuse them on SQLite with the fix."""
    if dialect != "postgresql":
        raise ConfigError(
            f"replicas: [daemon] state is {store_url} ({dialect}), a single-machine store; "
            "several expressway-certd replicas need one shared PostgreSQL database: set "
            "[daemon] state = 'postgresql://user@host/db' on every replica, or run one replica"
        )


def hold_sqlite_state(state_file: Path) -> BinaryIO:
    """Make this process the one daemon of a SQLite state file, or refuse with the fix.

    Holds an exclusive lock (flock) on `<state file>.daemon-lock` until the returned file is
    closed. The kernel drops the lock when the process ends however it ends (SIGKILL
    included), so no stale lock outlives a dead daemon. CLI verbs do not take it: they may
    work beside the daemon, as on PostgreSQL."""
    lock_path = state_file.with_name(state_file.name + ".daemon-lock")
    try:
        state_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = os.fdopen(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")
    except OSError as exc:
        raise ConfigError(
            f"state: cannot open the lock file {lock_path} beside the SQLite state file "
            f"({exc.strerror}); make its directory writable by the service user"
        ) from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read(200).decode("utf-8", "replace").strip() or "another process"
        handle.close()
        raise ConfigError(
            f"state: another expressway-certd daemon ({holder}) already runs on the SQLite "
            f"state file {state_file}; SQLite is a single-machine store for one daemon: stop "
            "that daemon first, or, to run replicas, set [daemon] state = "
            "'postgresql://user@host/db' on every replica"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()[:60]}".encode())
    handle.flush()
    return handle


def new_replica_id(host: str | None = None, pid: int | None = None) -> str:
    """host:pid:random, unique across restarts (a restarted process is a new replica)."""
    host = (host or socket.gethostname())[:40]
    return f"{host}:{pid if pid is not None else os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Replica:
    id: str
    host: str
    pid: int
    version: str


class Registry:
    """This process's row in `replicas`, and who else is alive."""

    def __init__(self, store: Store, me: Replica, *, timeout: timedelta) -> None:
        require_postgresql(store.url, store.engine.dialect.name)
        self.store = store
        self.me = me
        self.timeout = timeout

    async def register(self) -> None:
        stmt = postgresql.insert(replicas).values(
            id=self.me.id,
            host=self.me.host,
            pid=self.me.pid,
            version=self.me.version,
            started_at=sa.func.now(),
            heartbeat_at=sa.func.now(),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"], set_={"heartbeat_at": sa.func.now()}
        )
        await self._execute(stmt)

    async def heartbeat(self) -> None:
        """Refresh our row; re-registers when it was pruned (e.g. after a long pause)."""
        result = await self._execute(
            replicas.update().where(replicas.c.id == self.me.id).values(heartbeat_at=sa.func.now())
        )
        if result == 0:
            await self.register()

    async def live(self) -> list[str]:
        """Ids of the replicas whose heartbeat is younger than the timeout, sorted."""
        fresh = replicas.c.heartbeat_at >= sa.func.now() - self.timeout
        try:
            async with self.store.engine.connect() as conn:
                rows = await conn.execute(
                    sa.select(replicas.c.id).where(fresh).order_by(replicas.c.id)
                )
                return [str(r[0]) for r in rows]
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise StoreError(f"replicas: cannot read {self.store.url}: {exc}") from exc

    async def deregister(self) -> None:
        await self._execute(replicas.delete().where(replicas.c.id == self.me.id))

    async def prune(self, older_than: timedelta) -> int:
        """Forget replicas silent for longer than `older_than` (they are long dead)."""
        return await self._execute(
            replicas.delete().where(replicas.c.heartbeat_at < sa.func.now() - older_than)
        )

    async def _execute(self, stmt: sa.Executable) -> int:
        try:
            async with self.store.engine.begin() as conn:
                result = await conn.execute(stmt)
                return int(getattr(result, "rowcount", 0) or 0)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise StoreError(
                f"replicas: cannot update {self.store.url}: {exc}; check that PostgreSQL is "
                "reachable"
            ) from exc
