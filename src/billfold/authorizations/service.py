"""Hard limits in real time: entitlements ("may this user use this service now?") and
authorizations (hold the funds for a use before serving it, then capture or void).

A prepaid user in debt (usage the wallet could not cover) is suspended: entitlements say
no and authorizations are declined until a top-up pays the debt. An authorization prices
the asked quantity with the user's plan as it stands in the current period (tiers and free
units already used count), holds that amount, and expires on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import bindparam, select

from billfold import invoicing, ledger, metering, prepaid
from billfold.catalog import (
    current_subscriptions,
    hides_personal_data,
    is_customer,
    load_service,
    load_versions,
    require_customer,
    terms,
)
from billfold.core import audit
from billfold.core.access import Principal, Role, require_role, require_user_access
from billfold.core.context import Work
from billfold.core.directory import (
    BillingMode,
    Payer,
    UserView,
    arrears_terms,
    commission_rate,
    debt_stage,
    load_payer,
    load_payers,
    load_user,
)
from billfold.domain.arrears import GRACE, ArrearsTerms
from billfold.domain.errors import InsufficientFunds, InvalidRequest, NotFound
from billfold.domain.ledger import (
    AccountKind,
    HoldStatus,
    OwnerType,
    TransferKind,
    charge_transfer,
)
from billfold.domain.money import Currency, format_decimal, from_units, parse_amount, to_units
from billfold.domain.pricing import Event, Plan
from billfold.domain.rating import MetricState, rate, units_due
from billfold.ids import new_id
from billfold.ledger import HoldView
from billfold.store.prepared import Prepared
from billfold.store.tables import metrics

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Entitlements:
    user_id: str
    service: str
    has_access: bool
    reason: str
    currency: Currency
    available: Decimal | None
    debt: Decimal | None
    """None for a provider: a balance is the user's own business."""
    remaining: dict[str, Decimal]


@dataclass(frozen=True, slots=True)
class Authorization:
    id: str
    status: str
    reason: str | None
    currency: Currency
    amount: Decimal
    expires_at: datetime | None
    user_id: str
    service: str | None
    metric: str | None
    quantity: Decimal | None
    captured: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class _Means:
    """What a user may spend now, in ledger units, read once per request."""

    available: int
    """Cash less holds, plus the credit limit, vouchers and credit."""
    debt: int
    promotions: int
    """Vouchers and credit: counted towards the decision, paid first, never held (a hold
    reserves cash only)."""


Account = Payer | UserView
"""Whom an authorization is for: what it needs of the user (id, currency, billing mode,
credit limit), a `Payer` when it is decided, the whole view when a hold is shown again."""
_METRIC = Prepared(
    select(metrics).where(
        metrics.c.service_id == bindparam("service_id"), metrics.c.code == bindparam("code")
    )
)


def prefetch(work: Work, asked: Sequence[tuple[Principal, str, str | None]]) -> list[Any]:
    """What a group's authorizations, (asker, user reference, service code) each, ask
    one by one, read for them all at once on PostgreSQL: their payers, their
    subscriptions' phases and whether each user is the asker's customer, into
    `Work.memo`. The keys it added, to be forgotten once the group's authorizations are
    decided (a top-up later in the group may restore a subscription)."""
    if len(asked) < 2 or work.dialect != "postgresql":
        return []
    before = set(work.memo)
    payers = load_payers(work, sorted({ref for _, ref, _ in asked}))
    for ref, payer in payers.items():
        work.memo[("payer", ref)] = payer
    pairs: set[tuple[str, str]] = set()
    customers: set[tuple[str, str | None, str]] = set()
    for principal, ref, code in asked:
        found = payers.get(ref)
        if found is None or code is None:
            continue
        try:
            service = _service(work, principal, code)
        except NotFound:
            continue
        pairs.add((found.id, service.id))
        if principal.role == Role.PROVIDER:
            customers.add((found.id, principal.provider_id, service.id))
    phases = terms.plans_at(work, pairs)
    for pair in pairs:
        work.memo[("phases", *pair)] = phases.get(pair)
    if customers:
        current = current_subscriptions(work, sorted({user for user, _, _ in customers}))
        for customer in customers:
            work.memo[("customer", *customer)] = customer in current
    return [key for key in work.memo if key not in before]


def _service(work: Work, principal: Principal, code: str) -> Any:
    """The service as `principal` may see it, read once per transaction."""
    return _remembered(
        work, ("service", principal, code), lambda: load_service(work, principal, code)
    )


def _prefetched(work: Work, key: tuple[object, ...], read: Callable[[], T]) -> T:
    """What `prefetch` read for `key`, or `read()`, not kept: unlike the catalog, a
    subscription may change later in the transaction."""
    if key in work.memo:
        return work.memo[key]  # type: ignore[no-any-return]
    return read()


def _remembered(work: Work, key: tuple[object, ...], read: Callable[[], T]) -> T:
    """`read()`, once per transaction for `key` (`Work.memo`): the requests of a group
    commit mostly ask about one service, its plan and its metric."""
    if key in work.memo:
        return work.memo[key]  # type: ignore[no-any-return]
    found = work.memo[key] = read()
    return found


def _standing(work: Work, user: Account) -> _Means:
    limit = to_units(user.credit_limit, user.currency)
    postpaid = user.billing_mode == BillingMode.POSTPAID
    standing, parts = prepaid.standing_with_parts(
        work, user.id, user.currency.code, limit, postpaid=postpaid
    )
    # A prepaid user's debt is what the wallet could not cover; a postpaid user's is
    # what open invoices still ask for past their due date.
    debt = invoicing.overdue(work, user.id) if postpaid else max(standing.owed, 0)
    promotions = parts.vouchers + parts.credits
    return _Means(standing.available + promotions, debt, promotions)


@dataclass(frozen=True, slots=True)
class _Pricing:
    """What prices a user's use of a service now: a subscription's plan or the default."""

    service: Any
    plan: Plan | None
    plan_id: str | None
    version: int
    period_start: datetime | None
    subscription_status: str | None

    def state(self, work: Work, user_id: str, metric_id: str) -> tuple[MetricState, int]:
        """The usage so far this period, as metering will rate more of it."""
        assert self.plan_id is not None and self.period_start is not None
        return metering.period_state(
            work, user_id, metric_id, self.period_start, self.plan_id, self.version
        )


def _service_plan(
    work: Work,
    principal: Principal,
    service_code: str,
    now: datetime,
    user_id: str,
    asked_as: str,
) -> _Pricing:
    """The plan and usage period that price the user's use of the service now: the same
    terms metering will rate that usage under (billfold.catalog.terms)."""
    # A user may ask about its own access to any service it can see.
    service = _service(work, principal, service_code)
    if service.status != "active":
        raise NotFound(f"no service {service_code}", code="service_not_found", param="service")
    if principal.role == Role.PROVIDER and service.provider_id != principal.provider_id:
        raise NotFound(f"no service {service_code}", code="service_not_found", param="service")
    known = work.memo.get(("customer", user_id, principal.provider_id, service.id))
    require_customer(work, principal, user_id, asked=asked_as, service_id=service.id, known=known)
    pair = (user_id, service.id)
    phases = _prefetched(work, ("phases", *pair), lambda: terms.plans_at(work, {pair}).get(pair))
    found = terms.terms_at(phases, now)
    plan_id = found.plan_id
    version = (
        _remembered(
            work, ("versions", plan_id), lambda: load_versions(work, [plan_id])[plan_id]
        ).at(now)
        if plan_id
        else None
    )
    return _Pricing(
        service,
        version.plan if version else None,
        found.plan_id,
        version.version if version else 0,
        found.period[0] if found.period else None,
        found.subscription.status if found.subscription else None,
    )


def entitlements(
    work: Work, principal: Principal, user_ref: str, service_code: str
) -> Entitlements:
    now = work.clock.now()
    user = load_user(work, user_ref)
    if principal.role == Role.USER:
        require_user_access(principal, user.id, asked=user_ref)
    else:
        require_role(principal, Role.ADMIN, Role.PROVIDER)
    pricing = _service_plan(work, principal, service_code, now, user.id, user_ref)
    service, plan = pricing.service, pricing.plan
    means = _standing(work, user)
    available, debt = means.available, means.debt
    remaining: dict[str, Decimal] = {}
    if plan is not None:
        metric_ids = {
            row.code: row.id
            for row in work.conn.execute(
                select(metrics.c.code, metrics.c.id).where(metrics.c.service_id == service.id)
            )
        }
        for charge in plan.charges:
            free = getattr(charge, "free_units", Decimal(0))
            if not free or charge.metric not in metric_ids:
                continue
            state, _ = pricing.state(work, user.id, metric_ids[charge.metric])
            remaining[charge.metric] = max(free - state.quantity, Decimal(0))
    # What the user's resource packages have left is usage that costs nothing more.
    for metric, left in prepaid.remaining_now(work, user.id, service.id).items():
        remaining[metric] = remaining.get(metric, Decimal(0)) + left
    if user.status != "active":
        reason = "user_inactive"
    elif plan is None:
        reason = "not_subscribed"
    elif pricing.subscription_status == "suspended" or (
        debt > 0 and debt_stage(work, user.id, debt, arrears_terms(work, plan.arrears)) != GRACE
    ):
        reason = "suspended"
    elif debt > 0:
        reason = "arrears_grace"  # Usage goes on while the grace period lasts.
    elif available <= 0 and not any(remaining.values()):
        # Prepaid: nothing left to spend; postpaid: the credit limit is reached.
        reason = "insufficient_funds"
    else:
        reason = "ok"
    # A provider learns whether its customer may use its service, not their balance.
    hidden = hides_personal_data(principal)
    return Entitlements(
        user.id,
        service.code,
        reason in ("ok", "arrears_grace"),
        reason,
        user.currency,
        None if hidden else from_units(available, user.currency),
        None if hidden else from_units(debt, user.currency),
        remaining,
    )


def authorize(
    work: Work,
    principal: Principal,
    *,
    user_ref: str,
    service_code: str | None = None,
    metric_code: str | None = None,
    quantity: object = None,
    amount: object = None,
    expires_in_s: int | None = None,
    authorization_id: str | None = None,
) -> Authorization:
    """Approves (and holds the funds for) a use now, or declines it with the reason."""
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    by_quantity = quantity is not None or metric_code is not None
    if by_quantity == (amount is not None):
        raise InvalidRequest(
            "give either service, metric and quantity, or an amount", param="quantity"
        )
    ttl = _lifetime(work, expires_in_s)
    now = work.clock.now()
    auth_id = authorization_id or new_id("auth")
    # Nothing to decrypt (docs/DECISIONS.md, 117); read with its group's, when it has one.
    user = _prefetched(work, ("payer", user_ref), lambda: load_payer(work, user_ref))
    cur = user.currency
    service, asked, service_terms = None, None, None
    if by_quantity:
        if not service_code or not metric_code or quantity is None:
            raise InvalidRequest(
                "an authorization by quantity needs service, metric and quantity",
                param="service",
            )
        asked = parse_amount(quantity, param="quantity", allow_zero=False)
        priced = _price_use(work, principal, user, user_ref, service_code, metric_code, asked, now)
        if isinstance(priced, str):
            return _declined(auth_id, priced, user, service_code, metric_code, asked)
        service, units, service_terms = priced
    else:
        # A hold by amount is on no service: the user must be a customer of the provider.
        require_customer(work, principal, user.id, asked=user_ref)
        units = to_units(parse_amount(amount, allow_zero=False), cur)
    means = _standing(work, user)
    available, debt = means.available, means.debt
    terms = arrears_terms(work, service_terms)
    if debt > 0 and debt_stage(work, user.id, debt, terms) != GRACE:
        return _declined(auth_id, "suspended", user, service_code, metric_code, asked, units)
    if units > available:
        return _declined(
            auth_id, "insufficient_funds", user, service_code, metric_code, asked, units
        )
    # The hold is on the payer: a prepaid user's wallet (down to its floor), a postpaid
    # user's receivable (down to minus the credit limit, with usage and open invoices).
    is_prepaid = user.billing_mode == BillingMode.PREPAID
    payer = ledger.ensure_account(
        work,
        OwnerType.USER,
        user.id,
        AccountKind.WALLET if is_prepaid else AccountKind.RECEIVABLE,
        cur.code,
        now=now,
    )
    provider_id = service.provider_id if service else principal.provider_id
    try:
        # The balance read above was not locked; the hold checks again under the
        # account's lock, and loses to a concurrent spender with a plain decline.
        hold = ledger.create_hold(
            work,
            hold_id=auth_id,
            account_id=payer,
            amount=max(units - means.promotions, 0),
            limit=None if is_prepaid else -to_units(user.credit_limit, cur),
            expires_at=now + timedelta(seconds=ttl),
            now=now,
            user_id=user.id,
            provider_id=provider_id,
            description="authorization",
            service=service_code,
            metric=metric_code,
            quantity=None if asked is None else format_decimal(asked),
            fresh=authorization_id is None,
        )
    except InsufficientFunds:
        return _declined(
            auth_id, "insufficient_funds", user, service_code, metric_code, asked, units
        )
    audit.record(
        work, principal, "authorization.approved", "authorization", auth_id, at=now,
        details={"user_id": user.id, "units": units},
    )  # fmt: skip
    return _view(hold, user, from_units(units, cur))


def _lifetime(work: Work, expires_in_s: int | None) -> int:
    """How long a hold lives: as asked, or the configured default; at most the configured
    maximum (BILLFOLD_HOLD_MAX_TTL_S, a day by default), so that no hold freezes a
    balance for long."""
    longest = work.settings.hold_max_ttl_s
    ttl = expires_in_s or min(work.settings.hold_ttl_s, longest)
    if not 1 <= ttl <= longest:
        raise InvalidRequest(f"expires_in must be 1 to {longest} seconds", param="expires_in")
    return ttl


def _price_use(
    work: Work,
    principal: Principal,
    user: Account,
    user_ref: str,
    service_code: str,
    metric_code: str,
    asked: Decimal,
    now: datetime,
) -> tuple[Any, int, ArrearsTerms | None] | str:
    """(the service, what `asked` more of the metric costs now in ledger units, the plan's
    arrears terms), priced on
    top of the period's usage so far under the terms metering will charge it under; or the
    reason to decline (not subscribed, suspended)."""
    pricing = _service_plan(work, principal, service_code, now, user.id, user_ref)
    service, plan = pricing.service, pricing.plan
    metric = _remembered(
        work,
        ("metric", service.id, metric_code),
        lambda: _METRIC.first(work.conn, {"service_id": service.id, "code": metric_code}),
    )
    if metric is None:
        raise NotFound(
            f"service {service_code} has no metric {metric_code}",
            code="metric_not_found",
            param="metric",
        )
    if plan is None:
        return "not_subscribed"
    if pricing.subscription_status == "suspended":
        return "suspended"
    assert pricing.period_start is not None
    state, charged = pricing.state(work, user.id, metric.id)
    if metric.aggregation in ("count", "sum"):
        # What the user's packages cover is not priced (metering will draw on them).
        covered = prepaid.remaining_now(work, user.id, service.id).get(metric_code, Decimal(0))
        asked = max(asked - covered, Decimal(0))
        if asked == 0:
            return service, 0, plan.arrears
    value = Decimal(1) if metric.aggregation in ("count", "unique_count") else asked
    events = [Event(metric_code, value, now)] * (int(asked) if metric.aggregation == "count" else 1)
    after = rate(plan, metric_code, metric.aggregation, state, events)
    due = max(units_due(after.amount, user.currency.ledger_scale) - charged, 0)
    return service, due, plan.arrears


def _declined(
    auth_id: str,
    reason: str,
    user: Account,
    service: str | None,
    metric: str | None,
    quantity: Decimal | None,
    units: int = 0,
) -> Authorization:
    return Authorization(
        auth_id,
        "declined",
        reason,
        user.currency,
        from_units(units, user.currency),
        None,
        user.id,
        service,
        metric,
        quantity,
    )


def _view(hold: HoldView, user: Account, amount: Decimal | None = None) -> Authorization:
    status = {"pending": "approved"}.get(hold.status, hold.status)
    return Authorization(
        hold.id,
        status,
        None,
        user.currency,
        amount if amount is not None else from_units(hold.amount, user.currency),
        hold.expires_at,
        user.id,
        hold.service,
        hold.metric,
        None if hold.quantity is None else Decimal(hold.quantity),
        from_units(hold.captured, user.currency),
    )


def _own_hold(
    work: Work, principal: Principal, auth_id: str, *, customer: bool = False
) -> tuple[HoldView, Payer]:
    """The authorization, if it is the asker's; with `customer`, only while its user is
    still the provider's customer (a void, which frees the user's money, needs not)."""
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    try:
        hold = ledger.get_hold(work, auth_id)
    except NotFound:
        raise NotFound(f"no authorization {auth_id}", code="authorization_not_found") from None
    if (
        hold.description != "authorization"
        or hold.user_id is None
        or (principal.role == Role.PROVIDER and hold.provider_id != principal.provider_id)
    ):
        raise NotFound(f"no authorization {auth_id}", code="authorization_not_found")
    if (
        customer
        and principal.role == Role.PROVIDER
        and not is_customer(work, hold.user_id, hold.provider_id or "")
    ):
        raise NotFound(f"no authorization {auth_id}", code="authorization_not_found")
    return hold, load_payer(work, hold.user_id)


def capture(
    work: Work,
    principal: Principal,
    auth_id: str,
    *,
    quantity: object = None,
    amount: object = None,
) -> Authorization:
    """Turns the hold into a charge: the usage (by quantity) or an amount, up to the hold."""
    now = work.clock.now()
    hold, user = _own_hold(work, principal, auth_id, customer=True)
    # What was asked is checked first: a malformed capture is a 400 even on a hold that
    # is already captured.
    if quantity is not None:
        parse_amount(quantity, param="quantity")
    if amount is not None:
        parse_amount(amount, allow_zero=False)
    if quantity is not None and amount is not None:
        raise InvalidRequest("give a quantity or an amount, not both", param="amount")
    if hold.status == "captured":
        return _view(hold, user)  # Capturing again changes nothing.
    if hold.status != "pending" or hold.expires_at <= now:
        state = "expired" if hold.status in ("pending", "expired") else hold.status
        raise InvalidRequest(
            f"the authorization is {state} and cannot be captured",
            code="authorization_expired" if state == "expired" else "authorization_voided",
        )
    if hold.metric is not None:
        used = (
            hold.quantity
            if quantity is None
            else format_decimal(parse_amount(quantity, param="quantity"))
        )
        assert hold.service is not None and used is not None and hold.quantity is not None
        if Decimal(used) > Decimal(hold.quantity):
            # A capture never exceeds its authorization: more usage is reported as events
            # (and charged like any usage), not slipped into a hold priced for less.
            raise InvalidRequest(
                f"the capture is for more than was authorized ({hold.quantity})",
                code="capture_exceeds_hold",
                param="quantity",
            )
        if Decimal(used) > 0:
            # The usage is recorded and charged; its charge releases the hold, so it
            # can spend what was reserved for it (see metering.ingest_in).
            metering.ingest_in(
                work,
                principal
                if principal.role == Role.PROVIDER
                else Principal(principal.key_id, Role.ADMIN),
                [
                    {
                        "id": auth_id,
                        "user": user.id,
                        "service": hold.service,
                        "metric": hold.metric,
                        "value": used,
                        "timestamp": now.isoformat(),
                    }
                ],
                capture_hold=auth_id,
            )
        else:
            ledger.release_hold(work, auth_id, now=now, status=HoldStatus.CAPTURED)
    else:
        units = (
            hold.amount
            if amount is None
            else to_units(parse_amount(amount, allow_zero=False), user.currency)
        )
        _capture_amount(work, hold, user, units, now)
    hold = ledger.get_hold(work, auth_id)
    audit.record(
        work, principal, "authorization.captured", "authorization", auth_id, at=now,
        details={"user_id": user.id, "units": hold.captured},
    )  # fmt: skip
    return _view(hold, user)


def _capture_amount(work: Work, hold: HoldView, user: Account, units: int, now: datetime) -> None:
    """Charges `units` of an amount hold, releasing the hold in the same transfer."""
    rate = commission_rate(work, hold.provider_id) if hold.provider_id else Decimal(1)
    accounts = ledger.charge_accounts(
        work,
        user.id,
        user.currency.code,
        # An amount hold is on the payer: a prepaid wallet, a postpaid receivable.
        prepaid=user.billing_mode == BillingMode.PREPAID,
        provider_id=hold.provider_id,
        now=now,
    )
    assert accounts.payer == hold.account_id
    spec = charge_transfer(
        accounts,
        transfer_id=f"tr_{hold.id}",
        kind=TransferKind.CAPTURE,
        currency=user.currency.code,
        amount=units,
        commission_rate=rate,
        user_id=user.id,
        provider_id=hold.provider_id,
        description="authorized charge",
        hold_id=hold.id,
    )
    ledger.post(work, spec, now=now)


def void(work: Work, principal: Principal, auth_id: str) -> Authorization:
    now = work.clock.now()
    hold, user = _own_hold(work, principal, auth_id)
    hold = ledger.void_hold(work, auth_id, now=now)
    audit.record(work, principal, "authorization.voided", "authorization", auth_id, at=now)
    return _view(hold, user)


def get_authorization(work: Work, principal: Principal, auth_id: str) -> Authorization:
    hold, user = _own_hold(work, principal, auth_id)
    return _view(hold, user)
