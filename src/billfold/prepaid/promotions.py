"""Vouchers (代金券), discount coupons (折扣券) and promotional credit (赠送金).

A voucher redeemed and a credit granted are each a ledger account of their own (owned by
the grant, floor zero), funded by a GRANT transfer from whoever pays for it: the
platform's promotions account, or a provider's earnings for a provider's voucher. A charge
draws on them before cash (vouchers in scope, then credit, expiring first first), under
the ledger's locks, so concurrent charges never spend more than a grant holds. What an
expired grant has left goes back to its funder with an EXPIRY transfer.

A discount coupon is not money held: redeemed, it waits for the next purchase or invoice
in its scope that reaches its minimum, and takes its percentage off that one charge, paid
by its funder, so the provider's share and the commission stay those of the full price.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select, update

from billfold import ledger
from billfold.catalog import load_service
from billfold.core import audit
from billfold.core.access import (
    Principal,
    Role,
    acting_provider,
    require_admin,
    require_user_access,
)
from billfold.core.context import Work
from billfold.core.directory import BalanceView, UserView, load_provider, load_user
from billfold.core.text import Page, check_limit, clean_text
from billfold.domain.errors import Conflict, InvalidRequest, NotFound
from billfold.domain.ledger import (
    PLATFORM_OWNER_ID,
    AccountKind,
    OwnerType,
    Posting,
    TransferKind,
    TransferSpec,
)
from billfold.domain.money import (
    Currency,
    currency,
    from_units,
    parse_amount,
    to_units,
)
from billfold.domain.prepaid import discount_units, parse_percent
from billfold.ids import derived_id, new_id
from billfold.store.prepared import Prepared, any_of, one_of
from billfold.store.tables import coupons, grants

COUPON_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{2,63}$")
MAX_SERVICES = 50
PLATFORM = "platform"


@dataclass(frozen=True, slots=True)
class CouponView:
    id: str
    code: str
    provider_id: str | None
    kind: str
    currency: Currency
    amount: Decimal | None
    percent: Decimal | None
    max_discount: Decimal | None
    min_spend: Decimal | None
    services: list[str] | None
    expires_at: datetime | None
    max_redemptions: int | None
    redeemed: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class GrantView:
    id: str
    user_id: str
    kind: str
    currency: Currency
    amount: Decimal
    remaining: Decimal | None
    """What is left of a voucher or a credit (None for a discount coupon)."""
    coupon_code: str | None
    percent: Decimal | None
    funder: str
    services: list[str] | None
    expires_at: datetime | None
    status: str
    reason: str | None
    created_at: datetime


# --- coupons -------------------------------------------------------------------------


def create_coupon(
    work: Work,
    principal: Principal,
    *,
    code: object,
    kind: object,
    currency_code: object,
    amount: object = None,
    percent: object = None,
    max_discount: object = None,
    min_spend: object = None,
    services: object = None,
    expires_at: datetime | None = None,
    max_redemptions: object = None,
    provider_id: str | None = None,
) -> CouponView:
    """An admin's coupon (the platform pays for it) or a provider's (its own services
    only, paid from its earnings)."""
    owner = acting_provider(principal, provider_id)
    if owner is not None:
        load_provider(work, owner)  # An operator names a provider that exists (else 404).
    now = work.clock.now()
    text = clean_text(code, param="code", max_length=64)
    assert text is not None
    code_text = text.upper()
    if not COUPON_CODE.match(code_text):
        raise InvalidRequest("code must be 3 to 64 letters, digits, '_' or '-'", param="code")
    if kind not in ("amount", "percent"):
        raise InvalidRequest('kind must be "amount" (a voucher) or "percent"', param="kind")
    cur = currency(currency_code)
    units, pct, cap = _terms(kind, cur, amount, percent, max_discount)
    floor = None
    if min_spend is not None:
        floor = to_units(parse_amount(min_spend, param="min_spend"), cur, param="min_spend")
    scope = _scope(work, principal, services, owner)
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest("expires_at must be in the future", param="expires_at")
    limit = None
    if max_redemptions is not None:
        if (
            isinstance(max_redemptions, bool)
            or not isinstance(max_redemptions, int)
            or not (1 <= max_redemptions <= 10_000_000)
        ):
            raise InvalidRequest(
                "max_redemptions must be a whole number from 1 to 10000000",
                param="max_redemptions",
            )
        limit = max_redemptions
    if work.conn.execute(select(coupons.c.id).where(coupons.c.code == code_text)).first():
        raise Conflict(f"the code {code_text} is taken", code="coupon_code_taken", param="code")
    coupon_id = new_id("cpn")
    work.conn.execute(
        coupons.insert().values(
            id=coupon_id,
            code=code_text,
            provider_id=owner,
            kind=kind,
            currency=cur.code,
            amount=units,
            percent=None if pct is None else str(pct),
            max_discount=cap,
            min_spend=floor,
            services=None if scope is None else json.dumps(scope),
            expires_at=expires_at,
            max_redemptions=limit,
            redeemed=0,
            created_at=now,
        )
    )
    audit.record(
        work, principal, "coupon.created", "coupon", coupon_id, at=now,
        details={"code": code_text, "kind": kind, "provider_id": owner},
    )  # fmt: skip
    return get_coupon(work, principal, coupon_id)


def _terms(
    kind: object, cur: Currency, amount: object, percent: object, max_discount: object
) -> tuple[int | None, Decimal | None, int | None]:
    """(a voucher's units, a discount's percent, its cap) as the coupon's kind wants them."""
    if kind == "amount":
        if percent is not None or max_discount is not None:
            raise InvalidRequest("a voucher has an amount, not a percent", param="percent")
        if amount is None:
            raise InvalidRequest("a voucher needs an amount", param="amount")
        return to_units(parse_amount(amount, allow_zero=False), cur), None, None
    if amount is not None:
        raise InvalidRequest("a discount coupon has a percent, not an amount", param="amount")
    if percent is None:
        raise InvalidRequest("a discount coupon needs a percent", param="percent")
    cap = None
    if max_discount is not None:
        value = parse_amount(max_discount, param="max_discount", allow_zero=False)
        cap = to_units(value, cur, param="max_discount")
    return None, parse_percent(percent), cap


def _scope(
    work: Work, principal: Principal, services: object, owner: str | None
) -> list[str] | None:
    """The service codes a coupon is limited to (checked: a provider names only its own);
    None: every service (of the provider, for a provider's coupon)."""
    if services is None:
        return None
    if not isinstance(services, list) or not services or len(services) > MAX_SERVICES:
        raise InvalidRequest(
            f"services must be a list of 1 to {MAX_SERVICES} service codes", param="services"
        )
    codes = []
    for code in services:
        if not isinstance(code, str):
            raise InvalidRequest("services must be service codes", param="services")
        service = load_service(work, principal, code)
        if owner is not None and service.provider_id != owner:
            raise NotFound(f"no service {code}", code="service_not_found", param="services")
        codes.append(service.code)
    return sorted(set(codes))


def _coupon_view(row: Any) -> CouponView:
    cur = currency(row.currency)
    return CouponView(
        id=row.id,
        code=row.code,
        provider_id=row.provider_id,
        kind=row.kind,
        currency=cur,
        amount=_money(cur, row.amount),
        percent=None if row.percent is None else Decimal(row.percent),
        max_discount=_money(cur, row.max_discount),
        min_spend=_money(cur, row.min_spend),
        services=None if row.services is None else json.loads(row.services),
        expires_at=row.expires_at,
        max_redemptions=row.max_redemptions,
        redeemed=row.redeemed,
        created_at=row.created_at,
    )


def _money(cur: Currency, units: int | None) -> Decimal | None:
    return None if units is None else from_units(units, cur)


def get_coupon(work: Work, principal: Principal, coupon_id: str) -> CouponView:
    row = work.conn.execute(select(coupons).where(coupons.c.id == coupon_id)).one_or_none()
    if row is None or (
        principal.role != Role.ADMIN
        and not (principal.role == Role.PROVIDER and row.provider_id == principal.provider_id)
    ):
        raise NotFound(f"no coupon {coupon_id}", code="coupon_not_found")
    return _coupon_view(row)


def list_coupons(
    work: Work, principal: Principal, *, limit: int = 100, starting_after: str | None = None
) -> Page[CouponView]:
    """An admin's view: every coupon; a provider's: its own. Users redeem codes they were
    given, and never list them."""
    if principal.role == Role.PROVIDER:
        query = select(coupons).where(coupons.c.provider_id == principal.provider_id)
    else:
        require_admin(principal)
        query = select(coupons)
    if starting_after:
        query = query.where(coupons.c.id > starting_after)
    rows = work.conn.execute(query.order_by(coupons.c.id).limit(check_limit(limit) + 1)).all()
    return Page([_coupon_view(r) for r in rows[:limit]], len(rows) > limit)


# --- redeeming and granting ------------------------------------------------------------


def redeem(work: Work, principal: Principal, user_ref: str, code: object) -> GrantView:
    """The user redeems a code, once: a voucher becomes money held for its scope, a
    discount coupon waits for the purchase or invoice it applies to."""
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    text = clean_text(code, param="code", max_length=64)
    assert text is not None
    now = work.clock.now()
    row = work.conn.execute(select(coupons).where(coupons.c.code == text.upper())).one_or_none()
    # An expired, used-up or unknown code are told apart: the person typing it can act.
    if row is None:
        raise NotFound("no such code", code="coupon_not_found", param="code")
    if row.expires_at is not None and row.expires_at <= now:
        raise InvalidRequest("this code has expired", code="coupon_expired", param="code")
    if row.currency != user.currency.code:
        raise InvalidRequest(
            f"this code is for accounts in {row.currency}", code="currency_mismatch", param="code"
        )
    if work.conn.execute(
        select(grants.c.id).where(grants.c.coupon_id == row.id, grants.c.user_id == user.id)
    ).first():
        raise Conflict("this code was redeemed on this account already", code="already_redeemed")
    # Counted with a conditional update: concurrent redemptions of the last one cannot
    # both win (the loser's transaction changes nothing).
    counted = work.conn.execute(
        update(coupons)
        .where(
            coupons.c.id == row.id,
            (coupons.c.max_redemptions.is_(None))
            | (coupons.c.redeemed < coupons.c.max_redemptions),
        )
        .values(redeemed=coupons.c.redeemed + 1)
    ).rowcount
    if counted != 1:
        raise Conflict("this code has been used up", code="coupon_used_up", param="code")
    grant_id = derived_id("grant", row.id, user.id)
    funder = row.provider_id or PLATFORM
    kind = "voucher" if row.kind == "amount" else "discount"
    _insert_grant(
        work,
        grant_id=grant_id,
        user_id=user.id,
        kind=kind,
        cur=user.currency,
        units=row.amount or 0,
        coupon_id=row.id,
        funder=funder,
        services=row.services,
        expires_at=row.expires_at,
        reason=f"coupon {row.code}",
        now=now,
    )
    audit.record(
        work, principal, "coupon.redeemed", "grant", grant_id, at=now,
        details={"user_id": user.id, "coupon_id": row.id},
    )  # fmt: skip
    return get_grant(work, grant_id)


def grant_credit(
    work: Work,
    principal: Principal,
    user_ref: str,
    *,
    amount: object,
    expires_at: datetime | None,
    reason: object,
) -> GrantView:
    """Promotional credit for a user, paid for by the platform (admin): spent after
    vouchers and before cash, never paid out or withdrawn."""
    require_admin(principal)
    user = load_user(work, user_ref)
    now = work.clock.now()
    units = to_units(parse_amount(amount, allow_zero=False), user.currency)
    why = clean_text(reason, param="reason", max_length=500)
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest("expires_at must be in the future", param="expires_at")
    grant_id = new_id("grant")
    _insert_grant(
        work,
        grant_id=grant_id,
        user_id=user.id,
        kind="credit",
        cur=user.currency,
        units=units,
        coupon_id=None,
        funder=PLATFORM,
        services=None,
        expires_at=expires_at,
        reason=why,
        now=now,
    )
    audit.record(
        work, principal, "credit.granted", "grant", grant_id, at=now,
        details={"user_id": user.id, "units": units, "reason": why},
    )  # fmt: skip
    return get_grant(work, grant_id)


def _insert_grant(
    work: Work,
    *,
    grant_id: str,
    user_id: str,
    kind: str,
    cur: Currency,
    units: int,
    coupon_id: str | None,
    funder: str,
    services: str | None,
    expires_at: datetime | None,
    reason: str | None,
    now: datetime,
) -> None:
    account_id = None
    if kind in ("voucher", "credit"):
        account_kind = AccountKind.VOUCHER if kind == "voucher" else AccountKind.PROMOTIONAL_CREDITS
        account_id = ledger.ensure_account(
            work, OwnerType.GRANT, grant_id, account_kind, cur.code, now=now, floor=0
        )
        ledger.post(
            work,
            TransferSpec(
                id=f"tr_{grant_id}",
                kind=TransferKind.GRANT,
                postings=(
                    Posting(funder_account(work, funder, cur.code, now), cur.code, -units),
                    Posting(account_id, cur.code, units),
                ),
                user_id=user_id,
                provider_id=None if funder == PLATFORM else funder,
                description=f"{'Voucher' if kind == 'voucher' else 'Promotional credit'}"
                f"{f' ({reason})' if reason else ''}",
                reference=grant_id,
            ),
            now=now,
        )
    work.conn.execute(
        grants.insert().values(
            id=grant_id,
            user_id=user_id,
            kind=kind,
            currency=cur.code,
            amount=units,
            account_id=account_id,
            coupon_id=coupon_id,
            funder=funder,
            services=services,
            expires_at=expires_at,
            status="active",
            reason=reason,
            created_at=now,
        )
    )


def funder_account(work: Work, funder: str, currency_code: str, now: datetime) -> int:
    """Who pays for a promotion: the platform's promotions account (its cost, below zero),
    or a provider's earnings (a provider's coupon comes out of its own share)."""
    if funder == PLATFORM:
        return ledger.ensure_account(
            work,
            OwnerType.PLATFORM,
            PLATFORM_OWNER_ID,
            AccountKind.PROMOTIONAL_CREDITS,
            currency_code,
            now=now,
        )
    return ledger.ensure_account(
        work, OwnerType.PROVIDER, funder, AccountKind.PROVIDER_EARNINGS, currency_code, now=now
    )


def get_grant(work: Work, grant_id: str) -> GrantView:
    return _grant_views(work, [grant_id])[0]


def _grant_views(work: Work, ids: Sequence[str]) -> list[GrantView]:
    rows = work.conn.execute(
        select(grants, coupons.c.code.label("coupon_code"), coupons.c.percent)
        .outerjoin(coupons, coupons.c.id == grants.c.coupon_id)
        .where(grants.c.id.in_(list(ids)))
        .order_by(grants.c.created_at, grants.c.id)
    ).all()
    views = []
    for row in rows:
        cur = currency(row.currency)
        remaining = None
        if row.account_id is not None:
            remaining = from_units(ledger.balance(work, row.account_id).posted, cur)
        views.append(
            GrantView(
                id=row.id,
                user_id=row.user_id,
                kind=row.kind,
                currency=cur,
                amount=from_units(row.amount, cur),
                remaining=remaining,
                coupon_code=row.coupon_code,
                percent=None
                if row.percent is None or row.kind != "discount"
                else Decimal(row.percent),
                funder=row.funder,
                services=None if row.services is None else json.loads(row.services),
                expires_at=row.expires_at,
                status=row.status,
                reason=row.reason,
                created_at=row.created_at,
            )
        )
    return views


def list_grants(
    work: Work, principal: Principal, user_ref: str, *, include_ended: bool = False
) -> list[GrantView]:
    """The user's vouchers, credits and waiting discount coupons (that user, admin)."""
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    query = select(grants.c.id).where(grants.c.user_id == user.id)
    if not include_ended:
        query = query.where(grants.c.status == "active")
    return _grant_views(work, list(work.conn.execute(query).scalars()))


# --- spending ------------------------------------------------------------------------


def _in_scope(row: Any, service_code: str | None, provider_id: str | None) -> bool:
    """Whether a grant may pay for a charge of this service (None: a platform charge)."""
    if row.kind == "credit":
        return True
    if row.funder not in (PLATFORM, provider_id):
        return False
    if row.services is None:
        return True
    return service_code is not None and service_code in json.loads(row.services)


def _live(row: Any, now: datetime) -> bool:
    return row.expires_at is None or row.expires_at > now


@dataclass
class Sources:
    """The grants of a batch's users that charges may draw on, loaded once."""

    rows: dict[str, list[Any]]

    def accounts(
        self,
        user_id: str,
        currency_code: str,
        service_code: str | None,
        provider_id: str | None,
        now: datetime,
    ) -> tuple[int, ...]:
        """The accounts that pay a charge before cash, in order: vouchers in scope, then
        credit; the one expiring first first within each (the oldest on a tie)."""
        found = [
            row
            for row in self.rows.get(user_id, ())
            if row.currency == currency_code
            and row.account_id is not None
            and _live(row, now)
            and _in_scope(row, service_code, provider_id)
        ]
        found.sort(
            key=lambda r: (
                r.kind != "voucher",
                r.expires_at is None,
                r.expires_at or r.created_at,
                r.created_at,
                r.id,
            )
        )
        return tuple(int(row.account_id) for row in found)


_ACTIVE_SOURCES = select(grants).where(
    grants.c.user_id.in_(bindparam("user_ids", expanding=True)),
    grants.c.status == "active",
    grants.c.kind.in_(("voucher", "credit")),
)
# One user's, for a single charge (docs/DECISIONS.md, 118).
_ACTIVE_SOURCES_OF = Prepared(
    select(grants).where(
        grants.c.user_id == bindparam("user_id"),
        grants.c.status == "active",
        one_of(grants.c.kind, ("voucher", "credit")),
    )
)
_ACTIVE_SOURCES_ANY = Prepared(
    select(grants).where(
        any_of(grants.c.user_id, "user_ids"),
        grants.c.status == "active",
        one_of(grants.c.kind, ("voucher", "credit")),
    )
)
_LIVE_PARTS = Prepared(
    select(grants.c.kind, grants.c.account_id, grants.c.expires_at).where(
        grants.c.user_id == bindparam("user_id"),
        grants.c.currency == bindparam("currency"),
        one_of(grants.c.kind, ("voucher", "credit")),
        grants.c.created_at <= bindparam("moment"),
        grants.c.status == "active",
    )
)


def load_sources(work: Work, user_ids: Sequence[str]) -> Sources:
    """The active vouchers and credits of these users: one query for a whole batch."""
    rows: dict[str, list[Any]] = {}
    ordered = sorted(set(user_ids))
    if len(ordered) == 1:  # One user's, by the statement built for it (118).
        found = _ACTIVE_SOURCES_OF.rows(work.conn, {"user_id": ordered[0]})
        return Sources({ordered[0]: found} if found else {})
    if work.dialect == "postgresql":  # One array, whatever the number of users.
        for row in _ACTIVE_SOURCES_ANY.rows(work.conn, {"user_ids": ordered}):
            rows.setdefault(row.user_id, []).append(row)
        return Sources(rows)
    for offset in range(0, len(ordered), 500):
        for row in work.conn.execute(_ACTIVE_SOURCES, {"user_ids": ordered[offset : offset + 500]}):
            rows.setdefault(row.user_id, []).append(row)
    return Sources(rows)


def funding_sources(
    work: Work,
    user_id: str,
    currency_code: str,
    service_code: str | None,
    provider_id: str | None,
    *,
    now: datetime,
) -> tuple[int, ...]:
    """The accounts that pay one charge before the user's cash (see `Sources.accounts`)."""
    return load_sources(work, [user_id]).accounts(
        user_id, currency_code, service_code, provider_id, now
    )


@dataclass(frozen=True, slots=True)
class Discount:
    """A discount coupon claimed by one charge: who pays it, how much, and its words."""

    funder_account: int
    units: int
    code: str
    percent: Decimal


def claim_discount(
    work: Work,
    user_id: str,
    currency_code: str,
    service_code: str | None,
    provider_id: str | None,
    base_units: int,
    reference: str,
    *,
    now: datetime,
) -> Discount | None:
    """The best waiting discount coupon in scope for a charge of `base_units`, used up by
    it (its grant names `reference`, the sale's transfer or the invoice), or None."""
    rows = work.conn.execute(
        select(
            grants,
            coupons.c.code.label("code"),
            coupons.c.percent,
            coupons.c.max_discount,
            coupons.c.min_spend,
        )
        .join(coupons, coupons.c.id == grants.c.coupon_id)
        .where(
            grants.c.user_id == user_id,
            grants.c.kind == "discount",
            grants.c.status == "active",
            grants.c.currency == currency_code,
        )
    ).all()
    best: tuple[int, Any] | None = None
    for row in rows:
        if not _live(row, now) or not _in_scope(row, service_code, provider_id):
            continue
        off = discount_units(
            Decimal(row.percent), base_units, max_discount=row.max_discount, min_spend=row.min_spend
        )
        if off > 0 and (best is None or off > best[0]):
            best = (off, row)
    if best is None:
        return None
    off, row = best
    claimed = work.conn.execute(
        update(grants)
        .where(grants.c.id == row.id, grants.c.status == "active")
        .values(status="used", used_transfer_id=reference, closed_at=now)
    ).rowcount
    if claimed != 1:
        return None
    account = funder_account(work, row.funder, currency_code, now)
    return Discount(account, off, str(row.code), Decimal(row.percent))


def take_discount(
    work: Work,
    user_id: str,
    currency_code: str,
    service_code: str | None,
    provider_id: str | None,
    base_units: int,
    transfer_id: str,
    *,
    now: datetime,
) -> tuple[int, int] | None:
    """`claim_discount` as the charge transfer takes it: (funder account, units)."""
    found = claim_discount(
        work, user_id, currency_code, service_code, provider_id, base_units, transfer_id, now=now
    )
    return None if found is None else (found.funder_account, found.units)


def discount_funder(work: Work, reference: str, currency_code: str) -> int | None:
    """The account that pays the discount a coupon gave the charge `reference` (an
    invoice), or None when no coupon applied to it."""
    row = work.conn.execute(
        select(grants.c.funder).where(
            grants.c.used_transfer_id == reference, grants.c.kind == "discount"
        )
    ).first()
    if row is None:
        return None
    return funder_account(work, row.funder, currency_code, work.clock.now())


# --- balances, expiry ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parts:
    vouchers: int
    credits: int


def balance_parts(
    work: Work, user_id: str, currency_code: str, *, as_of: datetime | None = None
) -> Parts:
    """What the user holds in vouchers and in credit (ledger units), now or at a moment;
    an expired grant counts for nothing, even before its expiry transfer ran."""
    moment = as_of or work.clock.now()
    rows: Sequence[Any]
    if as_of is None:  # Now: the statement of the hot path, built once.
        rows = _LIVE_PARTS.rows(
            work.conn, {"user_id": user_id, "currency": currency_code, "moment": moment}
        )
    else:
        rows = work.conn.execute(
            select(grants.c.kind, grants.c.account_id, grants.c.expires_at).where(
                grants.c.user_id == user_id,
                grants.c.currency == currency_code,
                grants.c.kind.in_(("voucher", "credit")),
                grants.c.created_at <= moment,
            )
        ).all()
    live = [row for row in rows if row.expires_at is None or row.expires_at > moment]
    if as_of is None:
        now = ledger.balances(work, [row.account_id for row in live])
        posted = {account: b.posted for account, b in now.items()}
    else:
        posted = {row.account_id: ledger.balance(work, row.account_id, as_of=as_of).posted
                  for row in live}  # fmt: skip
    vouchers = sum(posted[row.account_id] for row in live if row.kind == "voucher")
    credits = sum(posted[row.account_id] for row in live if row.kind == "credit")
    return Parts(vouchers, credits)


def grant_accounts(work: Work, user_id: str) -> dict[int, str]:
    """{account id: "voucher" or "credit"} of every grant the user ever held."""
    return {
        int(row.account_id): str(row.kind)
        for row in work.conn.execute(
            select(grants.c.account_id, grants.c.kind).where(
                grants.c.user_id == user_id, grants.c.account_id.is_not(None)
            )
        )
    }


def expire_due(work: Work, *, now: datetime, limit: int = 500) -> int:
    """Ends the grants past their expiry: what a voucher or a credit has left goes back to
    its funder in an EXPIRY transfer; a waiting discount coupon just ends. Also sweeps an
    expired grant a refund paid back into. Safe to repeat; returns how many it ended."""
    rows = work.conn.execute(
        select(grants)
        .where(grants.c.status == "active", grants.c.expires_at <= now)
        .order_by(grants.c.expires_at, grants.c.id)
        .limit(limit)
    ).all()
    for row in rows:
        work.conn.execute(
            update(grants)
            .where(grants.c.id == row.id, grants.c.status == "active")
            .values(status="expired", closed_at=now)
        )
        sweep(work, row, now=now)
    return len(rows)


def sweep(work: Work, row: Any, *, now: datetime) -> None:
    """Moves what an ended grant's account holds back to its funder."""
    if row.account_id is None:
        return
    left = ledger.balance(work, row.account_id).posted
    if left <= 0:
        return
    seq = ledger.last_seq_on(work, row.account_id, ledger.TransferFilter())
    ledger.post(
        work,
        TransferSpec(
            id=f"tr_expiry_{row.id}_{seq}",
            kind=TransferKind.EXPIRY,
            postings=(
                Posting(row.account_id, row.currency, -left),
                Posting(funder_account(work, row.funder, row.currency, now), row.currency, left),
            ),
            user_id=row.user_id,
            provider_id=None if row.funder == PLATFORM else row.funder,
            description=f"Expired {'voucher' if row.kind == 'voucher' else 'promotional credit'}",
            reference=row.id,
        ),
        now=now,
    )


def sweep_ended(work: Work, account_ids: Sequence[int], *, now: datetime) -> None:
    """After a refund: any of these accounts that belongs to an ended grant is swept."""
    if not account_ids:
        return
    for row in work.conn.execute(
        select(grants).where(
            grants.c.account_id.in_(list(account_ids)), grants.c.status != "active"
        )
    ):
        sweep(work, row, now=now)


def user_balance(work: Work, user: UserView, *, as_of: datetime | None = None) -> BalanceView:
    """The balance a user is shown, with its parts: `available = cash - held +
    credit_limit + vouchers + credits`."""
    view = ledger.user_balance(work, user, as_of=as_of)
    parts = balance_parts(work, user.id, user.currency.code, as_of=as_of)
    if not parts.vouchers and not parts.credits:
        return view
    cur = user.currency
    vouchers, credits = from_units(parts.vouchers, cur), from_units(parts.credits, cur)
    return replace(
        view, vouchers=vouchers, credits=credits, available=view.available + vouchers + credits
    )


def standing_with_parts(
    work: Work, user_id: str, currency_code: str, credit_limit: int, *, postpaid: bool = False
) -> tuple[ledger.Standing, Parts]:
    """The user's standing (cash, holds, debt) and what vouchers and credit add to it."""
    return (
        ledger.user_standing(work, user_id, currency_code, credit_limit, postpaid=postpaid),
        balance_parts(work, user_id, currency_code),
    )


def spendable(work: Work, user_id: str, currency_code: str, credit_limit: int) -> int:
    """What the user may still spend now, in ledger units: cash less holds, plus the
    credit limit, vouchers and credit (the `available` of the balance)."""
    standing, parts = standing_with_parts(work, user_id, currency_code, credit_limit)
    return standing.available + parts.vouchers + parts.credits
