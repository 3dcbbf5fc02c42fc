"""postpaid invoices stay open until paid; operator-recorded payments; buyer profiles

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 04:30:00.000000

A finalized invoice's status is now `open` (it was `finalized`). Invoices that the old
code marked paid by drawing on a postpaid user's credit line are reopened by
`billfold.invoicing.reopen_paid_from_credit`, which moves the ledger back through new
transfers (the journal is append-only and hash-chained, so this is not done in SQL);
`billfold migrate` and the server run it after the schema is current.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billfold.store.types

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoice_payments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("transfer_id", sa.String(length=255), nullable=False),
        sa.Column("recorded_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", billfold.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_payments_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_payments")),
    )
    op.create_index(
        op.f("ix_invoice_payments_invoice_id"), "invoice_payments", ["invoice_id"], unique=False
    )
    op.add_column("users", sa.Column("billing_profile_enc", sa.Text(), nullable=True))
    op.add_column(
        "users", sa.Column("autopay_invoices", sa.Integer(), nullable=False, server_default="0")
    )
    op.execute("UPDATE invoices SET status = 'open' WHERE status = 'finalized'")


def downgrade() -> None:
    op.execute("UPDATE invoices SET status = 'finalized' WHERE status = 'open'")
    # Not in batch mode: on SQLite that copies `users`, which rows elsewhere refer to;
    # SQLite (3.35+) drops a column in place.
    op.drop_column("users", "autopay_invoices")
    op.drop_column("users", "billing_profile_enc")
    op.drop_index(op.f("ix_invoice_payments_invoice_id"), table_name="invoice_payments")
    op.drop_table("invoice_payments")
