"""Upgrading an installation chains the audit entries it already had."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from billfold.core import audit
from billfold.core.access import SYSTEM
from billfold.store.db import Database, sqlite_url
from billfold.store.migrate import upgrade
from tests.conftest import BACKENDS, PG_ADMIN_DSN

START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(sqlite_url(tmp_path / "old.db"))
        yield db
        db.dispose()
        return
    if os.environ.get("CI", "").lower() != "true":
        try:
            psycopg.connect(PG_ADMIN_DSN, connect_timeout=3).close()
        except Exception as error:
            pytest.skip(f"PostgreSQL is not reachable: {error}")
    name = f"billfold_audit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    db = Database(f"{base}/{name}")
    try:
        yield db
    finally:
        db.dispose()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def test_entries_written_before_the_chain_are_chained_by_the_upgrade(
    empty_database: Database,
) -> None:
    db = empty_database
    upgrade(db.engine, "0006")
    with db.unit_of_work() as uow:
        for n in range(3):
            uow.conn.execute(
                text(
                    "INSERT INTO audit_log (at, actor, role, action, object_type, object_id, "
                    "details) VALUES (:at, 'system', 'admin', :action, 'user', :id, NULL)"
                ),
                {
                    "at": START.replace(tzinfo=None).isoformat(" ")
                    if db.dialect == "sqlite"
                    else START,
                    "action": f"user.step{n}",
                    "id": f"usr_{n}",
                },
            )
        uow.commit()
    upgrade(db.engine)
    with db.unit_of_work() as uow:
        assert audit.broken_links(uow) == []
        audit.record(
            uow,
            SYSTEM,
            "user.after",
            "user",
            "usr_9",
            at=START,
        )
        uow.commit()
    with db.unit_of_work(read_only=True) as uow:
        assert audit.broken_links(uow) == []
        assert len(audit.entries(uow)) == 4
