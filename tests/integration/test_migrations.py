"""Alembic creates the schema on both databases, and it matches the table definitions."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from billfold.store.db import Database
from billfold.store.migrate import current_revision, head_revision, upgrade
from billfold.store.tables import metadata


def test_migrations_reach_head_and_match_the_tables(database_url: str) -> None:
    db = Database(database_url)
    try:
        upgrade(db.engine)  # Already at head: upgrading again is a no-op.
        assert current_revision(db.engine) == head_revision(db.engine)
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), metadata)
        assert diff == [], f"the migrations and tables.py disagree: {diff}"
    finally:
        db.dispose()
