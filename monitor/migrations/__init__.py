"""Versioned schema migrations of the state database (Alembic), for SQLite and PostgreSQL.

Revisions live in `versions/` (one file per schema change, chained by `down_revision`). The
store upgrades its database to the newest revision when it opens it (`Store.open`), and
`expressway-certd db current|upgrade` does the same on demand. Three kinds of database exist:

- empty: every revision runs from the first one;
- released 0.1 (tables and `schema_version` = 1, no `alembic_version`): recognised, checked and
  stamped at revision 0001 (nothing is re-created), then upgraded;
- managed (an `alembic_version` row): upgraded from its revision; a revision this release does
  not know means a newer expressway-certd wrote it, and nothing is touched.

After an upgrade `schema_version.version` holds the number of revisions applied, so an older
release (whose check is `version > what I know`) refuses a database it cannot read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config as AlembicConfig
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from expressway_certd.monitor import __version__
from expressway_certd.monitor.errors import StoreError

SCRIPTS = Path(__file__).resolve().parent
# The revision that describes the released 0.1 schema; 0.1 databases are stamped at it.
RELEASE_0_1 = "0001"
RELEASE_0_1_TABLES = frozenset(
    {
        "schema_version",
        "endpoint_state",
        "observation_history",
        "audit_log",
        "renewals",
        "leases",
        "renewal_steps",
    }
)
# pg_advisory_xact_lock key: replicas starting together migrate one after the other.
PG_MIGRATION_LOCK = 0x63657274_64000001


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands against the revisions this release ships."""

    current: str | None  # the database's revision; None when empty or not yet stamped
    head: str  # the newest revision this release knows
    legacy: bool  # a 0.1 database that has no Alembic revision yet
    pending: tuple[str, ...]  # revisions an upgrade would apply, oldest first

    @property
    def up_to_date(self) -> bool:
        return not self.pending and not self.legacy

    def describe(self) -> str:
        if self.legacy:
            where = "released 0.1 schema (not yet stamped)"
        elif self.current is None:
            where = "empty (no schema)"
        else:
            where = f"revision {self.current}"
        if self.up_to_date:
            return f"{where}; up to date (head {self.head})"
        todo = [f"stamp {RELEASE_0_1}"] if self.legacy else []
        todo += [f"apply {rev}" for rev in self.pending]
        return f"{where}; to do: {', '.join(todo)} (head {self.head})"


def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(SCRIPTS))


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(SCRIPTS))
    return cfg


def _revisions_from_base(script: ScriptDirectory) -> list[str]:
    """Every revision, oldest first (the chain is linear)."""
    return [s.revision for s in reversed(list(script.walk_revisions("base", "heads")))]


def _newer_error(url: str, current: str, head: str) -> StoreError:

    return StoreError(
        f"state: database {url} is at schema revision {current}, newer than this "
        f"expressway-certd {__version__} knows (its newest is {head}); run the "
        "expressway-certd release that upgraded the database, or restore the state backup "
        "taken before that upgrade (docs/operations.md, 'Upgrades')"
    )


def status_sync(conn: sa.Connection, url: str) -> SchemaStatus:
    """Inspect a database without changing it; raises StoreError when it is not ours to touch."""
    script = script_directory()
    chain = _revisions_from_base(script)
    head = chain[-1]
    tables = set(sa.inspect(conn).get_table_names())
    if "alembic_version" in tables:
        heads = MigrationContext.configure(conn).get_current_heads()
        if not heads:
            return SchemaStatus(None, head, legacy=False, pending=tuple(chain))
        if len(heads) > 1:
            raise StoreError(
                f"state: database {url} has several schema revisions ({', '.join(heads)}); "
                "restore the state backup taken before the last upgrade"
            )
        current = heads[0]
        if current not in chain:
            raise _newer_error(url, current, head)
        return SchemaStatus(
            current, head, legacy=False, pending=tuple(chain[chain.index(current) + 1 :])
        )
    if "schema_version" in tables:
        version = conn.execute(sa.text("SELECT MAX(version) FROM schema_version")).scalar()
        if version is not None and int(version) > 1:
            raise _newer_error(url, f"schema_version {version}", head)
        missing = RELEASE_0_1_TABLES - tables
        if missing:
            raise StoreError(
                f"state: database {url} has a schema_version table but lacks "
                f"{', '.join(sorted(missing))}: not an expressway-certd 0.1 database; point "
                "[daemon] state at the right database or restore its backup"
            )
        return SchemaStatus(None, head, legacy=True, pending=tuple(chain[1:]))
    return SchemaStatus(None, head, legacy=False, pending=tuple(chain))


def upgrade_sync(
    conn: sa.Connection, url: str, destination: str = "head"
) -> tuple[SchemaStatus, SchemaStatus]:
    """Bring the database to the newest revision (or `destination`), in the caller's
    transaction. Returns the status before and after. On PostgreSQL a transaction-scoped
    advisory lock serialises processes that start together; SQLite's write lock does the same.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
    before = status_sync(conn, url)
    if before.up_to_date:
        return before, before
    script = script_directory()
    if before.legacy:
        MigrationContext.configure(conn).stamp(script, RELEASE_0_1)

    def steps(revision: Any, context: MigrationContext) -> Iterable[Any]:
        return script._upgrade_revs(destination, revision)

    env = EnvironmentContext(_alembic_config(), script, fn=steps, destination_rev=destination)
    with env:
        # batch mode: SQLite cannot ALTER most things in place; Alembic copies the table.
        env.configure(connection=conn, render_as_batch=True)
        with env.begin_transaction():
            env.run_migrations()
    chain = _revisions_from_base(script)
    applied = len(chain) if destination == "head" else chain.index(destination) + 1
    conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": applied})
    return before, status_sync(conn, url)


def schema_error(url: str, exc: CommandError) -> StoreError:
    return StoreError(f"state: cannot migrate {url}: {exc}; restore the state backup and retry")
