"""Fixtures: real SQLite files and the real PostgreSQL server, a real HTTP server.

Each test gets a database of its own: a copy of a migrated SQLite file, or a PostgreSQL
database created from a migrated template (fast, and dropped afterwards). When CI=true
the PostgreSQL tests must run: an unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn

from billfold.clock import TestClock
from billfold.config import Settings
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from billfold.crypto import Cipher
from billfold.store.db import Database, sqlite_url
from billfold.store.migrate import upgrade

PG_ADMIN_DSN = os.environ.get("BILLFOLD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_SECRET = base64.urlsafe_b64encode(b"t" * 32).decode()
START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3):
            return None
    except Exception as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


_PG_PROBLEM = _pg_reachable()


def pytest_sessionstart(session: pytest.Session) -> None:
    from billfold.logging import configure

    configure("WARNING")
    if IN_CI and _PG_PROBLEM is not None:
        pytest.exit(
            f"CI=true but PostgreSQL at {PG_ADMIN_DSN} is unreachable: {_PG_PROBLEM}", returncode=3
        )


def _pg_url(database: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def _drop_pg(name: str) -> None:
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(sqlite_url(path))
    upgrade(db.engine)
    # Closing the last connection checkpoints the WAL into the file, so a copy is complete.
    db.dispose()
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    if _PG_PROBLEM is not None:
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {_PG_PROBLEM}")
    name = f"billfold_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    db = Database(_pg_url(name))
    upgrade(db.engine)
    db.dispose()
    yield name
    _drop_pg(name)


def _fresh_database(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "billfold.db"
        shutil.copyfile(template, path)
        yield sqlite_url(path)
        return
    template_name: str = request.getfixturevalue("pg_template")
    name = f"billfold_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    try:
        yield _pg_url(name)
    finally:
        _drop_pg(name)


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[str]:
    yield from _fresh_database(request, backend, tmp_path)


@pytest.fixture
def pg_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _fresh_database(request, "postgres", tmp_path)


@pytest.fixture
def sqlite_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _fresh_database(request, "sqlite", tmp_path)


def make_context(url: str, home: Path, clock: TestClock | None = None) -> Context:
    # The tests' webhook receivers listen on loopback, which production refuses.
    settings = Settings(
        home=home,
        database_url=url,
        secret_key=TEST_SECRET,
        pool_size=40,
        webhook_allow_private=True,
        # Argon2 at full cost would spend seconds of the suite on sign-ups and logins.
        password_hash_profile="cheapest",
    )
    return Context(
        db=Database(url, pool_size=40),
        cipher=Cipher(base64.urlsafe_b64decode(TEST_SECRET)),
        settings=settings,
        clock=clock or TestClock(START),
    )


@pytest.fixture
def clock() -> TestClock:
    return TestClock(START)


@pytest.fixture
def ctx(database_url: str, tmp_path: Path, clock: TestClock) -> Iterator[Context]:
    context = make_context(database_url, tmp_path, clock)
    yield context
    context.db.dispose()


@pytest.fixture
def pg_ctx(pg_database_url: str, tmp_path: Path, clock: TestClock) -> Iterator[Context]:
    context = make_context(pg_database_url, tmp_path, clock)
    yield context
    context.db.dispose()


@pytest.fixture
def sqlite_ctx(sqlite_database_url: str, tmp_path: Path, clock: TestClock) -> Iterator[Context]:
    context = make_context(sqlite_database_url, tmp_path, clock)
    yield context
    context.db.dispose()


# --- a real HTTP server ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """billfold's app served by uvicorn on a loopback port, in a thread."""

    def __init__(self, ctx: Context) -> None:
        from billfold.api.app import create_app

        self.ctx = ctx
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(ctx), host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def server(ctx: Context) -> Iterator[LiveServer]:
    with LiveServer(ctx) as live:
        yield live


@pytest.fixture
def admin_key(ctx: Context) -> str:
    return ctx.run(create_key, SYSTEM, role=Role.ADMIN, name="test admin")[1]


@pytest.fixture
def admin(server: LiveServer, admin_key: str) -> Iterator[httpx.Client]:
    with server.client(admin_key) as client:
        yield client
