"""What the benchmarks share: a throw-away database on either backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from billfold.store.db import sqlite_url

PG_ADMIN = os.environ.get("BILLFOLD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def database(backend: str, folder: Path) -> Iterator[str]:
    """The URL of a new, empty database: an SQLite file in `folder`, or a PostgreSQL
    database that is dropped afterwards."""
    if backend == "sqlite":
        yield sqlite_url(folder / "bench.db")
        return
    name = f"billfold_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
