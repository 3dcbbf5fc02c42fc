"""Who the parties are: users and providers, looked up one way everywhere.

Every feature that needs a user (by id or external id) or a provider asks here, so the
lookup, the decryption of personal data and the not-found answer are the same for all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, func, select

from billfold.core.context import Work
from billfold.domain.arrears import ArrearsTerms, stage_at
from billfold.domain.errors import NotFound
from billfold.domain.money import Currency, currency, from_units
from billfold.store.prepared import Prepared, any_of
from billfold.store.tables import arrears, invoices, logins, providers, users


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
    vouchers: Decimal = Decimal(0)
    credits: Decimal = Decimal(0)

    @property
    def cash(self) -> Decimal:
        """The money the user paid in (the wallet): only it can be paid out or refunded."""
        return self.posted


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
class Payer:
    """What a charge needs of its user: no name or email, so nothing to decrypt."""

    id: str
    currency: Currency
    billing_mode: BillingMode
    credit_limit: Decimal


def provider_view(work: Work, row: Any) -> ProviderView:
    return ProviderView(
        id=row.id,
        name=work.cipher.decrypt(row.name_enc, context="providers.name"),
        email=work.cipher.decrypt(row.email_enc, context="providers.email"),
        commission_rate=Decimal(row.commission_rate),
        status=row.status,
        created_at=row.created_at,
    )


# Statements of the hot path are built once, with bind parameters: building one costs
# SQLAlchemy more than SQLite takes to run it (docs/DECISIONS.md, 102).
_PROVIDER_BY_ID = select(providers).where(providers.c.id == bindparam("id"))
_COMMISSION = Prepared(select(providers.c.commission_rate).where(providers.c.id == bindparam("id")))
_PAYER_BY_REF = Prepared(
    select(users.c.id, users.c.currency, users.c.billing_mode, users.c.credit_limit).where(
        (users.c.id == bindparam("ref")) | (users.c.external_id == bindparam("ref"))
    )
)
_PAYERS_BY_REFS_PG = Prepared(
    select(
        users.c.id, users.c.external_id, users.c.currency, users.c.billing_mode,
        users.c.credit_limit,
    ).where(
        any_of(users.c.id, "refs") | any_of(users.c.external_id, "refs")
    )
)  # fmt: skip
_USER_BY = {
    (column.name, lock): (
        select(users).where(column == bindparam("ref")).with_for_update()
        if lock
        else select(users).where(column == bindparam("ref"))
    )
    for column in (users.c.id, users.c.external_id)
    for lock in (False, True)
}


def load_provider(work: Work, provider_id: str) -> ProviderView:
    row = work.conn.execute(_PROVIDER_BY_ID, {"id": provider_id}).one_or_none()
    if row is None:
        raise NotFound(f"no provider {provider_id}", code="provider_not_found", param="provider_id")
    return provider_view(work, row)


def commission_rate(work: Work, provider_id: str) -> Decimal:
    """The provider's commission rate (a 404 if there is no such provider)."""
    row = _COMMISSION.first(work.conn, {"id": provider_id})
    if row is None:
        raise NotFound(f"no provider {provider_id}", code="provider_not_found", param="provider_id")
    return Decimal(row.commission_rate)


def user_view(work: Work, row: Any) -> UserView:
    cur = currency(row.currency)
    return UserView(
        id=row.id,
        name=work.cipher.decrypt(row.name_enc, context="users.name"),
        email=work.cipher.decrypt(row.email_enc, context="users.email"),
        currency=cur,
        billing_mode=BillingMode(row.billing_mode),
        credit_limit=from_units(row.credit_limit, cur),
        external_id=row.external_id,
        status=row.status,
        created_at=row.created_at,
    )


def user_row(work: Work, user_ref: str, *, lock: bool = False) -> Any:
    """The stored row of a user, by id or by external id; a 404 if there is none."""
    for column in ("id", "external_id"):
        row = work.conn.execute(_USER_BY[column, lock], {"ref": user_ref}).one_or_none()
        if row is not None:
            return row
    raise NotFound(f"no user {user_ref}", code="user_not_found", param="user")


def load_payers(work: Work, refs: Sequence[str]) -> dict[str, Payer]:
    """The payer each reference names, as `load_payer` finds it, in one statement on
    PostgreSQL (one each on SQLite); a reference that names nobody is left out."""
    if work.dialect != "postgresql":
        found: dict[str, Payer] = {}
        for ref in refs:
            rows = _PAYER_BY_REF.rows(work.conn, {"ref": ref})
            if rows:
                found[ref] = payer_of(by_ref(rows, ref))
        return found
    rows = _PAYERS_BY_REFS_PG.rows(work.conn, {"refs": list(refs)})
    named: dict[str, list[Any]] = {}
    for row in rows:
        for ref in {row.id, row.external_id}:
            if ref is not None:
                named.setdefault(ref, []).append(row)
    return {ref: payer_of(by_ref(named[ref], ref)) for ref in refs if ref in named}


def load_payer(work: Work, user_ref: str) -> Payer:
    """A user by id or by external id, as a charge needs it (a 404 if there is none)."""
    return payer_of(by_ref(_PAYER_BY_REF.rows(work.conn, {"ref": user_ref}), user_ref))


def by_ref(rows: Sequence[Any], user_ref: str) -> Any:
    """Of the users a reference found by id or by external id, the one it names: a
    user's own id before another user's external id that spells it (a 404 if none)."""
    for row in rows:
        if row.id == user_ref:
            return row
    if not rows:
        raise NotFound(f"no user {user_ref}", code="user_not_found", param="user")
    return rows[0]


def payer_of(row: Any) -> Payer:
    """A `Payer` from a row with the user's id, currency, billing mode and credit limit."""
    cur = currency(row.currency)
    return Payer(row.id, cur, BillingMode(row.billing_mode), from_units(row.credit_limit, cur))


def load_user(work: Work, user_ref: str) -> UserView:
    """A user by id or by external id."""
    return user_view(work, user_row(work, user_ref))


def arrears_terms(work: Work, own: ArrearsTerms | None = None) -> ArrearsTerms:
    """A plan's own arrears terms, or the platform's (BILLFOLD_ARREARS_*)."""
    if own is not None:
        return own
    settings = work.settings
    return ArrearsTerms(
        timedelta(hours=settings.arrears_grace_hours),
        timedelta(days=settings.arrears_terminate_days),
    )


AMOUNT_DUE = invoices.c.total - invoices.c.amount_paid - invoices.c.amount_credited
"""What a postpaid invoice still asks for, in SQL (`Invoice.amount_due` in memory)."""
_DUE = AMOUNT_DUE


def user_locale(work: Work, user_id: str) -> str:
    """The language a user reads: their console login's, else English (mail, invoices)."""
    chosen = work.conn.execute(
        select(logins.c.locale).where(logins.c.user_id == user_id).order_by(logins.c.created_at)
    ).first()
    return "zh-CN" if chosen is not None and chosen[0] == "zh-CN" else "en"


def overdue_since(work: Work, user_id: str) -> tuple[int, datetime | None]:
    """(ledger units, the oldest due date) of what a user's open postpaid invoices ask
    for past their due date: a postpaid user's debt. (Their receivable also holds usage
    not invoiced yet, which is owed but not due.)"""
    now = work.clock.now()
    row = work.conn.execute(
        select(func.coalesce(func.sum(_DUE), 0), func.min(invoices.c.due_at)).where(
            invoices.c.billing_mode == "postpaid",
            invoices.c.status == "open",
            invoices.c.user_id == user_id,
            invoices.c.due_at <= now,
            _DUE > 0,
        )
    ).one()
    return int(row[0]), row[1]


def debt_stage(work: Work, user_id: str, debt: int, terms: ArrearsTerms) -> str | None:
    """The stage of a prepaid user's debt now (None: no debt). It counts from when the
    debt arose (the arrears row), or from now for a debt the review has not seen yet."""
    if debt <= 0:
        return None
    now = work.clock.now()
    since = work.conn.execute(
        select(arrears.c.since).where(arrears.c.user_id == user_id)
    ).scalar_one_or_none()
    return stage_at(since or now, now, terms)


# --- the buyer on a user's invoices ----------------------------------------------------

PROFILE_FIELDS = (
    "name",
    "company",
    "address",
    "tax_number",
    "email",
    "fapiao_title",
    "fapiao_tax_number",
)
"""What a user's invoices name as the buyer: the billing name and company, the address
(lines separated by newlines), the tax (VAT) number, the address invoices are mailed
to, and what a Chinese VAT invoice request needs (发票抬头, 纳税人识别号)."""


@dataclass(frozen=True, slots=True)
class BillingProfile:
    user_id: str
    autopay_invoices: bool
    details: dict[str, str]
    """The fields of PROFILE_FIELDS that are set."""

    def get(self, name: str) -> str | None:
        return self.details.get(name)


def billing_profile(work: Work, user_id: str) -> BillingProfile:
    """The user's billing profile, decrypted (empty if never set)."""
    row = work.conn.execute(
        select(users.c.billing_profile_enc, users.c.autopay_invoices).where(users.c.id == user_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no user {user_id}", code="user_not_found", param="user")
    details: dict[str, str] = {}
    if row.billing_profile_enc:
        stored = json.loads(work.cipher.decrypt(row.billing_profile_enc, context="users.billing"))
        details = {k: str(v) for k, v in stored.items() if k in PROFILE_FIELDS and v}
    return BillingProfile(user_id, bool(row.autopay_invoices), details)


SELLER_FIELDS = ("legal_name", "address", "tax_number", "contact")
"""What invoices print of a provider that is the merchant of record of its services."""


@dataclass(frozen=True, slots=True)
class SellerDetails:
    provider_id: str
    merchant_of_record: bool
    details: dict[str, str]

    def get(self, name: str) -> str | None:
        return self.details.get(name)


def seller_details(work: Work, provider_id: str) -> SellerDetails:
    """A provider's seller details, decrypted (empty if never set)."""
    row = work.conn.execute(
        select(providers.c.seller_details_enc, providers.c.merchant_of_record).where(
            providers.c.id == provider_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no provider {provider_id}", code="provider_not_found", param="provider")
    details: dict[str, str] = {}
    if row.seller_details_enc:
        stored = json.loads(work.cipher.decrypt(row.seller_details_enc, context="providers.seller"))
        details = {k: str(v) for k, v in stored.items() if k in SELLER_FIELDS and v}
    return SellerDetails(provider_id, bool(row.merchant_of_record), details)
