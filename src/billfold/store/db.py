"""Engines and the unit of work.

One unit of work per request or job (cosmicpython): it rolls back unless the caller
commits, and no helper commits on its own.

SQLite runs in WAL mode with `synchronous=FULL`, foreign keys on, and every transaction
opened with BEGIN IMMEDIATE: a writer takes the write lock at the start, so two writers
never deadlock upgrading read locks, and a busy database waits (busy_timeout) instead of
failing. PostgreSQL runs at READ COMMITTED; the ledger takes row locks explicitly.
"""

from __future__ import annotations

import fcntl
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

from billfold.store.bulk import driver_execute

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY_OPTION = "billfold_read_only"


def sqlite_url(path: Path) -> str:
    return f"sqlite+pysqlite:///{path}"


def make_engine(url: str, *, pool_size: int = 20) -> Engine:
    """An engine for `url` set up the way billfold needs it on that database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            # No server-side prepared statements. psycopg prepares a statement after five
            # runs, and PostgreSQL may then keep one generic plan for it, chosen before the
            # values are known: for the bill run's IN lists over tables that grow as it
            # runs, that plan scans whole tables and the run turned quadratic
            # (docs/DECISIONS.md, 39). It also keeps billfold usable behind PgBouncer.
            connect_args={"prepare_threshold": None},
        )
        event.listen(engine, "connect", _stamp)
        event.listen(engine, "checkin", _stamp)
        event.listen(engine, "checkout", _ping_if_idle)
        return engine
    raise ValueError(f"billfold runs on SQLite or PostgreSQL, not {parsed.get_backend_name()}")


PING_AFTER_IDLE_S = 1.0
"""A pooled PostgreSQL connection idle this long is pinged before it is lent again."""


def _stamp(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """SQLAlchemy's `pool_pre_ping`, for connections that sat idle: a connection given
    back less than a second ago is lent at once, where a ping on every loan cost every
    transaction a round trip (docs/DECISIONS.md, 130). One that fails its ping is
    replaced (the pool tries again with a new connection)."""
    since = record.info.get("idle_since")
    if since is not None and time.monotonic() - since < PING_AFTER_IDLE_S:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(";")
        finally:
            cursor.close()
    except Exception as error:  # The server went away: that connection is dead.
        raise exc.DisconnectionError(str(error)) from error


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module so that BEGIN is ours.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # Readers do not need the write lock; WAL lets them run beside a writer.
    if connection.get_execution_options().get(READ_ONLY_OPTION):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """Where billfold keeps its data: an engine and units of work over it."""

    def __init__(self, url: str, *, pool_size: int = 20) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        # SQLite has one writer at a time, and a writer that finds the database busy
        # sleeps with a growing back-off (up to 100 ms a try), which makes latency spike.
        # Writers queue on a lock instead and take their turn at once: threads of this
        # process on a lock, processes (serve --workers) on an flock of a file beside it.
        self._write_lock: WriteLock | None = None
        if self.dialect == "sqlite":
            database = make_url(url).database or ""
            lock_file = Path(database + ".writelock") if database not in ("", ":memory:") else None
            self._write_lock = WriteLock(lock_file)

    def unit_of_work(self, *, read_only: bool = False) -> UnitOfWork:
        return UnitOfWork(
            self.engine, read_only=read_only, write_lock=None if read_only else self._write_lock
        )

    def write_lock(self) -> WriteLock | None:
        """The lock writers queue on (SQLite), or None where the database orders them."""
        return self._write_lock

    def dispose(self) -> None:
        self.engine.dispose()
        if self._write_lock is not None:
            self._write_lock.close()


class WriteLock:
    """SQLite's one writer at a time: across the threads of this process and, with a file,
    across processes (flock).

    A unit of work holds it from its start to its end. A request's unit may start in one
    thread and end in another (FastAPI runs a dependency's start and end as separate
    thread-pool calls), so this is a plain lock, which any thread may release, and not
    re-entrant: units never nest, since service functions never open their own.
    """

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a+b") if path is not None else None  # noqa: SIM115

    def acquire(self) -> None:
        if not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise TimeoutError("the database stayed busy; try again")
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._lock.release()


class UnitOfWork:
    """Database work that is rolled back on exit unless `commit()` was called.

    The transaction begins with the first statement; after `commit()` the next statement
    begins a new one. `read_only` units never take SQLite's write lock.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        read_only: bool = False,
        write_lock: WriteLock | None = None,
    ) -> None:
        self._engine = engine
        self._read_only = read_only
        self._write_lock = write_lock
        self._connection: Connection | None = None
        self._after_commit: list[Callable[[], None]] = []
        self._before_commit: dict[str, Callable[[], None]] = {}
        self.pending: dict[str, list[Any]] = {}
        """Writes gathered during the unit and made at commit (see `before_commit`)."""
        self.grouped = False
        """Whether the unit holds several requests (the group commit): then a ledger lock
        taken after the first is taken without waiting (billfold.ledger._order)."""
        self.ledger_locked = False
        """Whether the current transaction has taken ledger locks yet."""
        self._savepoints = 0

    @property
    def conn(self) -> Connection:
        assert self._connection is not None, "the unit of work is not open"
        return self._connection

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    def __enter__(self) -> Self:
        if self._write_lock is not None:
            self._write_lock.acquire()
        try:
            connection = self._engine.connect()
        except BaseException:
            if self._write_lock is not None:
                self._write_lock.release()
            raise
        if self._read_only:
            connection = connection.execution_options(**{READ_ONLY_OPTION: True})
        self._connection = connection
        return self

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Runs `callback` once the current transaction has committed (never on rollback)."""
        self._after_commit.append(callback)

    def before_commit(self, name: str, callback: Callable[[], None]) -> None:
        """Runs `callback` (once per name) just before the transaction commits, last of
        all its writes: the audit trail chains its entries there, under its head lock."""
        self._before_commit.setdefault(name, callback)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the unit that is undone alone if it raises: its writes, and what it
        gathered for the commit (pending writes, hooks, after-commit callbacks). The group
        commit runs each request of a group in one of these."""
        pending = {name: len(items) for name, items in self.pending.items()}
        hooks = set(self._before_commit)
        callbacks = len(self._after_commit)
        # Said to the driver: SQLAlchemy's begin_nested and its release cost about 100 µs
        # a request in the group commit, for two statements of microseconds.
        # On PostgreSQL never released: a savepoint left standing costs nothing until the
        # transaction ends (a part's writes and locks stay to the end either way), and a
        # RELEASE is one more round trip per request (docs/DECISIONS.md, 133). Its name is
        # the unit's own, so a later ROLLBACK TO finds this one. SQLite's RELEASE costs
        # microseconds and keeps its statement journal short, so there it is said.
        release = self.dialect != "postgresql"
        self._savepoints += 1
        name = f"bf_part_{self._savepoints}"
        self._driver_statement(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._driver_statement(f"ROLLBACK TO SAVEPOINT {name}")
            if release:
                self._driver_statement(f"RELEASE SAVEPOINT {name}")
            for name in list(self.pending):
                if name in pending:
                    del self.pending[name][pending[name] :]
                else:
                    del self.pending[name]
            for name in list(self._before_commit):
                if name not in hooks:
                    del self._before_commit[name]
            del self._after_commit[callbacks:]
            raise
        if release:
            self._driver_statement(f"RELEASE SAVEPOINT {name}")

    def _driver_statement(self, sql: str) -> None:
        driver_execute(self.conn, sql, ())

    def commit(self) -> None:
        assert not self._read_only, "a read-only unit of work cannot commit"
        hooks, self._before_commit = self._before_commit, {}
        for hook in hooks.values():
            hook()
        self.pending.clear()
        self.conn.commit()
        self.ledger_locked = False
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def rollback(self) -> None:
        self.conn.rollback()
        self.ledger_locked = False
        self._after_commit.clear()
        self._before_commit.clear()
        self.pending.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Rolls back what was not committed and gives the connection and lock back; once."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            try:
                if connection.in_transaction():
                    connection.rollback()
            finally:
                connection.close()
        finally:
            if self._write_lock is not None:
                self._write_lock.release()
