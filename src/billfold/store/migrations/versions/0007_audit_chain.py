"""audit trail: hash chain and party

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 11:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billfold.store.types
from billfold.domain.audit import GENESIS, at_text, entry_hash

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("party", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch.create_index("ix_audit_log_party", ["party"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    # Chain the entries written before the chain existed, in their order.
    conn = op.get_bind()
    log = sa.table(
        "audit_log",
        sa.column("at", billfold.store.types.UTCDateTime()),
        *(sa.column(name) for name in (
            "id", "actor", "role", "party", "action", "object_type", "object_id",
            "details", "prev_hash", "hash",
        )),
    )  # fmt: skip
    prev = GENESIS
    for row in conn.execute(sa.select(log).order_by(log.c.id)).all():
        value = entry_hash(
            prev,
            at=at_text(row.at),
            actor=row.actor,
            role=row.role,
            party=None,
            action=row.action,
            object_type=row.object_type,
            object_id=row.object_id,
            details=row.details,
        )
        conn.execute(sa.update(log).where(log.c.id == row.id).values(prev_hash=prev, hash=value))
        prev = value
    op.bulk_insert(head, [{"id": 1, "hash": prev}])


def downgrade() -> None:
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_index("ix_audit_log_party")
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("party")
