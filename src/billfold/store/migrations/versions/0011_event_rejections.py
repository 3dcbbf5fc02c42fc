"""usage: the events a provider sent that were refused, for its debugger

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 16:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billfold.store.types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_rejections",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("provider_id", sa.String(length=40), nullable=True),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("at", billfold.store.types.UTCDateTime(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("param", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_event_rejections_provider_id_at", "event_rejections", ["provider_id", "at"])
    op.create_index("ix_event_rejections_at", "event_rejections", ["at"])


def downgrade() -> None:
    op.drop_index("ix_event_rejections_at", table_name="event_rejections")
    op.drop_index("ix_event_rejections_provider_id_at", table_name="event_rejections")
    op.drop_table("event_rejections")
