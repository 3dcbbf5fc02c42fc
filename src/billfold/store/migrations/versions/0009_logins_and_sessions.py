"""people: logins, sessions and mailed one-time tokens

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billfold.store.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

T = billfold.store.types.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "logins",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("email_enc", sa.Text(), nullable=False),
        sa.Column("email_index", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=True),
        sa.Column("provider_id", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("created_at", T(), nullable=False),
        sa.Column("verified_at", T(), nullable=True),
        sa.Column("password_changed_at", T(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logins")),
        sa.UniqueConstraint("email_index", name=op.f("uq_logins_email_index")),
    )
    op.create_index(op.f("ix_logins_user_id"), "logins", ["user_id"])
    op.create_index(op.f("ix_logins_provider_id"), "logins", ["provider_id"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("csrf_hash", sa.String(length=64), nullable=False),
        sa.Column("login_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", T(), nullable=False),
        sa.Column("expires_at", T(), nullable=False),
        sa.Column("revoked_at", T(), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["login_id"], ["logins.id"], name=op.f("fk_sessions_login_id_logins")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sessions_token_hash")),
    )
    op.create_index(op.f("ix_sessions_login_id"), "sessions", ["login_id"])
    op.create_table(
        "login_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("login_id", sa.String(length=40), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("created_at", T(), nullable=False),
        sa.Column("expires_at", T(), nullable=False),
        sa.Column("used_at", T(), nullable=True),
        sa.ForeignKeyConstraint(
            ["login_id"], ["logins.id"], name=op.f("fk_login_tokens_login_id_logins")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_login_tokens")),
    )
    op.create_index(op.f("ix_login_tokens_login_id"), "login_tokens", ["login_id"])


def downgrade() -> None:
    op.drop_table("login_tokens")
    op.drop_table("sessions")
    op.drop_table("logins")
