"""The ledger's lock order: the journal head first, then accounts by id, then holds."""

from __future__ import annotations

from sqlalchemy import select

from billfold.store.db import UnitOfWork
from billfold.store.ledger_tables import ledger_head

HEAD_FOR_UPDATE = (
    select(ledger_head.c.seq, ledger_head.c.hash).where(ledger_head.c.id == 1).with_for_update()
)


def lock_journal(uow: UnitOfWork) -> None:
    """Takes the journal head's lock before any account's (PostgreSQL; SQLite's writer
    holds the whole database already). Every writer of the ledger does, holds included:
    a transaction of the group commit may make a hold and then a transfer, and one that
    locked an account before the head would deadlock with a transfer elsewhere."""
    if uow.dialect == "postgresql":
        uow.conn.execute(HEAD_FOR_UPDATE).one()
