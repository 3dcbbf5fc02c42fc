"""invoice notices: the outbox of invoice mail

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 04:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billfold.store.types

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoice_notices",
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("created_at", billfold.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", billfold.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("claimed_until", billfold.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_notices_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("invoice_id", "kind", name=op.f("pk_invoice_notices")),
    )
    op.create_index("ix_invoice_notices_sent_at", "invoice_notices", ["sent_at"], unique=False)
    # Invoices issued before this version were not mailed; they are not mailed now.
    op.execute(
        "INSERT INTO invoice_notices (invoice_id, kind, created_at, sent_at, attempts) "
        "SELECT id, 'issued', finalized_at, finalized_at, 0 FROM invoices "
        "WHERE finalized_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_invoice_notices_sent_at", table_name="invoice_notices")
    op.drop_table("invoice_notices")
