"""Small builders for ledger tests: a wallet with a floor and the platform's accounts."""

from __future__ import annotations

from dataclasses import dataclass

from billfold.domain.ledger import (
    PLATFORM_OWNER_ID,
    AccountKind,
    OwnerType,
    Posting,
    TransferKind,
    TransferSpec,
)
from billfold.ids import new_id
from billfold.services.context import Context


@dataclass(frozen=True)
class Books:
    wallet: int
    cash: int
    provider: int
    revenue: int


def open_books(ctx: Context, owner: str = "u1", *, floor: int = 0, currency: str = "USD") -> Books:
    now = ctx.clock.now()
    with ctx.db.unit_of_work() as uow:
        ensure = ctx.accounts.ensure
        books = Books(
            wallet=ensure(
                uow, OwnerType.USER, owner, AccountKind.WALLET, currency, now=now, floor=floor
            ),
            cash=ensure(
                uow,
                OwnerType.PLATFORM,
                PLATFORM_OWNER_ID,
                AccountKind.EXTERNAL_CASH,
                currency,
                now=now,
            ),
            provider=ensure(
                uow, OwnerType.PROVIDER, "p1", AccountKind.PROVIDER_EARNINGS, currency, now=now
            ),
            revenue=ensure(
                uow,
                OwnerType.PLATFORM,
                PLATFORM_OWNER_ID,
                AccountKind.PLATFORM_REVENUE,
                currency,
                now=now,
            ),
        )
        uow.commit()
    return books


def top_up_spec(books: Books, units: int, transfer_id: str | None = None) -> TransferSpec:
    return TransferSpec(
        id=transfer_id or new_id("tr"),
        kind=TransferKind.TOP_UP,
        postings=(Posting(books.cash, "USD", -units), Posting(books.wallet, "USD", units)),
        user_id="u1",
    )


def charge_spec(
    books: Books,
    units: int,
    transfer_id: str | None = None,
    *,
    hold_id: str | None = None,
    commission: int | None = None,
) -> TransferSpec:
    platform = units // 5 if commission is None else commission
    return TransferSpec(
        id=transfer_id or new_id("tr"),
        kind=TransferKind.CAPTURE if hold_id else TransferKind.CHARGE,
        postings=(
            Posting(books.wallet, "USD", -units),
            Posting(books.provider, "USD", units - platform),
            Posting(books.revenue, "USD", platform),
        ),
        user_id="u1",
        provider_id="p1",
        hold_id=hold_id,
    )
