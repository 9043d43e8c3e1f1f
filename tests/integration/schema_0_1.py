"""The state schema exactly as released in 0.1 (monitor/store.py at 0d93258), and its set-up.

Frozen on purpose: the migration tests create a "0.1 database" with this, independently of
revision 0001, so that a revision drifting from the release is caught.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version", metadata, sa.Column("version", sa.Integer, nullable=False)
)
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
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Index("ix_renewals_target", "target", "created_at"),
)
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("until", sa.DateTime(timezone=True), nullable=False),
)
ACTIVE_STATUSES = ("running", "waiting", "failed", "blocked")
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


def create_0_1(conn: sa.Connection) -> None:
    """What 0.1's Store._migrate did on a new database."""
    metadata.create_all(conn)
    if conn.execute(sa.select(schema_version.c.version)).scalar() is None:
        conn.execute(schema_version.insert().values(version=1))
