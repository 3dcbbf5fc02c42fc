"""Parties and their money: providers, users, top-ups, one-off charges, refunds, balances.

Accounts (docs/ARCHITECTURE.md, "Principles"): a user has a wallet (what the platform
holds for the user; a prepaid wallet's floor is -credit_limit, a postpaid one holds cash
only) and a receivable (what the user owes: postpaid usage and open invoices, or a
prepaid user's debts).
A provider has earnings per currency; the platform has revenue and external cash
(money entering or leaving the platform) per currency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, String, bindparam, column, exists, func, select, union_all, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError

from billfold import ledger, prepaid
from billfold.catalog import hides_personal_data
from billfold.catalog.customers import CURRENT
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
from billfold.core.context import Work
from billfold.core.directory import (
    BalanceView,
    BillingMode,
    Payer,
    ProviderView,
    UserView,
    by_ref,
    load_provider,
    load_user,
    payer_of,
    provider_view,
    user_view,
)
from billfold.core.text import Page, check_limit, clean_email, clean_text
from billfold.domain.errors import BillfoldError, Conflict, InvalidRequest, NotFound
from billfold.domain.ledger import (
    PLATFORM_OWNER_ID,
    AccountKind,
    ChargeAccounts,
    OwnerType,
    Posting,
    TransferKind,
    TransferSpec,
    charge_transfer,
    spec_amount,
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
from billfold.invoicing import billing
from billfold.ledger import PostedTransfer
from billfold.store.prepared import Prepared, one_of
from billfold.store.tables import providers, services, subscriptions, users

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 500
MAX_REFERENCE_LENGTH = 255
MAX_EXTERNAL_ID_LENGTH = 255


@dataclass(frozen=True, slots=True)
class MoneyMovement:
    """A transfer as seen from one user's or provider's side."""

    transfer: PostedTransfer
    currency: Currency
    amount: Decimal
    """Signed: what the transfer added to the party's account (a charge is negative)."""
    account: str
    balance_after: Decimal | None
    """None in a provider's answer: the user's balance is not the provider's to see."""
    provider_amount: Decimal | None = None
    commission: Decimal | None = None


# --- validation helpers ---------------------------------------------------------------


# --- providers ------------------------------------------------------------------------


def create_provider(
    work: Work,
    principal: Principal,
    *,
    name: str,
    email: str,
    commission_rate: object,
    status: str = "active",
) -> ProviderView:
    """A provider; `pending` for an application an admin has yet to approve."""
    require_admin(principal)
    assert status in ("active", "pending")
    clean_name = clean_text(name, param="name", max_length=MAX_NAME_LENGTH)
    assert clean_name is not None
    address = clean_email(email)
    rate = parse_rate(commission_rate, param="commission_rate")
    now = work.clock.now()
    view = ProviderView(new_id("prv"), clean_name, address, rate, status, now)
    try:
        work.conn.execute(
            providers.insert().values(
                id=view.id,
                name_enc=work.cipher.encrypt(clean_name, context="providers.name"),
                email_enc=work.cipher.encrypt(address, context="providers.email"),
                email_index=work.cipher.blind_index(address.lower()),
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
        work,
        principal,
        "provider.created",
        "provider",
        view.id,
        at=now,
        details={"commission_rate": str(rate)},
    )
    return view


def approve_provider(work: Work, principal: Principal, provider_id: str) -> ProviderView:
    """Activates a provider application; approving an active provider changes nothing."""
    require_admin(principal)
    found = work.conn.execute(
        update(providers)
        .where(providers.c.id == provider_id, providers.c.status == "pending")
        .values(status="active")
    )
    if found.rowcount:
        work.credentials_changed()  # Its logins' sessions may now act (or not).
        audit.record(
            work, principal, "provider.approved", "provider", provider_id, at=work.clock.now()
        )
    return get_provider(work, principal, provider_id)


def reject_provider(work: Work, principal: Principal, provider_id: str) -> ProviderView:
    """Turns down a provider application: it stays visible to the applicant, who can act
    on nothing. Only a pending application can be rejected."""
    require_admin(principal)
    current = get_provider(work, principal, provider_id)
    if current.status not in ("pending", "rejected"):
        raise Conflict("only a pending application can be rejected", code="provider_not_pending")
    found = work.conn.execute(
        update(providers)
        .where(providers.c.id == provider_id, providers.c.status == "pending")
        .values(status="rejected")
    )
    if found.rowcount:
        work.credentials_changed()  # Its logins' sessions may now act (or not).
        audit.record(
            work, principal, "provider.rejected", "provider", provider_id, at=work.clock.now()
        )
    return get_provider(work, principal, provider_id)


def get_provider(work: Work, principal: Principal, provider_id: str) -> ProviderView:
    require_provider_access(principal, provider_id)
    return load_provider(work, provider_id)


def list_providers(
    work: Work, principal: Principal, *, limit: int = 100, starting_after: str | None = None
) -> Page[ProviderView]:
    require_admin(principal)
    query = select(providers).order_by(providers.c.id.desc()).limit(check_limit(limit) + 1)
    if starting_after:
        query = query.where(providers.c.id < starting_after)
    rows = work.conn.execute(query).all()
    return Page([provider_view(work, r) for r in rows[:limit]], len(rows) > limit)


def update_provider(
    work: Work, principal: Principal, provider_id: str, *, commission_rate: object
) -> ProviderView:
    """Changes the commission for charges from now on; past charges keep their split."""
    require_admin(principal)
    rate = parse_rate(commission_rate, param="commission_rate")
    now = work.clock.now()
    before = load_provider(work, provider_id)
    work.conn.execute(
        update(providers).where(providers.c.id == provider_id).values(commission_rate=str(rate))
    )
    audit.record(
        work,
        principal,
        "provider.updated",
        "provider",
        provider_id,
        at=now,
        details={"commission_rate": [str(before.commission_rate), str(rate)]},
    )
    view = load_provider(work, provider_id)
    return view


# --- users ----------------------------------------------------------------------------


def create_user(
    work: Work,
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
    clean_name = clean_text(name, param="name", max_length=MAX_NAME_LENGTH)
    assert clean_name is not None
    address = clean_email(email)
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
    ext = clean_text(
        external_id, param="external_id", max_length=MAX_EXTERNAL_ID_LENGTH, required=False
    )
    if external_id is not None and not ext:
        raise InvalidRequest("external_id must not be empty", param="external_id")
    now = work.clock.now()
    view = UserView(
        id=new_id("usr"),
        name=clean_name,
        email=address,
        currency=cur,
        billing_mode=mode,
        credit_limit=limit,
        external_id=ext,
        status="active",
        created_at=now,
    )
    try:
        work.conn.execute(
            users.insert().values(
                id=view.id,
                name_enc=work.cipher.encrypt(clean_name, context="users.name"),
                email_enc=work.cipher.encrypt(address, context="users.email"),
                email_index=work.cipher.blind_index(address.lower()),
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
        work,
        OwnerType.USER,
        view.id,
        AccountKind.WALLET,
        cur.code,
        now=now,
        floor=wallet_floor(mode, limit_units),
    )
    ledger.ensure_account(work, OwnerType.USER, view.id, AccountKind.RECEIVABLE, cur.code, now=now)
    audit.record(
        work,
        principal,
        "user.created",
        "user",
        view.id,
        at=now,
        details={"currency": cur.code, "billing_mode": str(mode), "credit_limit": str(limit)},
    )
    return _with_balance(work, view)


def _with_balance(work: Work, user: UserView, as_of: datetime | None = None) -> UserView:
    return UserView(
        **{
            **{n: getattr(user, n) for n in UserView.__slots__},
            "balance": prepaid.user_balance(work, user, as_of=as_of),
        }
    )


def get_user(work: Work, principal: Principal, user_ref: str) -> UserView:
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    return _with_balance(work, user)


def list_users(
    work: Work, principal: Principal, *, limit: int = 100, starting_after: str | None = None
) -> Page[UserView]:
    require_admin(principal)
    query = select(users).order_by(users.c.id.desc()).limit(check_limit(limit) + 1)
    if starting_after:
        query = query.where(users.c.id < starting_after)
    rows = work.conn.execute(query).all()
    return Page([user_view(work, r) for r in rows[:limit]], len(rows) > limit)


def set_credit_limit(
    work: Work, principal: Principal, user_id: str, credit_limit: object
) -> UserView:
    """Changes the credit limit, for spending from now on: how far below zero a prepaid
    wallet may go, or how much a postpaid user may owe (unbilled usage and open
    invoices together)."""
    require_admin(principal)
    now = work.clock.now()
    user = load_user(work, user_id)
    limit = parse_amount(credit_limit, param="credit_limit")
    require_minor_units(limit, user.currency, param="credit_limit")
    units = to_units(limit, user.currency, param="credit_limit")
    wallet = _wallet(work, user, now)
    ledger.set_floor(work, wallet, wallet_floor(user.billing_mode, units))
    work.conn.execute(update(users).where(users.c.id == user.id).values(credit_limit=units))
    audit.record(
        work,
        principal,
        "user.credit_limit_changed",
        "user",
        user.id,
        at=now,
        details={"credit_limit": [str(user.credit_limit), str(limit)]},
    )
    return get_user(work, principal, user.id)


def _wallet(work: Work, user: UserView, now: datetime) -> int:
    return ledger.ensure_account(
        work,
        OwnerType.USER,
        user.id,
        AccountKind.WALLET,
        user.currency.code,
        now=now,
        floor=wallet_floor(user.billing_mode, to_units(user.credit_limit, user.currency)),
    )


def wallet_floor(mode: str, credit_limit: int) -> int:
    """A prepaid wallet may go down to minus the credit limit; a postpaid wallet holds
    cash only (its credit bounds what the user owes, on the receivable)."""
    return -credit_limit if mode == BillingMode.PREPAID else 0


def _receivable(work: Work, user: UserView, now: datetime) -> int:
    return ledger.ensure_account(
        work, OwnerType.USER, user.id, AccountKind.RECEIVABLE, user.currency.code, now=now
    )


def _platform(work: Work, kind: AccountKind, cur: Currency, now: datetime) -> int:
    return ledger.ensure_account(
        work, OwnerType.PLATFORM, PLATFORM_OWNER_ID, kind, cur.code, now=now
    )


def get_balance(
    work: Work, principal: Principal, user_ref: str, *, as_of: datetime | None = None
) -> BalanceView:
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    if as_of is not None and as_of > work.clock.now():
        raise InvalidRequest("as_of must not be in the future", param="as_of")
    return prepaid.user_balance(work, user, as_of=as_of)


# --- money movements ------------------------------------------------------------------


def top_up(
    work: Work,
    principal: Principal,
    user_ref: str,
    *,
    amount: object,
    reference: str | None = None,
    transfer_id: str | None = None,
) -> MoneyMovement:
    """Credits the user's wallet with money received from outside; idempotent by id."""
    require_admin(principal)
    ref = clean_text(reference, param="reference", max_length=MAX_REFERENCE_LENGTH, required=False)
    now = work.clock.now()
    user = load_user(work, user_ref)
    value = parse_amount(amount, allow_zero=False)
    require_minor_units(value, user.currency)
    units = to_units(value, user.currency)
    wallet = _wallet(work, user, now)
    cash = _platform(work, AccountKind.EXTERNAL_CASH, user.currency, now)
    # A prepaid user's debt (usage the wallet could not cover) is paid first; the rest
    # goes to the wallet. Postpaid receivables are settled by invoices.
    debt_paid = 0
    postings_ = [Posting(cash, user.currency.code, -units)]
    if user.billing_mode == BillingMode.PREPAID:
        receivable = _receivable(work, user, now)
        owed = -ledger.balance(work, receivable).posted
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
    posted = ledger.post(work, spec, now=now)
    if not posted.replayed:
        audit.record(
            work,
            principal,
            "user.topped_up",
            "transfer",
            posted.id,
            at=now,
            details={"user_id": user.id, "amount": str(value)},
        )
    if not posted.replayed:
        # Money came in: pay what the user's subscriptions owe, and restore them, in the
        # same transaction as the top-up.
        billing.collect_for_user(work, user.id)
    return _movement(posted, wallet, user.currency, "wallet")


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """One one-off charge asked by `principal` (the arguments of `charge`)."""

    principal: Principal
    user_ref: str
    amount: object
    description: str
    provider_id: str | None = None
    service: str | None = None
    transfer_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Charge:
    """A charge checked and ready to post: its transfer and what its answer needs."""

    request: ChargeRequest
    payer: Payer
    provider_id: str | None
    value: Decimal
    accounts: ChargeAccounts
    spec: TransferSpec


def charge(
    work: Work,
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
    postpaid users accrue it on their receivable, to be invoiced, and are refused when
    it would take what they owe past their credit limit.
    """
    request = ChargeRequest(
        principal, user_ref, amount, description, provider_id, service, transfer_id
    )
    (result,) = charge_many(work, [request])
    if isinstance(result, BillfoldError):
        raise result
    return result


def charge_many(
    work: Work, requests: Sequence[ChargeRequest]
) -> list[MoneyMovement | BillfoldError]:
    """Each request's charge (as `charge` makes it) or its refusal, in order: the group
    commit's charges at once, with one read of their funding sources and one posting
    of their transfers, each still checked on its own (two charges of one wallet are
    checked in turn). A refused charge writes nothing."""
    now = work.clock.now()
    results: list[MoneyMovement | BillfoldError | None] = [None] * len(requests)
    asked: list[tuple[int, str | None, str | None]] = []
    for n, request in enumerate(requests):
        try:
            asked.append((n, *_asked_charge(request)))
        except BillfoldError as error:
            results[n] = error
    found = _terms_rows(work, [(requests[n].user_ref, code, prov) for n, code, prov in asked])
    checked: list[tuple[int, ChargeRequest, Payer, str | None, Decimal, Decimal]] = []
    for (n, code, provider_ref), rows in zip(asked, found, strict=True):
        try:
            checked.append(
                (n, requests[n], *_checked_charge(requests[n], rows, code, provider_ref))
            )
        except BillfoldError as error:
            results[n] = error
    sources = prepaid.load_sources(work, [payer.id for _, _, payer, *_ in checked])
    charges: list[tuple[int, _Charge]] = []
    for n, request, payer, provider_ref, rate, value in checked:
        cur = payer.currency
        service_code = _service_code(request)
        accounts = ledger.charge_accounts(
            work,
            payer.id,
            cur.code,
            prepaid=payer.billing_mode == BillingMode.PREPAID,
            provider_id=provider_ref,
            now=now,
            sources=sources.accounts(payer.id, cur.code, service_code, provider_ref, now),
            credit_limit=to_units(payer.credit_limit, cur),
        )
        spec = charge_transfer(
            accounts,
            transfer_id=request.transfer_id or new_id("tr"),
            kind=TransferKind.CHARGE,
            currency=cur.code,
            amount=to_units(value, cur),
            commission_rate=rate,
            user_id=payer.id,
            provider_id=provider_ref,
            service=service_code,
            description=_description(request),
        )
        charges.append((n, _Charge(request, payer, provider_ref, value, accounts, spec)))
    posts = ledger.post_many(work, [c.spec for _, c in charges], now=now) if charges else []
    for (n, planned), posted in zip(charges, posts, strict=True):
        results[n] = (
            posted if isinstance(posted, BillfoldError) else _charged(work, planned, posted, now)
        )
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _description(request: ChargeRequest) -> str | None:
    return clean_text(request.description, param="description", max_length=MAX_DESCRIPTION_LENGTH)


def _service_code(request: ChargeRequest) -> str | None:
    return clean_text(request.service, param="service", max_length=100, required=False)


def _asked_charge(request: ChargeRequest) -> tuple[str | None, str | None]:
    """The service and the provider a charge names, or its first refusals (the acting
    provider, the description, the service's code), before anything is read."""
    provider_ref = acting_provider(request.principal, request.provider_id)
    _description(request)
    return _service_code(request), provider_ref


def _checked_charge(
    request: ChargeRequest, rows: Sequence[Any], code: str | None, provider_ref: str | None
) -> tuple[Payer, str | None, Decimal, Decimal]:
    """The payer, the provider charged, its commission rate and the amount, or the
    charge's refusal, in the order `charge` has always checked them."""
    principal, user_ref = request.principal, request.user_ref
    payer, provider_ref, rate = _charge_terms(principal, rows, user_ref, code, provider_ref)
    value = parse_amount(request.amount, allow_zero=False)
    to_units(value, payer.currency)
    if rate is None:
        raise NotFound(
            f"no provider {provider_ref}", code="provider_not_found", param="provider_id"
        )
    return payer, provider_ref, rate, value


def _charged(work: Work, planned: _Charge, posted: PostedTransfer, now: datetime) -> MoneyMovement:
    """The answer of a posted charge, and its audit entry (once: not for a replay)."""
    request, payer, spec = planned.request, planned.payer, planned.spec
    if not posted.replayed:
        audit.record(
            work,
            request.principal,
            "user.charged",
            "transfer",
            posted.id,
            at=now,
            details={
                "user_id": payer.id,
                "amount": str(planned.value),
                "provider_id": planned.provider_id,
            },
        )
    movement = _movement(
        posted,
        planned.accounts.payer,
        payer.currency,
        "wallet" if payer.billing_mode == BillingMode.PREPAID else "receivable",
        provider_share=spec_amount(spec, planned.accounts.earnings),
        commission=spec_amount(spec, planned.accounts.revenue),
    )
    return _private(movement, request.principal)


def _private(movement: MoneyMovement, principal: Principal) -> MoneyMovement:
    """The movement as `principal` may see it: a provider does not see the balance."""
    if not hides_personal_data(principal):
        return movement
    return replace(movement, balance_after=None)


_OWNER = select(services.c.provider_id).where(services.c.code == bindparam("code"))
_CHARGED = func.coalesce(_OWNER.scalar_subquery(), bindparam("provider", type_=String))
# What a one-off charge asks before it moves money, in one statement (docs/DECISIONS.md,
# 121): the user by id or external id, its service's owner, the commission of the
# provider charged, and whether the user is that provider's customer.
_CHARGE_TERMS = Prepared(
    select(
        users.c.id,
        users.c.currency,
        users.c.billing_mode,
        users.c.credit_limit,
        _OWNER.scalar_subquery().label("owner"),
        select(providers.c.commission_rate)
        .where(providers.c.id == _CHARGED)
        .scalar_subquery()
        .label("rate"),
        exists()
        .where(
            subscriptions.c.user_id == users.c.id,
            subscriptions.c.provider_id == _CHARGED,
            one_of(subscriptions.c.status, CURRENT),
        )
        .label("customer"),
    ).where((users.c.id == bindparam("ref")) | (users.c.external_id == bindparam("ref")))
)

# The same for many charges at once, on PostgreSQL: the n-th (reference, code, provider)
# of four arrays; the users found by id and by external id, as `by_ref` expects them.
_ASKED = (
    func.unnest(
        bindparam("ns", type_=postgresql.ARRAY(Integer)),
        bindparam("refs", type_=postgresql.ARRAY(String)),
        bindparam("codes", type_=postgresql.ARRAY(String)),
        bindparam("providers", type_=postgresql.ARRAY(String)),
    )
    .table_valued(
        column("n", Integer),
        column("ref", String),
        column("code", String),
        column("provider", String),
    )
    .render_derived(name="asked")
)
_MATCHED = union_all(
    *(
        select(_ASKED.c.n, _ASKED.c.code, _ASKED.c.provider, users.c.id.label("user_id"))
        .select_from(_ASKED)
        .join(users, key == _ASKED.c.ref)
        for key in (users.c.id, users.c.external_id)
    )
).subquery("matched")
_OWNER_OF = (
    select(services.c.provider_id)
    .where(services.c.code == _MATCHED.c.code)
    .correlate_except(services)
    .scalar_subquery()
)
_CHARGED_OF = func.coalesce(_OWNER_OF, _MATCHED.c.provider)
_CHARGE_TERMS_MANY = Prepared(
    select(
        _MATCHED.c.n,
        users.c.id,
        users.c.currency,
        users.c.billing_mode,
        users.c.credit_limit,
        _OWNER_OF.label("owner"),
        select(providers.c.commission_rate)
        .where(providers.c.id == _CHARGED_OF)
        .scalar_subquery()
        .label("rate"),
        exists()
        .where(
            subscriptions.c.user_id == users.c.id,
            subscriptions.c.provider_id == _CHARGED_OF,
            one_of(subscriptions.c.status, CURRENT),
        )
        .label("customer"),
    ).join_from(_MATCHED, users, users.c.id == _MATCHED.c.user_id)
)


def _terms_rows(work: Work, asked: Sequence[tuple[str, str | None, str | None]]) -> list[list[Any]]:
    """For each (user reference, service code, provider) asked, the rows of
    `_CHARGE_TERMS`: one statement for them all on PostgreSQL, one each on SQLite (where a
    statement costs microseconds)."""
    if len(asked) > 1 and work.dialect == "postgresql":
        found: list[list[Any]] = [[] for _ in asked]
        params = {
            "ns": list(range(len(asked))),
            "refs": [ref for ref, _, _ in asked],
            "codes": [code for _, code, _ in asked],
            "providers": [provider for _, _, provider in asked],
        }
        for row in _CHARGE_TERMS_MANY.rows(work.conn, params):
            found[row.n].append(row)
        return found
    return [
        _CHARGE_TERMS.rows(work.conn, {"ref": ref, "code": code, "provider": provider})
        for ref, code, provider in asked
    ]


def _charge_terms(
    principal: Principal,
    rows: Sequence[Any],
    user_ref: str,
    code: str | None,
    provider_id: str | None,
) -> tuple[Payer, str | None, Decimal | None]:
    """The payer, the provider charged and its commission rate (None: no such provider),
    with the refusals of `load_payer`, `_charged_service` and `require_customer`, in
    that order, from the rows of one statement instead of four."""
    row = by_ref(rows, user_ref)
    payer = payer_of(row)
    if code is not None:
        if row.owner is None or (provider_id is not None and row.owner != provider_id):
            raise NotFound(f"no service {code}", code="service_not_found", param="service")
        provider_id = str(row.owner)
    if provider_id is None:
        return payer, None, Decimal(1)
    if principal.role == Role.PROVIDER and not row.customer:
        raise NotFound(f"no user {user_ref}", code="user_not_found", param="user")
    return payer, provider_id, None if row.rate is None else Decimal(row.rate)


def refund(
    work: Work,
    principal: Principal,
    charge_id: str,
    *,
    amount: object | None = None,
    reason: str | None = None,
    transfer_id: str | None = None,
) -> MoneyMovement:
    """Gives back all or part of a charge; the provider and the platform give back their shares."""
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    text = clean_text(reason, param="reason", max_length=MAX_DESCRIPTION_LENGTH, required=False)
    now = work.clock.now()
    try:
        original = ledger.get_transfer(work, charge_id)
    except NotFound:
        raise NotFound(f"no charge {charge_id}", code="charge_not_found") from None
    # A provider refunds only its own charges, which it made to its customers. It may
    # still refund them after the user has left: a refund only gives money back.
    if principal.role == Role.PROVIDER and original.provider_id != principal.provider_id:
        raise NotFound(f"no charge {charge_id}", code="charge_not_found")
    if original.kind not in (TransferKind.CHARGE, TransferKind.CAPTURE):
        raise InvalidRequest("only charges can be refunded", code="not_a_charge")
    assert original.user_id is not None
    user = load_user(work, original.user_id)
    cur = user.currency
    own = {a.id: a.kind for a in ledger.accounts_of(work, OwnerType.USER, [user.id])}
    grant_accounts = prepaid.grant_accounts(work, user.id)
    payers = frozenset(
        p.account_id
        for p in original.postings
        if p.amount < 0 and (p.account_id in own or p.account_id in grant_accounts)
    )
    done = ledger.reversed_so_far(work, original.id)
    left = -sum(original.amount_on(a) + done.get(a, 0) for a in payers)
    units = left if amount is None else to_units(parse_amount(amount, allow_zero=False), cur)
    spec = ledger.refund_spec(
        work,
        original=original,
        transfer_id=transfer_id or new_id("tr"),
        payers=payers,
        amount=units,
        description=text or f"Refund of {original.id}",
    )
    posted = ledger.post(work, spec, now=now)
    if not posted.replayed:
        audit.record(
            work,
            principal,
            "charge.refunded",
            "transfer",
            posted.id,
            at=now,
            details={"charge_id": original.id, "units": units},
        )
        # A refunded package sale ends the package; money refunded to a grant that has
        # ended meanwhile goes on to its funder, as its expiry would have sent it.
        prepaid.end_holding_for_refund(work, original.id, now=now)
        prepaid.sweep_ended(work, sorted(payers & set(grant_accounts)), now=now)
    account = "wallet" if user.billing_mode == BillingMode.PREPAID else "receivable"
    kinds = own | grant_accounts
    movement = _user_movement(posted, {a: kinds[a] for a in payers}, cur)
    return _private(replace(movement, account=account), principal)


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
    work: Work,
    principal: Principal,
    user_ref: str,
    *,
    limit: int = 100,
    starting_after: str | None = None,
) -> Page[MoneyMovement]:
    """Every movement of the user's money, newest first: the consumption records."""
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    kinds = {a.id: a.kind for a in ledger.accounts_of(work, OwnerType.USER, [user.id])}
    kinds |= prepaid.grant_accounts(work, user.id)
    before = None
    if starting_after:
        before = ledger.seq_of(work, starting_after, ledger.TransferFilter(user_id=user.id))
        if before is None:
            raise InvalidRequest(
                "starting_after is not one of this user's transactions", param="starting_after"
            )
    # One row per transfer, however many of the user's accounts it touched (a top-up
    # that pays a debt moves both the receivable and the wallet).
    seqs = ledger.seqs_touching(work, list(kinds), limit=check_limit(limit) + 1, before_seq=before)
    loaded = {t.seq: t for t in ledger.load_transfers_by_seq(work, seqs[:limit])}
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
