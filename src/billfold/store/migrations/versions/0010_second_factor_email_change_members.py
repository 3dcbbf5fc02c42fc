"""people: a TOTP second factor, email changes and provider members

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 15:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("logins") as batch:
        batch.add_column(sa.Column("totp_secret_enc", sa.Text(), nullable=True))
        batch.add_column(sa.Column("totp_pending_enc", sa.Text(), nullable=True))
        batch.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("login_tokens") as batch:
        batch.add_column(sa.Column("payload_enc", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("login_tokens") as batch:
        batch.drop_column("payload_enc")
    with op.batch_alter_table("logins") as batch:
        batch.drop_column("totp_last_step")
        batch.drop_column("totp_pending_enc")
        batch.drop_column("totp_secret_enc")
