"""api keys: expiry, scopes, last use

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 10:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billfold.store.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", billfold.store.types.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("scopes", sa.String(length=200), nullable=True))
        batch.add_column(
            sa.Column("last_used_at", billfold.store.types.UTCDateTime(), nullable=True)
        )
        batch.add_column(sa.Column("rotated_from", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("rotated_from")
        batch.drop_column("last_used_at")
        batch.drop_column("scopes")
        batch.drop_column("expires_at")
