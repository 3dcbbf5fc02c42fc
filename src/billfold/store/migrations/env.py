"""Alembic environment: runs migrations on the engine that billfold hands over."""

from alembic import context
from sqlalchemy import text

from billfold.store import ledger_tables  # noqa: F401  (registers the ledger's tables)
from billfold.store.tables import metadata

# An arbitrary constant: the PostgreSQL advisory lock that serialises concurrent upgrades.
MIGRATION_LOCK_ID = 7_304_221_001


def run_migrations_online() -> None:
    engine = context.config.attributes["engine"]
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID}
                )
                connection.commit()


run_migrations_online()
