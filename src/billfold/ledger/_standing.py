"""A user's standing: the one answer to how much a user may still spend."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select

from billfold.core.directory import BalanceView, UserView
from billfold.domain.ledger import (
    AccountKind,
    OwnerType,
)
from billfold.domain.money import from_units, to_units
from billfold.ledger._accounts import balance, find_account
from billfold.store.db import UnitOfWork
from billfold.store.ledger_tables import accounts
from billfold.store.prepared import Prepared, one_of

# --- a user's standing ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Standing:
    """A user's money in ledger units: the one answer to "how much may this user spend"."""

    posted: int
    held: int
    credit_limit: int
    owed: int
    """What the user's receivable says the user owes (usage the wallet did not cover, or
    a postpaid user's unbilled usage and open invoices)."""
    postpaid: bool = False
    owed_held: int = 0
    """Held on the receivable: a postpaid user's approved authorizations."""

    @property
    def available(self) -> int:
        """What may still be spent or held now. Prepaid: `posted - held + credit_limit`
        (cash, then the credit line). Postpaid: `credit_limit - owed - held`, what the
        credit limit leaves once unbilled usage, open invoices and holds are counted;
        cash in a postpaid wallet pays invoices, it is not spent on usage."""
        if self.postpaid:
            return self.credit_limit - self.owed - self.owed_held
        return self.posted - self.held + self.credit_limit


_CASH_AND_DEBT = Prepared(
    select(accounts.c.kind, accounts.c.posted, accounts.c.held).where(
        accounts.c.owner_type == str(OwnerType.USER),
        accounts.c.owner_id == bindparam("user_id"),
        accounts.c.currency == bindparam("currency"),
        one_of(accounts.c.kind, (str(AccountKind.WALLET), str(AccountKind.RECEIVABLE))),
    )
)


def user_standing(
    uow: UnitOfWork,
    user_id: str,
    currency: str,
    credit_limit: int,
    *,
    as_of: datetime | None = None,
    postpaid: bool = False,
) -> Standing:
    """The user's wallet and receivable in `currency`, now or as of a past moment."""
    if as_of is None:
        # Now: both cached balances in one query (authorizations ask this every time).
        rows = _CASH_AND_DEBT.rows(uow.conn, {"user_id": user_id, "currency": currency})
        found = {row.kind: row for row in rows}
        wallet_row = found.get(str(AccountKind.WALLET))
        receivable_row = found.get(str(AccountKind.RECEIVABLE))
        return Standing(
            posted=int(wallet_row.posted) if wallet_row else 0,
            held=int(wallet_row.held) if wallet_row else 0,
            credit_limit=credit_limit,
            owed=-int(receivable_row.posted) if receivable_row else 0,
            postpaid=postpaid,
            owed_held=int(receivable_row.held) if receivable_row else 0,
        )
    wallet_id = find_account(uow, OwnerType.USER, user_id, AccountKind.WALLET, currency)
    receivable_id = find_account(uow, OwnerType.USER, user_id, AccountKind.RECEIVABLE, currency)
    wallet = balance(uow, wallet_id, as_of=as_of) if wallet_id else None
    debt = balance(uow, receivable_id, as_of=as_of) if receivable_id else None
    return Standing(
        posted=wallet.posted if wallet else 0,
        held=wallet.held if wallet else 0,
        credit_limit=credit_limit,
        owed=-debt.posted if debt else 0,
        postpaid=postpaid,
        owed_held=debt.held if debt else 0,
    )


def user_balance(uow: UnitOfWork, user: UserView, *, as_of: datetime | None = None) -> BalanceView:
    """The balance a user is shown: `available = posted - held + credit_limit`."""
    cur = user.currency
    standing = user_standing(
        uow,
        user.id,
        cur.code,
        to_units(user.credit_limit, cur),
        as_of=as_of,
        postpaid=user.billing_mode == "postpaid",
    )
    return BalanceView(
        currency=cur,
        posted=from_units(standing.posted, cur),
        held=from_units(standing.held, cur),
        available=from_units(standing.available, cur),
        credit_limit=user.credit_limit,
        receivable=from_units(standing.owed, cur),
        as_of=as_of,
    )
