"""Accounts: found or made once (ids cached per database), balances, floors, and the
accounts a charge moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from billfold.domain.errors import (
    NotFound,
)
from billfold.domain.ledger import (
    PLATFORM_OWNER_ID,
    AccountKind,
    Balance,
    ChargeAccounts,
    OwnerType,
)
from billfold.store.db import UnitOfWork
from billfold.store.ledger_tables import account_parts, accounts, holds, postings, transfers

# --- accounts -------------------------------------------------------------------------


# Account ids never change, so they are cached per database (engine) once committed.
_ACCOUNT_IDS: WeakKeyDictionary[Engine, dict[tuple[str, str, str, str], int]] = WeakKeyDictionary()


def ensure_account(
    uow: UnitOfWork,
    owner_type: OwnerType,
    owner_id: str,
    kind: AccountKind,
    currency: str,
    *,
    now: datetime,
    floor: int | None = None,
) -> int:
    """The account's id, creating it (with `floor`) if it does not exist yet."""
    assert floor is None or not is_parted(owner_type), "a parted account has no floor"
    known = _ACCOUNT_IDS.setdefault(uow.engine, {})
    key = (str(owner_type), owner_id, str(kind), currency)
    cached = known.get(key)
    if cached is not None:
        return cached
    values = {
        "owner_type": key[0],
        "owner_id": owner_id,
        "kind": key[2],
        "currency": currency,
        "posted": 0,
        "held": 0,
        "floor": floor,
        "created_at": now,
        "parted": int(is_parted(owner_type)),
    }
    insert = postgresql.insert if uow.dialect == "postgresql" else sqlite.insert
    uow.conn.execute(insert(accounts).values(values).on_conflict_do_nothing())
    account_id = int(
        uow.conn.execute(
            select(accounts.c.id).where(
                accounts.c.owner_type == key[0],
                accounts.c.owner_id == owner_id,
                accounts.c.kind == key[2],
                accounts.c.currency == currency,
            )
        ).scalar_one()
    )
    # Another transaction may use the id only once this one has committed the row:
    # until then it is invisible to them, and a rollback would unmake it.
    uow.after_commit(lambda: known.__setitem__(key, account_id))
    return account_id


def is_parted(owner_type: OwnerType) -> bool:
    """Whether accounts of this owner are parted by journal chain: the platform's and the
    providers' accounts, which every user's charges move (docs/DECISIONS.md, 114)."""
    return owner_type in (OwnerType.PLATFORM, OwnerType.PROVIDER)


def find_account(
    uow: UnitOfWork, owner_type: OwnerType, owner_id: str, kind: AccountKind, currency: str
) -> int | None:
    """The account's id, or None if it was never made (ids are cached once committed)."""
    cached = _ACCOUNT_IDS.get(uow.engine, {}).get((str(owner_type), owner_id, str(kind), currency))
    if cached is not None:
        return cached
    return uow.conn.execute(
        select(accounts.c.id).where(
            accounts.c.owner_type == str(owner_type),
            accounts.c.owner_id == owner_id,
            accounts.c.kind == str(kind),
            accounts.c.currency == currency,
        )
    ).scalar_one_or_none()


def balance(uow: UnitOfWork, account_id: int, *, as_of: datetime | None = None) -> Balance:
    """The account's balance now (cached) or as of a past instant (from the journal)."""
    if as_of is None:
        found = balances(uow, [account_id])
        if account_id not in found:
            raise NotFound("no such account", code="account_not_found")
        return found[account_id]
    row = uow.conn.execute(
        select(accounts.c.floor).where(accounts.c.id == account_id)
    ).one_or_none()
    if row is None:
        raise NotFound("no such account", code="account_not_found")
    posted = uow.conn.execute(
        select(func.coalesce(func.sum(postings.c.amount), 0))
        .select_from(postings.join(transfers, postings.c.transfer_seq == transfers.c.seq))
        .where(postings.c.account_id == account_id, transfers.c.posted_at <= as_of)
    ).scalar_one()
    held = uow.conn.execute(
        select(func.coalesce(func.sum(holds.c.amount), 0)).where(
            holds.c.account_id == account_id,
            holds.c.created_at <= as_of,
            (holds.c.closed_at.is_(None)) | (holds.c.closed_at > as_of),
        )
    ).scalar_one()
    return Balance(int(posted), int(held), row.floor)


def balances(uow: UnitOfWork, account_ids: Sequence[int]) -> dict[int, Balance]:
    """Several accounts' cached balances, in one query (a parted account's: its parts')."""
    if not account_ids:
        return {}
    rows = uow.conn.execute(
        _BALANCES.where(accounts.c.id.in_(list(account_ids))).group_by(
            accounts.c.id, accounts.c.posted, accounts.c.held, accounts.c.floor
        )
    ).all()
    return {int(r.id): Balance(int(r.posted + r.parts), r.held, r.floor) for r in rows}


_BALANCES = select(
    accounts.c.id,
    accounts.c.posted,
    accounts.c.held,
    accounts.c.floor,
    func.coalesce(func.sum(account_parts.c.posted), 0).label("parts"),
).select_from(accounts.outerjoin(account_parts, account_parts.c.account_id == accounts.c.id))


def set_floor(uow: UnitOfWork, account_id: int, floor: int | None) -> None:
    """Changes an account's floor; a stricter floor does not undo what is already spent."""
    uow.conn.execute(update(accounts).where(accounts.c.id == account_id).values(floor=floor))


def charge_accounts(
    uow: UnitOfWork,
    user_id: str,
    currency: str,
    *,
    prepaid: bool,
    provider_id: str | None,
    now: datetime,
    taxes: bool = False,
    overflow: bool = False,
    sources: tuple[int, ...] = (),
    credit_limit: int | None = None,
) -> ChargeAccounts:
    """The accounts a charge to the user moves: a prepaid user pays from the wallet (and,
    with `overflow`, what it cannot cover becomes debt on the receivable), a postpaid user
    accrues it on the receivable; the provider earns, the platform takes its revenue.

    `overflow` marks usage that already happened: a postpaid user owes it in full. A
    charge decided now (`credit_limit` given) may not take what a postpaid user owes
    past the credit limit."""
    wallet = ensure_account(uow, OwnerType.USER, user_id, AccountKind.WALLET, currency, now=now)
    receivable = ensure_account(
        uow, OwnerType.USER, user_id, AccountKind.RECEIVABLE, currency, now=now
    )
    platform = PLATFORM_OWNER_ID
    return ChargeAccounts(
        payer=wallet if prepaid else receivable,
        revenue=ensure_account(
            uow, OwnerType.PLATFORM, platform, AccountKind.PLATFORM_REVENUE, currency, now=now
        ),
        earnings=None
        if provider_id is None
        else ensure_account(
            uow, OwnerType.PROVIDER, provider_id, AccountKind.PROVIDER_EARNINGS, currency, now=now
        ),
        taxes=ensure_account(
            uow, OwnerType.PLATFORM, platform, AccountKind.TAXES, currency, now=now
        )
        if taxes
        else None,
        overflow=receivable if overflow and prepaid else None,
        happened=overflow and not prepaid,
        payer_limit=None if prepaid or credit_limit is None else -credit_limit,
        sources=sources,
    )
