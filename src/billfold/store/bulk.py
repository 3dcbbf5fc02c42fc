"""Bulk inserts straight to the driver's executemany, for the ledger's hot path.

SQLAlchemy's per-row parameter processing costs more than SQLite's own insert, so the
ledger hands plain tuples to the driver. The one type that needs care is UTCDateTime:
on SQLite it is written in exactly the text form SQLAlchemy itself writes and reads.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def _placeholder(connection: Connection) -> str:
    return "?" if connection.dialect.paramstyle == "qmark" else "%s"


def db_datetime(connection: Connection, value: datetime) -> Any:
    """A datetime as the driver should receive it for a UTCDateTime column."""
    assert value.tzinfo is not None
    if connection.dialect.name == "sqlite":
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return value


def insert_rows(
    connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """INSERTs `rows` (tuples in `columns` order) with one executemany."""
    if not rows:
        return
    mark = _placeholder(connection)
    # Table and column names come from the schema in code, never from input.
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608
        f"VALUES ({', '.join(mark for _ in columns)})"
    )
    connection.exec_driver_sql(sql, list(rows))


def update_rows(
    connection: Connection,
    table: Table,
    columns: Sequence[str],
    key: str,
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """UPDATEs `columns` of the rows whose `key` is each tuple's last value (executemany)."""
    if not rows:
        return
    mark = _placeholder(connection)
    sets = ", ".join(f"{column} = {mark}" for column in columns)
    sql = f"UPDATE {table.name} SET {sets} WHERE {key} = {mark}"  # noqa: S608
    connection.exec_driver_sql(sql, list(rows))


def insert_new_returning(
    connection: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    conflict: Sequence[str],
    returning: Sequence[str],
) -> list[tuple[Any, ...]]:
    """INSERTs the rows that do not clash on `conflict` and returns `returning` of those.

    One multi-row statement (SQLite 3.35+ and PostgreSQL both take ON CONFLICT DO NOTHING
    RETURNING), so deduplication costs one round trip however many rows there are.
    """
    if not rows:
        return []
    mark = _placeholder(connection)
    row_marks = f"({', '.join(mark for _ in columns)})"
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608
        f"VALUES {', '.join(row_marks for _ in rows)} "
        f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING "
        f"RETURNING {', '.join(returning)}"
    )
    params = tuple(itertools.chain.from_iterable(rows))
    return [tuple(row) for row in connection.exec_driver_sql(sql, params).all()]


def upsert(
    connection: Connection,
    table: Table,
    key_columns: Sequence[str],
    rows: Sequence[dict[str, Any]],
) -> None:
    """INSERTs `rows`, or where a row with the same key exists, sets its other columns to
    the row's values: INSERT ... ON CONFLICT (key) DO UPDATE, on SQLite and PostgreSQL."""
    if not rows:
        return
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table)
    changed = [name for name in rows[0] if name not in key_columns]
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=list(key_columns),
            set_={name: statement.excluded[name] for name in changed},
        ),
        list(rows),
    )
