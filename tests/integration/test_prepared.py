"""Prepared statements of the hot path read and write exactly what SQLAlchemy does, in
the unit of work's transaction, on both backends; what they cannot run is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from billfold.core.context import Context
from billfold.store.prepared import Prepared, one_of
from billfold.store.tables import idempotency_keys as keys

AT = datetime(2026, 11, 2, 3, 4, 5, 678901, tzinfo=UTC)
ROW = {
    "principal": "p",
    "key": "k'\"; DROP TABLE users; --",
    "method": "POST",
    "path": "/v1/charges",
    "request_hash": "h" * 64,
    "state": "in_progress",
    "response_status": None,
    "response_body": "\u00e9\u4e2d NULL",
    "created_at": AT,
    "locked_until": AT,
}
BY_STATE = Prepared(
    select(keys)
    .where(keys.c.principal == bindparam("p"), one_of(keys.c.state, ("in_progress", "done")))
    .order_by(keys.c.key)
)
FINISH = Prepared(
    update(keys).where(keys.c.key == bindparam("b_key")).values(state="done", response_status=201)
)


def test_rows_come_back_as_sqlalchemy_reads_them(ctx: Context) -> None:
    with ctx.db.unit_of_work() as uow:
        uow.conn.execute(insert(keys), [ROW, {**ROW, "key": "k2", "state": "gone"}])
        prepared = BY_STATE.rows(uow.conn, {"p": "p"})
        core = uow.conn.execute(BY_STATE.statement, {"p": "p"}).all()
        assert [tuple(r) for r in prepared] == [tuple(r) for r in core]
        assert len(prepared) == 1  # The constant IN is part of the statement.
        (row,) = prepared
        assert row.key == ROW["key"] and row.response_body == ROW["response_body"]
        assert row.created_at == AT and row.created_at.tzinfo is not None
        assert row.response_status is None
        assert BY_STATE.first(uow.conn, {"p": "nobody"}) is None


def test_writes_count_their_rows_and_stand_or_fall_with_the_unit_of_work(ctx: Context) -> None:
    with ctx.db.unit_of_work() as uow:
        uow.conn.execute(insert(keys), ROW)
        uow.commit()
    with ctx.db.unit_of_work() as uow:
        assert FINISH.count(uow.conn, {"b_key": ROW["key"]}) == 1
        assert FINISH.count(uow.conn, {"b_key": "none"}) == 0
        # Not committed: the change goes with the unit of work.
    with ctx.db.unit_of_work() as uow:
        assert BY_STATE.first(uow.conn, {"p": "p"}).state == "in_progress"
        FINISH.count(uow.conn, {"b_key": ROW["key"]})
        uow.commit()
    with ctx.db.unit_of_work() as uow:
        done = BY_STATE.first(uow.conn, {"p": "p"})
        assert (done.state, done.response_status) == ("done", 201)


def test_driver_errors_are_sqlalchemys_and_missing_values_are_refused(ctx: Context) -> None:
    add = Prepared(insert(keys).values({name: bindparam(f"v_{name}") for name in ROW}))
    values = {f"v_{name}": value for name, value in ROW.items()}
    with ctx.db.unit_of_work() as uow:
        add.count(uow.conn, values)
        with pytest.raises(IntegrityError):
            add.count(uow.conn, values)
    with ctx.db.unit_of_work() as uow, pytest.raises(KeyError, match="v_key"):
        add.count(uow.conn, {k: v for k, v in values.items() if k != "v_key"})


def test_a_list_parameter_is_refused_when_compiled(ctx: Context) -> None:
    expanding = Prepared(select(keys).where(keys.c.key.in_(bindparam("ks", expanding=True))))
    constant = Prepared(select(keys).where(keys.c.key.in_(("a", "b"))))
    with ctx.db.unit_of_work() as uow:
        for statement in (expanding, constant):
            with pytest.raises(ValueError, match="expanding"):
                statement.rows(uow.conn, {"ks": ["a"]})
