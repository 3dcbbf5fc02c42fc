"""Parties and their money: providers, users, top-ups, one-off charges, refunds, balances.

Accounts (DESIGN.md 1): a user has a wallet (what the platform holds for the user; its
floor is -credit_limit) and a receivable (what the user owes: postpaid usage and debts).
A provider has earnings per currency; the platform has revenue and external cash
(money entering or leaving the platform) per currency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Generic, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from billfold import ledger
from billfold.core import audit
from billfold.core.access import (
    Principal,
    Role,
    acting_provider,
    require_admin,
    require_provider_access,
    require_role,
    require_user_access,
)
from billfold.core.context import Context
from billfold.domain.errors import Conflict, InvalidRequest, NotFound
from billfold.domain.ledger import (
    PLATFORM_OWNER_ID,
    AccountKind,
    OwnerType,
    Posting,
    TransferKind,
    TransferSpec,
    split_charge,
)
from billfold.domain.money import (
    Currency,
    currency,
    format_decimal,
    from_units,
    parse_amount,
    parse_rate,
    require_minor_units,
    to_units,
)
from billfold.ids import new_id
from billfold.ledger import PostedTransfer
from billfold.store.db import UnitOfWork
from billfold.store.tables import accounts, postings, providers, transfers, users

MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254
MAX_DESCRIPTION_LENGTH = 500
MAX_REFERENCE_LENGTH = 255
MAX_EXTERNAL_ID_LENGTH = 255
MAX_PAGE = 1000
T = TypeVar("T")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class BillingMode(StrEnum):
    PREPAID = "prepaid"
    POSTPAID = "postpaid"


@dataclass(frozen=True, slots=True)
class ProviderView:
    id: str
    name: str
    email: str
    commission_rate: Decimal
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BalanceView:
    currency: Currency
    posted: Decimal
    held: Decimal
    available: Decimal
    credit_limit: Decimal
    receivable: Decimal
    as_of: datetime | None = None


@dataclass(frozen=True, slots=True)
class UserView:
    id: str
    name: str
    email: str
    currency: Currency
    billing_mode: BillingMode
    credit_limit: Decimal
    external_id: str | None
    status: str
    created_at: datetime
    balance: BalanceView | None = None


@dataclass(frozen=True, slots=True)
class MoneyMovement:
    """A transfer as seen from one user's or provider's side."""

    transfer: PostedTransfer
    currency: Currency
    amount: Decimal
    """Signed: what the transfer added to the party's account (a charge is negative)."""
    account: str
    balance_after: Decimal
    provider_amount: Decimal | None = None
    commission: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    data: list[T]
    has_more: bool


# --- validation helpers ---------------------------------------------------------------


def _text(value: str | None, *, param: str, max_length: int, required: bool = True) -> str | None:
    if value is None:
        if required:
            raise InvalidRequest(f"{param} is required", param=param)
        return None
    text = value.strip()
    if required and not text:
        raise InvalidRequest(f"{param} must not be empty", param=param)
    if len(text) > max_length:
        raise InvalidRequest(f"{param} may have at most {max_length} characters", param=param)
    if any(ord(ch) < 32 for ch in text):
        raise InvalidRequest(f"{param} must not contain control characters", param=param)
    return text


def _email(value: str) -> str:
    email = _text(value, param="email", max_length=MAX_EMAIL_LENGTH)
    assert email is not None
    if not _EMAIL.match(email):
        raise InvalidRequest("email must be an address such as ana@example.com", param="email")
    return email


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}", param="limit")
    return limit


# --- providers ------------------------------------------------------------------------


def create_provider(
    ctx: Context, principal: Principal, *, name: str, email: str, commission_rate: object
) -> ProviderView:
    require_admin(principal)
    clean_name = _text(name, param="name", max_length=MAX_NAME_LENGTH)
    assert clean_name is not None
    clean_email = _email(email)
    rate = parse_rate(commission_rate, param="commission_rate")
    now = ctx.clock.now()
    view = ProviderView(new_id("prv"), clean_name, clean_email, rate, "active", now)
    with ctx.db.unit_of_work() as uow:
        try:
            uow.conn.execute(
                providers.insert().values(
                    id=view.id,
                    name_enc=ctx.cipher.encrypt(clean_name, context="providers.name"),
                    email_enc=ctx.cipher.encrypt(clean_email, context="providers.email"),
                    email_index=ctx.cipher.blind_index(clean_email.lower()),
                    commission_rate=str(rate),
                    status=view.status,
                    created_at=now,
                )
            )
        except IntegrityError:
            raise Conflict(
                "a provider with this email exists", code="provider_exists", param="email"
            ) from None
        audit.record(
            uow,
            principal,
            "provider.created",
            "provider",
            view.id,
            at=now,
            details={"commission_rate": str(rate)},
        )
        uow.commit()
    return view


def _provider_view(ctx: Context, row: object) -> ProviderView:
    return ProviderView(
        id=row.id,  # type: ignore[attr-defined]
        name=ctx.cipher.decrypt(row.name_enc, context="providers.name"),  # type: ignore[attr-defined]
        email=ctx.cipher.decrypt(row.email_enc, context="providers.email"),  # type: ignore[attr-defined]
        commission_rate=Decimal(row.commission_rate),  # type: ignore[attr-defined]
        status=row.status,  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
    )


def load_provider(ctx: Context, uow: UnitOfWork, provider_id: str) -> ProviderView:
    row = uow.conn.execute(select(providers).where(providers.c.id == provider_id)).one_or_none()
    if row is None:
        raise NotFound(f"no provider {provider_id}", code="provider_not_found", param="provider_id")
    return _provider_view(ctx, row)


def get_provider(ctx: Context, principal: Principal, provider_id: str) -> ProviderView:
    require_provider_access(principal, provider_id)
    with ctx.db.unit_of_work(read_only=True) as uow:
        return load_provider(ctx, uow, provider_id)


def list_providers(
    ctx: Context, principal: Principal, *, limit: int = 100, starting_after: str | None = None
) -> Page[ProviderView]:
    require_admin(principal)
    query = select(providers).order_by(providers.c.id.desc()).limit(_limit(limit) + 1)
    if starting_after:
        query = query.where(providers.c.id < starting_after)
    with ctx.db.unit_of_work(read_only=True) as uow:
        rows = uow.conn.execute(query).all()
    return Page([_provider_view(ctx, r) for r in rows[:limit]], len(rows) > limit)


def update_provider(
    ctx: Context, principal: Principal, provider_id: str, *, commission_rate: object
) -> ProviderView:
    """Changes the commission for charges from now on; past charges keep their split."""
    require_admin(principal)
    rate = parse_rate(commission_rate, param="commission_rate")
    now = ctx.clock.now()
    with ctx.db.unit_of_work() as uow:
        before = load_provider(ctx, uow, provider_id)
        uow.conn.execute(
            update(providers).where(providers.c.id == provider_id).values(commission_rate=str(rate))
        )
        audit.record(
            uow,
            principal,
            "provider.updated",
            "provider",
            provider_id,
            at=now,
            details={"commission_rate": [str(before.commission_rate), str(rate)]},
        )
        view = load_provider(ctx, uow, provider_id)
        uow.commit()
    return view


# --- users ----------------------------------------------------------------------------


def create_user(
    ctx: Context,
    principal: Principal,
    *,
    name: str,
    email: str,
    currency_code: str,
    billing_mode: str = "prepaid",
    credit_limit: object = "0",
    external_id: str | None = None,
    tax_rate: object = None,
) -> UserView:
    require_admin(principal)
    tax = None if tax_rate is None else parse_rate(tax_rate, param="tax_rate")
    clean_name = _text(name, param="name", max_length=MAX_NAME_LENGTH)
    assert clean_name is not None
    clean_email = _email(email)
    cur = currency(currency_code)
    try:
        mode = BillingMode(billing_mode)
    except ValueError:
        raise InvalidRequest(
            "billing_mode must be prepaid or postpaid", param="billing_mode"
        ) from None
    limit = parse_amount(credit_limit, param="credit_limit")
    require_minor_units(limit, cur, param="credit_limit")
    limit_units = to_units(limit, cur, param="credit_limit")
    ext = _text(external_id, param="external_id", max_length=MAX_EXTERNAL_ID_LENGTH, required=False)
    if external_id is not None and not ext:
        raise InvalidRequest("external_id must not be empty", param="external_id")
    now = ctx.clock.now()
    view = UserView(
        id=new_id("usr"),
        name=clean_name,
        email=clean_email,
        currency=cur,
        billing_mode=mode,
        credit_limit=limit,
        external_id=ext,
        status="active",
        created_at=now,
    )
    with ctx.db.unit_of_work() as uow:
        try:
            uow.conn.execute(
                users.insert().values(
                    id=view.id,
                    name_enc=ctx.cipher.encrypt(clean_name, context="users.name"),
                    email_enc=ctx.cipher.encrypt(clean_email, context="users.email"),
                    email_index=ctx.cipher.blind_index(clean_email.lower()),
                    currency=cur.code,
                    billing_mode=str(mode),
                    credit_limit=limit_units,
                    external_id=ext,
                    status=view.status,
                    created_at=now,
                    tax_rate=None if tax is None else format_decimal(tax),
                )
            )
        except IntegrityError:
            raise Conflict(
                "a user with this external_id exists", code="user_exists", param="external_id"
            ) from None
        ledger.ensure_account(
            uow, OwnerType.USER, view.id, AccountKind.WALLET, cur.code, now=now, floor=-limit_units
        )
        ledger.ensure_account(
            uow, OwnerType.USER, view.id, AccountKind.RECEIVABLE, cur.code, now=now
        )
        audit.record(
            uow,
            principal,
            "user.created",
            "user",
            view.id,
            at=now,
            details={"currency": cur.code, "billing_mode": str(mode), "credit_limit": str(limit)},
        )
        uow.commit()
    return _with_balance(ctx, view)


def _user_view(ctx: Context, row: object) -> UserView:
    cur = currency(row.currency)  # type: ignore[attr-defined]
    return UserView(
        id=row.id,  # type: ignore[attr-defined]
        name=ctx.cipher.decrypt(row.name_enc, context="users.name"),  # type: ignore[attr-defined]
        email=ctx.cipher.decrypt(row.email_enc, context="users.email"),  # type: ignore[attr-defined]
        currency=cur,
        billing_mode=BillingMode(row.billing_mode),  # type: ignore[attr-defined]
        credit_limit=from_units(row.credit_limit, cur),  # type: ignore[attr-defined]
        external_id=row.external_id,  # type: ignore[attr-defined]
        status=row.status,  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
    )


def load_user(ctx: Context, uow: UnitOfWork, user_ref: str) -> UserView:
    """A user by id or by external id."""
    row = uow.conn.execute(select(users).where(users.c.id == user_ref)).one_or_none()
    if row is None:
        row = uow.conn.execute(select(users).where(users.c.external_id == user_ref)).one_or_none()
    if row is None:
        raise NotFound(f"no user {user_ref}", code="user_not_found", param="user")
    return _user_view(ctx, row)


def _with_balance(ctx: Context, user: UserView, as_of: datetime | None = None) -> UserView:
    return UserView(
        **{
            **{n: getattr(user, n) for n in UserView.__slots__},
            "balance": user_balance_of(ctx, user, as_of=as_of),
        }
    )


def get_user(ctx: Context, principal: Principal, user_ref: str) -> UserView:
    with ctx.db.unit_of_work(read_only=True) as uow:
        user = load_user(ctx, uow, user_ref)
    require_user_access(principal, user.id)
    return _with_balance(ctx, user)


def list_users(
    ctx: Context, principal: Principal, *, limit: int = 100, starting_after: str | None = None
) -> Page[UserView]:
    require_admin(principal)
    query = select(users).order_by(users.c.id.desc()).limit(_limit(limit) + 1)
    if starting_after:
        query = query.where(users.c.id < starting_after)
    with ctx.db.unit_of_work(read_only=True) as uow:
        rows = uow.conn.execute(query).all()
    return Page([_user_view(ctx, r) for r in rows[:limit]], len(rows) > limit)


def set_credit_limit(
    ctx: Context, principal: Principal, user_id: str, credit_limit: object
) -> UserView:
    """Changes how far below zero the wallet may go, for spending from now on."""
    require_admin(principal)
    now = ctx.clock.now()
    with ctx.db.unit_of_work() as uow:
        user = load_user(ctx, uow, user_id)
        limit = parse_amount(credit_limit, param="credit_limit")
        require_minor_units(limit, user.currency, param="credit_limit")
        units = to_units(limit, user.currency, param="credit_limit")
        wallet = _wallet(ctx, uow, user, now)
        ledger.set_floor(uow, wallet, -units)
        uow.conn.execute(update(users).where(users.c.id == user.id).values(credit_limit=units))
        audit.record(
            uow,
            principal,
            "user.credit_limit_changed",
            "user",
            user.id,
            at=now,
            details={"credit_limit": [str(user.credit_limit), str(limit)]},
        )
        uow.commit()
    return get_user(ctx, principal, user.id)


def _wallet(ctx: Context, uow: UnitOfWork, user: UserView, now: datetime) -> int:
    return ledger.ensure_account(
        uow,
        OwnerType.USER,
        user.id,
        AccountKind.WALLET,
        user.currency.code,
        now=now,
        floor=-to_units(user.credit_limit, user.currency),
    )


def _receivable(ctx: Context, uow: UnitOfWork, user: UserView, now: datetime) -> int:
    return ledger.ensure_account(
        uow, OwnerType.USER, user.id, AccountKind.RECEIVABLE, user.currency.code, now=now
    )


def _platform(
    ctx: Context, uow: UnitOfWork, kind: AccountKind, cur: Currency, now: datetime
) -> int:
    return ledger.ensure_account(
        uow, OwnerType.PLATFORM, PLATFORM_OWNER_ID, kind, cur.code, now=now
    )


def _provider_earnings(
    ctx: Context, uow: UnitOfWork, provider_id: str, cur: Currency, now: datetime
) -> int:
    return ledger.ensure_account(
        uow, OwnerType.PROVIDER, provider_id, AccountKind.PROVIDER_EARNINGS, cur.code, now=now
    )


def user_balance_of(ctx: Context, user: UserView, *, as_of: datetime | None = None) -> BalanceView:
    cur = user.currency
    with ctx.db.unit_of_work(read_only=True) as uow:
        wallet_id = ledger.find_account(uow, OwnerType.USER, user.id, AccountKind.WALLET, cur.code)
        receivable_id = ledger.find_account(
            uow, OwnerType.USER, user.id, AccountKind.RECEIVABLE, cur.code
        )
        wallet = ledger.balance(uow, wallet_id, as_of=as_of) if wallet_id else None
        owed = ledger.balance(uow, receivable_id, as_of=as_of) if receivable_id else None
    posted = wallet.posted if wallet else 0
    held = wallet.held if wallet else 0
    limit_units = to_units(user.credit_limit, cur)
    return BalanceView(
        currency=cur,
        posted=from_units(posted, cur),
        held=from_units(held, cur),
        available=from_units(posted - held + limit_units, cur),
        credit_limit=user.credit_limit,
        receivable=from_units(-(owed.posted if owed else 0), cur),
        as_of=as_of,
    )


def get_balance(
    ctx: Context, principal: Principal, user_ref: str, *, as_of: datetime | None = None
) -> BalanceView:
    with ctx.db.unit_of_work(read_only=True) as uow:
        user = load_user(ctx, uow, user_ref)
    require_user_access(principal, user.id)
    if as_of is not None and as_of > ctx.clock.now():
        raise InvalidRequest("as_of must not be in the future", param="as_of")
    return user_balance_of(ctx, user, as_of=as_of)


# --- money movements ------------------------------------------------------------------


def top_up(
    ctx: Context,
    principal: Principal,
    user_ref: str,
    *,
    amount: object,
    reference: str | None = None,
    transfer_id: str | None = None,
) -> MoneyMovement:
    """Credits the user's wallet with money received from outside; idempotent by id."""
    require_admin(principal)
    ref = _text(reference, param="reference", max_length=MAX_REFERENCE_LENGTH, required=False)
    now = ctx.clock.now()
    with ctx.db.unit_of_work() as uow:
        user = load_user(ctx, uow, user_ref)
        value = parse_amount(amount, allow_zero=False)
        require_minor_units(value, user.currency)
        units = to_units(value, user.currency)
        wallet = _wallet(ctx, uow, user, now)
        cash = _platform(ctx, uow, AccountKind.EXTERNAL_CASH, user.currency, now)
        # A prepaid user's debt (usage the wallet could not cover) is paid first; the rest
        # goes to the wallet (DESIGN.md 4). Postpaid receivables are settled by invoices.
        debt_paid = 0
        postings_ = [Posting(cash, user.currency.code, -units)]
        if user.billing_mode == BillingMode.PREPAID:
            receivable = _receivable(ctx, uow, user, now)
            owed = -ledger.balance(uow, receivable).posted
            debt_paid = min(max(owed, 0), units)
            postings_.append(Posting(receivable, user.currency.code, debt_paid))
        postings_.append(Posting(wallet, user.currency.code, units - debt_paid))
        spec = TransferSpec(
            id=transfer_id or new_id("tr"),
            kind=TransferKind.TOP_UP,
            postings=tuple(postings_),
            user_id=user.id,
            description="Top-up",
            reference=ref,
        )
        posted = ledger.post(uow, spec, now=now)
        if not posted.replayed:
            audit.record(
                uow,
                principal,
                "user.topped_up",
                "transfer",
                posted.id,
                at=now,
                details={"user_id": user.id, "amount": str(value)},
            )
        uow.commit()
    if not posted.replayed:
        # Money came in: pay what the user's subscriptions owe, and restore them.
        # (Imported here: billing builds on the catalog, which builds on this module.)
        from billfold.invoicing import billing

        billing.collect_for_user(ctx, user.id)
    return _movement(posted, wallet, user.currency, "wallet")


def charge(
    ctx: Context,
    principal: Principal,
    *,
    user_ref: str,
    amount: object,
    description: str,
    provider_id: str | None = None,
    service: str | None = None,
    transfer_id: str | None = None,
) -> MoneyMovement:
    """A one-off charge, split between the provider and the platform's commission.

    Prepaid users pay from the wallet and are refused when it cannot cover the charge;
    postpaid users accrue it on their receivable, to be invoiced.
    """
    provider_ref = acting_provider(principal, provider_id)
    text = _text(description, param="description", max_length=MAX_DESCRIPTION_LENGTH)
    service_code = _text(service, param="service", max_length=100, required=False)
    now = ctx.clock.now()
    with ctx.db.unit_of_work() as uow:
        user = load_user(ctx, uow, user_ref)
        value = parse_amount(amount, allow_zero=False)
        units = to_units(value, user.currency)
        cur = user.currency
        payer = (
            _wallet(ctx, uow, user, now)
            if user.billing_mode == BillingMode.PREPAID
            else _receivable(ctx, uow, user, now)
        )
        revenue = _platform(ctx, uow, AccountKind.PLATFORM_REVENUE, cur, now)
        if provider_ref is not None:
            provider = load_provider(ctx, uow, provider_ref)
            provider_share, commission = split_charge(units, provider.commission_rate)
            lines = [
                Posting(payer, cur.code, -units),
                Posting(
                    _provider_earnings(ctx, uow, provider.id, cur, now), cur.code, provider_share
                ),
                Posting(revenue, cur.code, commission),
            ]
        else:
            provider_share, commission = 0, units
            lines = [Posting(payer, cur.code, -units), Posting(revenue, cur.code, units)]
        spec = TransferSpec(
            id=transfer_id or new_id("tr"),
            kind=TransferKind.CHARGE,
            postings=tuple(lines),
            user_id=user.id,
            provider_id=provider_ref,
            service=service_code,
            description=text,
        )
        posted = ledger.post(uow, spec, now=now)
        if not posted.replayed:
            audit.record(
                uow,
                principal,
                "user.charged",
                "transfer",
                posted.id,
                at=now,
                details={"user_id": user.id, "amount": str(value), "provider_id": provider_ref},
            )
        uow.commit()
    return _movement(
        posted,
        payer,
        cur,
        "wallet" if user.billing_mode == BillingMode.PREPAID else "receivable",
        provider_share=provider_share,
        commission=commission,
    )


def refund(
    ctx: Context,
    principal: Principal,
    charge_id: str,
    *,
    amount: object | None = None,
    reason: str | None = None,
    transfer_id: str | None = None,
) -> MoneyMovement:
    """Gives back all or part of a charge; the provider and the platform give back their shares."""
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    text = _text(reason, param="reason", max_length=MAX_DESCRIPTION_LENGTH, required=False)
    now = ctx.clock.now()
    with ctx.db.unit_of_work() as uow:
        try:
            original = ledger.get_transfer(uow, charge_id)
        except NotFound:
            raise NotFound(f"no charge {charge_id}", code="charge_not_found") from None
        if principal.role == Role.PROVIDER and original.provider_id != principal.provider_id:
            raise NotFound(f"no charge {charge_id}", code="charge_not_found")
        if original.kind not in (TransferKind.CHARGE, TransferKind.CAPTURE):
            raise InvalidRequest("only charges can be refunded", code="not_a_charge")
        assert original.user_id is not None
        user = load_user(ctx, uow, original.user_id)
        payer = next(p.account_id for p in original.postings if p.amount < 0)
        cur = user.currency
        left = -original.amount_on(payer) - ledger.reversed_so_far(uow, original.id).get(payer, 0)
        units = left if amount is None else to_units(parse_amount(amount, allow_zero=False), cur)
        spec = ledger.reversal_spec(
            uow,
            original=original,
            transfer_id=transfer_id or new_id("tr"),
            anchor_account_id=payer,
            anchor_amount=units,
            kind=TransferKind.REFUND,
            description=text or f"Refund of {original.id}",
        )
        posted = ledger.post(uow, spec, now=now)
        if not posted.replayed:
            audit.record(
                uow,
                principal,
                "charge.refunded",
                "transfer",
                posted.id,
                at=now,
                details={"charge_id": original.id, "units": units},
            )
        uow.commit()
    account = "wallet" if user.billing_mode == BillingMode.PREPAID else "receivable"
    return _movement(posted, payer, cur, account)


def _movement(
    posted: PostedTransfer,
    account_id: int,
    cur: Currency,
    account: str,
    *,
    provider_share: int | None = None,
    commission: int | None = None,
) -> MoneyMovement:
    mine = [p for p in posted.postings if p.account_id == account_id]
    return MoneyMovement(
        transfer=posted,
        currency=cur,
        amount=from_units(sum(p.amount for p in mine), cur),
        account=account,
        balance_after=from_units(mine[0].balance_after if mine else 0, cur),
        provider_amount=None if provider_share is None else from_units(provider_share, cur),
        commission=None if commission is None else from_units(commission, cur),
    )


def transactions(
    ctx: Context,
    principal: Principal,
    user_ref: str,
    *,
    limit: int = 100,
    starting_after: str | None = None,
) -> Page[MoneyMovement]:
    """Every movement of the user's money, newest first: the consumption records."""
    with ctx.db.unit_of_work(read_only=True) as uow:
        user = load_user(ctx, uow, user_ref)
        require_user_access(principal, user.id)
        own = uow.conn.execute(
            select(accounts.c.id, accounts.c.kind).where(
                accounts.c.owner_type == str(OwnerType.USER), accounts.c.owner_id == user.id
            )
        ).all()
        kinds = {row.id: row.kind for row in own}
        # One row per transfer, however many of the user's accounts it touched (a top-up
        # that pays a debt moves both the receivable and the wallet).
        query = (
            select(postings.c.transfer_seq)
            .where(postings.c.account_id.in_(list(kinds)))
            .group_by(postings.c.transfer_seq)
            .order_by(postings.c.transfer_seq.desc())
            .limit(_limit(limit) + 1)
        )
        if starting_after:
            seq = uow.conn.execute(
                select(transfers.c.seq).where(
                    transfers.c.id == starting_after, transfers.c.user_id == user.id
                )
            ).scalar_one_or_none()
            if seq is None:
                raise InvalidRequest(
                    "starting_after is not one of this user's transactions", param="starting_after"
                )
            query = query.where(postings.c.transfer_seq < seq)
        seqs = list(uow.conn.execute(query).scalars())
        loaded = {t.seq: t for t in ledger.load_transfers_by_seq(uow, seqs[:limit])}
    return Page(
        [_user_movement(loaded[seq], kinds, user.currency) for seq in seqs[:limit]],
        len(seqs) > limit,
    )


def _user_movement(transfer: PostedTransfer, kinds: dict[int, str], cur: Currency) -> MoneyMovement:
    """A transfer as the user sees it: its total effect on the user's accounts."""
    mine = [p for p in transfer.postings if p.account_id in kinds]
    touched = sorted({kinds[p.account_id] for p in mine}, key=lambda k: k != "wallet")
    wallet = [p for p in mine if kinds[p.account_id] == "wallet"]
    after = (wallet or mine)[0].balance_after
    return MoneyMovement(
        transfer=transfer,
        currency=cur,
        amount=from_units(sum(p.amount for p in mine), cur),
        account="+".join(touched),
        balance_after=from_units(after, cur),
    )
