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

from collections.abc import Iterable
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, bindparam, func, select

from billfold.domain.ledger import chain_of
from billfold.store.db import UnitOfWork
from billfold.store.ledger_tables import ledger_chains

_CHAINS_FOR_UPDATE = (
    select(ledger_chains.c.chain, ledger_chains.c.seq, ledger_chains.c.hash)
    .where(ledger_chains.c.chain.in_(bindparam("chains", expanding=True)))
    .order_by(ledger_chains.c.chain)
)
_LOCK = _CHAINS_FOR_UPDATE.with_for_update()
_LOCK_NOWAIT = _CHAINS_FOR_UPDATE.with_for_update(nowait=True)

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
    rows = uow.conn.execute(_LOCK_NOWAIT if nowait else _LOCK, {"chains": wanted}).all()
    uow.ledger_locked = True
    if len(rows) < len(wanted):  # Only an edited database: `billfold verify` says so too.
        missing = sorted(set(wanted) - {int(row.chain) for row in rows})
        raise RuntimeError(f"the journal has no chain {missing}: run billfold verify")
    return {int(row.chain): (int(row.seq), str(row.hash)) for row in rows}


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
