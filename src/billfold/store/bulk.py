"""Bulk inserts straight to the driver's executemany, for the ledger's hot path.

SQLAlchemy's per-row parameter processing costs more than SQLite's own insert, so the
ledger hands plain tuples to the driver. The one type that needs care is UTCDateTime:
on SQLite it is written in exactly the text form SQLAlchemy itself writes and reads.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, String, Table, exc
from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")


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
    if connection.dialect.name == "postgresql":
        # One statement of one array per column (DECISIONS 103), not a pipeline of rows.
        driver_execute(
            connection, unnest_insert(connection, table, tuple(columns)), columns_of(rows)
        )
        return
    # Table and column names come from the schema in code, never from input.
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608
        f"VALUES ({', '.join('?' for _ in columns)})"
    )
    driver_execute_many(connection, sql, rows)


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
    if connection.dialect.name == "postgresql":
        # One statement: UPDATE ... FROM unnest(arrays), each row's key once.
        assert len({row[-1] for row in rows}) == len(rows), "a key may be updated once"
        names = (*columns, key)
        dialect = connection.dialect
        arrays = ", ".join(f"%b::{array_element(table, n, dialect)}[]" for n in names)
        sets = ", ".join(f"{column} = v.{column}" for column in columns)
        sql = (
            f"UPDATE {table.name} SET {sets} "  # noqa: S608
            f"FROM unnest({arrays}) AS v({', '.join(names)}) WHERE {table.name}.{key} = v.{key}"
        )
        driver_execute(connection, sql, columns_of(rows))
        return
    sets = ", ".join(f"{column} = ?" for column in columns)
    sql = f"UPDATE {table.name} SET {sets} WHERE {key} = ?"  # noqa: S608
    driver_execute_many(connection, sql, rows)


def insert_new_returning(
    connection: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    conflict: Sequence[str],
    returning: Sequence[str],
) -> list[Any]:
    """INSERTs the rows that do not clash on `conflict` and returns `returning` of those.

    One statement (SQLite 3.35+ and PostgreSQL both take ON CONFLICT DO NOTHING
    RETURNING), so deduplication costs one round trip however many rows there are. On
    SQLite the rows are one multi-row VALUES; on PostgreSQL one array per column, spread
    by unnest(): a statement of a few placeholders, which psycopg parses once and the
    server prepares once, where thousands of placeholders cost more to parse (in Python,
    on every call) than the insert itself.
    """
    if not rows:
        return []
    tail = f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING RETURNING {', '.join(returning)}"
    if connection.dialect.name == "postgresql":
        sql = unnest_insert(connection, table, tuple(columns)) + " " + tail
        params = columns_of(rows)
    else:
        row_marks = f"({', '.join('?' for _ in columns)})"
        sql = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608
            f"VALUES {', '.join(row_marks for _ in rows)} {tail}"
        )
        params = tuple(itertools.chain.from_iterable(rows))
    # Straight to the driver's cursor: SQLAlchemy's Result would build a Row for each of
    # thousands of returned keys, which costs more than the insert.
    return driver_execute(connection, sql, params, fetch=True)


def columns_of(rows: Sequence[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """The rows' values column by column, one list each (for unnest)."""
    return tuple(list(column) for column in zip(*rows, strict=True))


def driver_execute_many(connection: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Runs `sql` once for each of `rows` on the driver's own cursor (its executemany), as
    `driver_execute` runs one: SQLAlchemy's execution context costs more per statement
    than SQLite's own insert of a row."""
    if len(rows) == 1:
        driver_execute(connection, sql, rows[0])
        return
    on_driver_cursor(connection, sql, lambda cursor: cursor.executemany(sql, rows))


def driver_execute(
    connection: Connection, sql: str, params: Sequence[Any], *, fetch: bool = False
) -> list[Any]:
    """Runs `sql` on the driver's own cursor, inside the connection's transaction
    (`on_driver_cursor`); with `fetch`, its rows."""

    def run(cursor: Any) -> list[Any]:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if fetch else []

    return on_driver_cursor(connection, sql, run)


def on_driver_cursor(connection: Connection, sql: str, run: Callable[[Any], T]) -> T:
    """`run(cursor)` on the driver's own cursor, inside the connection's transaction.

    The transaction is begun through SQLAlchemy first (as its first statement would), so
    that the unit of work commits or rolls back this statement with the rest. A driver
    error is raised as SQLAlchemy raises it (IntegrityError, OperationalError, with the
    driver's error as .orig), so that retries on deadlocks and refusals see what they
    expect. `sql` names the statement in that error.
    """
    if not connection.in_transaction():
        connection.begin()
    dialect = connection.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    raw = connection.connection
    cursor = raw.cursor()
    try:
        return run(cursor)
    except dbapi_error as error:
        # A lost connection is forgotten, with the pool's others, as SQLAlchemy forgets
        # one that fails under it: the next unit of work gets a live one.
        lost = dialect.is_disconnect(error, raw.dbapi_connection, cursor)
        if lost:
            connection.engine.pool._invalidate(raw, error)  # What SQLAlchemy itself calls.
            connection.invalidate(error)
        raise exc.DBAPIError.instance(
            sql, None, error, dbapi_error, connection_invalidated=lost, dialect=dialect
        ) from error
    finally:
        if not connection.invalidated:
            cursor.close()


_UNNEST: dict[tuple[str, tuple[str, ...]], str] = {}


def unnest_insert(connection: Connection, table: Table, columns: tuple[str, ...]) -> str:
    """INSERT INTO table (columns) SELECT * FROM unnest(%b::type[], ...), built once."""
    key = (table.name, columns)
    sql = _UNNEST.get(key)
    if sql is None:
        dialect = connection.dialect
        # %b: each array travels in the binary format (the text one quotes every element).
        arrays = ", ".join(f"%b::{array_element(table, name, dialect)}[]" for name in columns)
        sql = _UNNEST[key] = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608
            f"SELECT * FROM unnest({arrays})"
        )
    return sql


def array_element(table: Table, name: str, dialect: Any) -> str:
    """The column's type for its array of values: text for every string type, since an
    explicit cast to varchar(n) would cut a longer value short where the column's own
    (assignment) cast refuses it."""
    kind = table.c[name].type
    if isinstance(kind, String):
        return "text"
    return str(kind.compile(dialect=dialect))


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
