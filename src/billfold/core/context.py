"""The context of a process and the unit of work of one request.

`Context` lives as long as the process: the database, the cipher, the settings and the
clock. `Work` is one transaction over it. An entry point (a route, a CLI command, a
worker step) opens it, hands it to the service functions it calls, and commits once;
service functions never open or commit one of their own (docs/DECISIONS.md, "One unit of
work per request"). What a request did is then all or nothing.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from billfold.clock import Clock, SystemClock, TestClock
from billfold.config import Settings
from billfold.core.credentials import Credentials
from billfold.crypto import Cipher, load_or_create_secret
from billfold.store.db import Database, UnitOfWork
from billfold.store.migrate import upgrade

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


@dataclass
class Context:
    db: Database
    cipher: Cipher
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    # API keys and sessions looked up lately (billfold.core.credentials).
    credentials: Credentials = field(init=False)

    # What lives as long as the context, one of each kind, made on first use (`shared`).
    _shared: dict[type, object] = field(init=False, default_factory=dict)
    _shared_lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.credentials = Credentials(self.settings.auth_cache_s)

    def shared(self, kind: type[T], make: Callable[[Context], T]) -> T:
        """The context's one `kind` (a group committer, say), made by `make` on first use."""
        with self._shared_lock:
            found = self._shared.get(kind)
            if not isinstance(found, kind):
                found = self._shared[kind] = make(self)
            return found

    def work(self, *, read_only: bool = False) -> Work:
        """A new unit of work; use it in a `with` block, and commit it once."""
        return Work(self, read_only=read_only)

    def run(self, fn: Callable[Concatenate[Work, P], R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Calls `fn` in a unit of work of its own and commits it: one entry point's
        one transaction (the CLI, workers and tests call services this way)."""
        with self.work() as work:
            result = fn(work, *args, **kwargs)
            work.commit()
        return result

    def read(
        self, fn: Callable[Concatenate[Work, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Calls `fn` in a read-only unit of work (no write lock, nothing committed)."""
        with self.work(read_only=True) as work:
            return fn(work, *args, **kwargs)


class Work(UnitOfWork):
    """One transaction, with what service functions need besides: clock, cipher, settings."""

    def __init__(self, ctx: Context, *, read_only: bool = False) -> None:
        super().__init__(
            ctx.db.engine,
            read_only=read_only,
            write_lock=None if read_only else ctx.db.write_lock(),
        )
        self.ctx = ctx
        self.clock = ctx.clock
        self.cipher = ctx.cipher
        self.settings = ctx.settings
        self.committed = False
        self.memo: dict[tuple[object, ...], Any] = {}
        """Catalog reads remembered for the transaction, which a group commit's requests
        share (a service, a plan's versions, a metric): money writes never change the
        catalog, and a savepoint's undo does not make a read untrue."""

    def credentials_changed(self) -> None:
        """An API key, session or login changed: once this commits, the process looks up
        every credential again (billfold.core.credentials)."""
        self.after_commit(self.ctx.credentials.clear)

    def commit(self) -> None:
        # Once: a second commit would mean that a service committed part of a request.
        assert not self.committed, "a unit of work commits once, at its entry point"
        super().commit()
        self.committed = True


def build_context(
    settings: Settings | None = None, *, clock: Clock | None = None, migrate: bool = True
) -> Context:
    """Opens the configured database (creating or upgrading its schema) and the key."""
    settings = settings or Settings()
    db = Database(settings.resolved_database_url(), pool_size=settings.pool_size)
    if migrate:
        upgrade(db.engine)
    previous = [base64.urlsafe_b64decode(k.encode()) for k in settings.previous_secret_keys]
    cipher = Cipher(load_or_create_secret(settings.secret_key, settings.home), previous)
    if clock is None:
        # BILLFOLD_TEST_CLOCK=1: time stands still until an admin moves it (tests, demos).
        clock = TestClock() if settings.test_clock else SystemClock()
    return Context(db=db, cipher=cipher, settings=settings, clock=clock)
