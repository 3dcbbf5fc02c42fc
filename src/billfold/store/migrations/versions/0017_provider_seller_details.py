"""providers as merchants of record: their seller details on invoices

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 05:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("providers", sa.Column("seller_details_enc", sa.Text(), nullable=True))
    op.add_column(
        "providers",
        sa.Column("merchant_of_record", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    # In place (SQLite 3.35+): batch mode would copy `providers`, which rows refer to.
    op.drop_column("providers", "merchant_of_record")
    op.drop_column("providers", "seller_details_enc")
