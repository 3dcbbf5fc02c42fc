"""What every service function needs: the database, the clock and the cipher."""

from __future__ import annotations

from dataclasses import dataclass, field

from billfold.clock import Clock, SystemClock, TestClock
from billfold.config import Settings
from billfold.crypto import Cipher, load_or_create_secret
from billfold.services.ledger import AccountDirectory
from billfold.store.db import Database
from billfold.store.migrate import upgrade


@dataclass
class Context:
    db: Database
    cipher: Cipher
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    accounts: AccountDirectory = field(default_factory=AccountDirectory)
    # Metering's group committer, made on first use (billfold.services.metering).
    ingest_committer: object = None


def build_context(
    settings: Settings | None = None, *, clock: Clock | None = None, migrate: bool = True
) -> Context:
    """Opens the configured database (creating or upgrading its schema) and the key."""
    settings = settings or Settings()
    db = Database(settings.resolved_database_url(), pool_size=settings.pool_size)
    if migrate:
        upgrade(db.engine)
    cipher = Cipher(load_or_create_secret(settings.secret_key, settings.home))
    if clock is None:
        # BILLFOLD_TEST_CLOCK=1: time stands still until an admin moves it (tests, demos).
        clock = TestClock() if settings.test_clock else SystemClock()
    return Context(db=db, cipher=cipher, settings=settings, clock=clock)
