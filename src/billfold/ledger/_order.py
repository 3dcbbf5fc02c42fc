"""The ledger's lock order: journal chains by number, then accounts (and their parts) by
id, then holds.

The journal is one hash chain per shard of users (docs/DECISIONS.md, 114). A writer
locks the head of every chain its transfers go to, lowest first, before any account;
hot accounts are parted by chain, so writers of different chains share no lock at all.

One transaction of the group commit holds many requests, and a later one may need a
chain or an account the earlier ones did not lock. Waiting for it there, while holding
the earlier locks out of order, could deadlock with another process; so such a lock is
taken with NOWAIT, and if another transaction holds it the request's savepoint is undone
and the request runs again in a transaction of its own (billfold.core.group_commit). A
transaction of its own waits, in order, as any single writer does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, func, select

from billfold.domain.ledger import chain_of
from billfold.store.bulk import driver_execute
from billfold.store.db import UnitOfWork
from billfold.store.ledger_tables import ledger_chains

_CHAINS = "SELECT chain, seq, hash FROM ledger_chains WHERE chain {0} ORDER BY chain"

# How many chains each database's ledger has: fixed when the ledger was made.
_COUNTS: WeakKeyDictionary[Engine, int] = WeakKeyDictionary()


def chain_count(uow: UnitOfWork) -> int:
    """How many chains the journal has (its `ledger_chains` rows; read once per database)."""
    known = _COUNTS.get(uow.engine)
    if known is None:
        known = int(uow.conn.execute(select(func.count()).select_from(ledger_chains)).scalar_one())
        _COUNTS[uow.engine] = known
    return known


def chain_for(uow: UnitOfWork, user_id: str | None, provider_id: str | None = None) -> int:
    """The chain of a transfer or hold of this user (else provider; else the platform)."""
    return chain_of(user_id, provider_id, chain_count(uow))


def lock_chains(
    uow: UnitOfWork, chains: Iterable[int], *, nowait: bool | None = None
) -> dict[int, tuple[int, str]]:
    """Locks the heads of these chains, lowest first, and returns each one's (seq, hash).

    On SQLite the writer holds the whole database already and this only reads them."""
    wanted = sorted(set(chains))
    if nowait is None:
        nowait = uow.grouped and uow.ledger_locked
    rows = select_in(uow, _CHAINS, [wanted], lock=True, nowait=nowait)
    uow.ledger_locked = True
    if len(rows) < len(wanted):  # Only an edited database: `billfold verify` says so too.
        missing = sorted(set(wanted) - {int(row[0]) for row in rows})
        raise RuntimeError(f"the journal has no chain {missing}: run billfold verify")
    return {int(row[0]): (int(row[1]), str(row[2])) for row in rows}


_SQL: dict[tuple[str, str, tuple[int, ...], bool, bool], str] = {}


def select_in(
    uow: UnitOfWork,
    sql: str,
    lists: Sequence[Sequence[object]],
    *,
    lock: bool = False,
    nowait: bool = False,
) -> list[tuple[Any, ...]]:
    """Runs `sql`, whose `{0}`, `{1}`, ... each stand for "IN this list", on the driver's
    own cursor: the hot path's locking reads, without SQLAlchemy rendering an expanding
    IN on every call (DECISIONS 102). On PostgreSQL a list is one array (`= ANY`), and
    `lock` adds FOR UPDATE (NOWAIT); SQLite's writer holds the database already."""
    if any(not values for values in lists):
        return []
    postgres = uow.dialect == "postgresql"
    key = (uow.dialect, sql, () if postgres else tuple(len(v) for v in lists), lock, nowait)
    text = _SQL.get(key)
    if text is None:
        if postgres:
            text = sql.format(*("= ANY(%s)" for _ in lists))
            if lock:
                text += " FOR UPDATE NOWAIT" if nowait else " FOR UPDATE"
        else:
            text = sql.format(*(f"IN ({', '.join(['?'] * len(v))})" for v in lists))
        _SQL[key] = text
    if postgres:
        params: list[object] = [list(v) for v in lists]
    else:
        params = [item for values in lists for item in values]
    return driver_execute(uow.conn, text, params, fetch=True)


def lock_journal(uow: UnitOfWork, user_id: str | None, provider_id: str | None = None) -> bool:
    """Takes the lock of the chain of this user's (or provider's) transfers before any
    account's. Every writer of the ledger does, holds included: a transaction of the group
    commit may make a hold and then a transfer, and one that locked an account before its
    chain would deadlock with a transfer elsewhere. Returns whether the account locks that
    follow are to be taken without waiting."""
    nowait = uow.grouped and uow.ledger_locked
    lock_chains(uow, [chain_for(uow, user_id, provider_id)], nowait=nowait)
    return nowait


def chain_heads(uow: UnitOfWork) -> dict[int, int]:
    """How long each chain of the journal is now (its last place)."""
    return {
        int(row.chain): int(row.seq)
        for row in uow.conn.execute(select(ledger_chains.c.chain, ledger_chains.c.seq))
    }
