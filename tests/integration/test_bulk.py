"""The bulk insert under ingestion: only new rows go in and come back, on both backends,
and a value too long for its column is refused, never cut short."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from billfold.core.context import Context
from billfold.metering._parsing import EVENT_COLUMNS
from billfold.store.bulk import db_datetime, insert_new_returning
from billfold.store.tables import usage_events

COLUMNS = EVENT_COLUMNS
AT = datetime(2026, 11, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _rows(conn: object, ids: list[str], provider: str = "prv_1") -> list[tuple[object, ...]]:
    stamp = db_datetime(conn, AT)  # type: ignore[arg-type]
    props = '{"k": "\\u00e9 \\" , {} NULL"}'
    return [
        (provider, i, "usr_1", "svc_1", "mtr_1", stamp, "1.5", props, stamp, stamp) for i in ids
    ]


def _insert(conn: object, rows: list[tuple[object, ...]]) -> list[tuple[str, str]]:
    return [
        (p, e)
        for p, e in insert_new_returning(
            conn,  # type: ignore[arg-type]
            usage_events,
            COLUMNS,
            rows,
            conflict=("provider_id", "event_id"),
            returning=("provider_id", "event_id"),
        )
    ]


def test_only_new_rows_are_inserted_and_returned_exactly(ctx: Context) -> None:
    with ctx.db.unit_of_work() as uow:
        first = _insert(uow.conn, _rows(uow.conn, ["a", "b", "NULL", 'q"uo,te{}']))
        again = _insert(uow.conn, _rows(uow.conn, ["b", "c", "a", "NULL"]))
        uow.commit()
    assert sorted(first) == sorted(("prv_1", i) for i in ["a", "b", "NULL", 'q"uo,te{}'])
    assert again == [("prv_1", "c")]
    with ctx.db.unit_of_work() as uow:
        stored = uow.conn.execute(
            select(usage_events).where(usage_events.c.event_id == 'q"uo,te{}')
        ).one()
        count = uow.conn.execute(select(func.count()).select_from(usage_events)).scalar()
    # Every value comes back as it was sent: text with quotes, braces and the word NULL,
    # the exact decimal text, the instant to the microsecond.
    assert stored.value == "1.5"
    assert stored.properties == '{"k": "\\u00e9 \\" , {} NULL"}'
    assert stored.occurred_at == AT
    assert count == 5


def test_a_value_too_long_for_its_column_is_refused_not_cut(ctx: Context) -> None:
    if ctx.db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite keeps text of any length")
    with ctx.db.unit_of_work() as uow, pytest.raises(DBAPIError) as raised:
        _insert(uow.conn, _rows(uow.conn, ["x"], provider="p" * 41))
    # Raised as SQLAlchemy raises it, with the driver's error inside, as callers expect.
    assert "too long" in str(raised.value.orig)
    with ctx.db.unit_of_work() as uow:
        assert uow.conn.execute(select(func.count()).select_from(usage_events)).scalar() == 0


def test_the_same_key_twice_in_one_batch_is_stored_once(ctx: Context) -> None:
    with ctx.db.unit_of_work() as uow:
        assert _insert(uow.conn, _rows(uow.conn, ["same", "same"])) == [("prv_1", "same")]
        uow.commit()
