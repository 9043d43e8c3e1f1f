"""The schema as released in expressway-certd 0.1 (what `metadata.create_all` made then).

Frozen: this file never changes. A database created by 0.1 (tables plus `schema_version` = 1,
no `alembic_version`) is recognised and stamped at this revision instead of being re-created.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ACTIVE_STATUSES = ("running", "waiting", "failed", "blocked")


def upgrade() -> None:
    version = op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.bulk_insert(version, [{"version": 1}])
    op.create_table(
        "endpoint_state",
        sa.Column("target", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("port", sa.Integer, primary_key=True),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("error_class", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("duration", sa.Float, nullable=False),
        sa.Column("tls_version", sa.String(32)),
        sa.Column("ok_observed_at", sa.DateTime(timezone=True)),
        sa.Column("sha256", sa.String(64)),
        sa.Column("not_after", sa.DateTime(timezone=True)),
        sa.Column("chain_pem", sa.Text),
        sa.Column("chain_verified", sa.Boolean),
        sa.Column("verify_error", sa.Text),
        sa.Column("last_change_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "observation_history",
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
    )
    op.create_index("ix_history_endpoint", "observation_history", ["target", "host", "port", "id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("renewal_id", sa.String(64)),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_target_time", "audit_log", ["target", "time"])
    renewals = op.create_table(
        "renewals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_renewals_target", "renewals", ["target", "created_at"])
    active = renewals.c.status.in_(ACTIVE_STATUSES)
    op.create_index(
        "ux_renewals_one_active",
        "renewals",
        ["target"],
        unique=True,
        sqlite_where=active,
        postgresql_where=active,
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "renewal_steps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("renewal_id", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_steps_renewal", "renewal_steps", ["renewal_id", "id"])


def downgrade() -> None:
    for table in (
        "renewal_steps",
        "leases",
        "renewals",
        "audit_log",
        "observation_history",
        "endpoint_state",
        "schema_version",
    ):
        op.drop_table(table)
