"""Orders sent to each CA: the shared counter of the per-CA limits (`[ca.NAME]`
orders_per_hour, concurrent_orders), used by every replica and the CLI alike."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ca_orders",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ca", sa.String(64), nullable=False),
        sa.Column("renewal_id", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_ca_orders_ca", "ca_orders", ["ca", "started_at"])
    op.create_index("ix_ca_orders_renewal", "ca_orders", ["renewal_id"])


def downgrade() -> None:
    op.drop_index("ix_ca_orders_renewal", "ca_orders")
    op.drop_index("ix_ca_orders_ca", "ca_orders")
    op.drop_table("ca_orders")
