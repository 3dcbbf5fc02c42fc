"""Subscriptions: subscribe, change plan, cancel; and which plan prices a user's usage.

Proration follows API.md: by days, against the whole period the partial one belongs to,
rounded half-up on the invoice line (see `billfold.domain.billing`). An immediate change
credits the unused days of the old plan's advance fee and charges the same days on the
new plan; both lines go on the current period's invoice and are settled at once, so a
prepaid wallet that cannot cover an upgrade refuses it and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import select, update

from billfold.catalog import is_customer, was_customer
from billfold.core import audit
from billfold.core.access import Principal, Role
from billfold.core.context import Work
from billfold.core.directory import user_row
from billfold.domain.billing import Schedule, parse_anchor, period_fraction, prorate
from billfold.domain.errors import Conflict, InsufficientFunds, InvalidRequest, NotFound
from billfold.domain.periods import calendar_period
from billfold.domain.pricing import Plan, parse_time
from billfold.ids import new_id
from billfold.invoicing import (
    LIVE,
    Batch,
    Line,
    Phase,
    Sub,
    advance,
    load_subs,
    money,
    usage_rows,
)
from billfold.store.tables import plans, services, subscription_phases, subscriptions

MAX_BACKDATE: Final = timedelta(days=31)
TIMINGS: Final = ("immediate", "period_end")


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    id: str
    user: str
    plan: str
    service: str
    status: str
    billing_anchor: str
    interval: str
    interval_count: int
    started_at: datetime
    trial_end: datetime | None
    current_period_start: datetime
    current_period_end: datetime
    pending_plan: str | None
    cancel_at_period_end: bool
    ended_at: datetime | None
    past_due_since: datetime | None
    created_at: datetime


def _plan_row(work: Work, code: object) -> Any:
    if not isinstance(code, str) or not code:
        raise InvalidRequest("plan must be a plan code", param="plan")
    row = work.conn.execute(
        select(plans, services.c.code.label("service_code"))
        .join(services, services.c.id == plans.c.service_id)
        .where(plans.c.code == code)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no plan {code}", code="plan_not_found", param="plan")
    return row


def _can_act(principal: Principal, user_id: str, provider_id: str) -> bool:
    if principal.role == Role.ADMIN:
        return True
    if principal.role == Role.PROVIDER:
        return principal.provider_id == provider_id
    return principal.user_id == user_id


def _view(work: Work, row: Any) -> SubscriptionView:
    codes = {
        r.id: r.code
        for r in work.conn.execute(
            select(plans.c.id, plans.c.code).where(
                plans.c.id.in_([row.plan_id, row.pending_plan_id or row.plan_id])
            )
        )
    }
    service = work.conn.execute(
        select(services.c.code).where(services.c.id == row.service_id)
    ).scalar_one()
    period = (row.current_period_start, row.current_period_end)
    if row.interval == "none" and row.status in LIVE:
        # No renewals move it: the current period is the calendar month of now.
        start, end = calendar_period("none", 1, work.clock.now())
        period = (max(start, row.started_at), end)
    return SubscriptionView(
        id=row.id,
        user=row.user_id,
        plan=codes[row.plan_id],
        service=service,
        status=row.status,
        billing_anchor=row.billing_anchor,
        interval=row.interval,
        interval_count=row.interval_count,
        started_at=row.started_at,
        trial_end=row.trial_end,
        current_period_start=period[0],
        current_period_end=period[1],
        pending_plan=codes.get(row.pending_plan_id) if row.pending_plan_id else None,
        cancel_at_period_end=bool(row.cancel_at_period_end),
        ended_at=row.ended_at,
        past_due_since=row.past_due_since,
        created_at=row.created_at,
    )


def create(
    work: Work,
    principal: Principal,
    *,
    user_ref: str,
    plan_code: object,
    service_code: object = None,
    start: object = None,
    billing_anchor: object = None,
) -> SubscriptionView:
    """Subscribes a user to a plan (or to a service's default plan): the first period
    opens, and its fee paid in advance is taken (a prepaid wallet that cannot cover it
    refuses the subscription). A pay-as-you-go plan opens no period: its usage is rated
    as it comes, in calendar months."""
    now = work.clock.now()
    plan_row = _plan_row(work, plan_code) if plan_code is not None else None
    if plan_row is None:
        plan_row = _default_plan_row(work, principal, service_code)
    elif service_code is not None and service_code != plan_row.service_code:
        raise InvalidRequest(
            f"plan {plan_row.code} is not a plan of service {service_code}", param="service"
        )
    user = _subscriber(work, principal, user_ref, plan_row)
    moment = _start(start, now)
    batch = Batch(work, now)
    batch.catalog.load(work, [plan_row.id], [plan_row.provider_id])
    plan = batch.catalog.plan(plan_row.id, moment)
    _check_plan(plan, plan_row.code, user)
    if plan.interval == "none" and billing_anchor not in (None, "calendar"):
        raise InvalidRequest(
            "a pay-as-you-go plan has no billing periods to anchor; its usage counts in "
            "calendar months",
            param="billing_anchor",
        )
    anchor = "calendar" if plan.interval == "none" else parse_anchor(billing_anchor, plan.interval)
    _make_room(work, user.id, plan_row, plan, moment, now)
    if plan.interval == "none":
        return _create_payg(work, principal, user, plan_row, moment, now)
    trial_end = moment + timedelta(days=plan.trial_days) if plan.trial_days else None
    origin = trial_end or moment
    schedule = Schedule(plan.interval, plan.interval_count, anchor, origin)
    end = trial_end or schedule.billing_period(moment)[1]
    sub_id = _insert(
        work,
        user,
        plan_row,
        moment,
        now,
        status="trialing" if trial_end else "active",
        interval=plan.interval,
        interval_count=plan.interval_count,
        billing_anchor=anchor,
        trial_end=trial_end,
        billing_origin=origin,
        current_period_start=moment,
        current_period_end=end,
    )
    _bill_first_periods(batch, work, sub_id, moment, end, now)
    return _created(work, principal, sub_id, user.id, plan_row.code, anchor, now)


def _created(
    work: Work,
    principal: Principal,
    sub_id: str,
    user_id: str,
    plan: str,
    anchor: str,
    now: datetime,
) -> SubscriptionView:
    audit.record(
        work,
        principal,
        "subscription.created",
        "subscription",
        sub_id,
        at=now,
        details={"user_id": user_id, "plan": plan, "anchor": anchor},
    )
    return get(work, principal, sub_id)


def _insert(
    work: Work, user: Any, plan_row: Any, moment: datetime, now: datetime, **terms: Any
) -> str:
    """A new subscription row, with `terms` (status, interval, periods), and its first
    phase, on `plan_row` from `moment`."""
    sub_id = new_id("sub")
    work.conn.execute(
        subscriptions.insert().values(
            id=sub_id,
            user_id=user.id,
            provider_id=plan_row.provider_id,
            service_id=plan_row.service_id,
            plan_id=plan_row.id,
            currency=user.currency,
            started_at=moment,
            pending_plan_id=None,
            cancel_at_period_end=0,
            ended_at=None,
            past_due_since=None,
            next_retry_at=None,
            created_at=now,
            updated_at=now,
            **terms,
        )
    )
    work.conn.execute(
        subscription_phases.insert().values(
            subscription_id=sub_id, plan_id=plan_row.id, starts_at=moment, ends_at=None
        )
    )
    return sub_id


def _end_open_phase(work: Work, sub_id: str, at: datetime) -> None:
    """Ends the subscription's phase in force at `at`."""
    work.conn.execute(
        update(subscription_phases)
        .where(
            subscription_phases.c.subscription_id == sub_id,
            subscription_phases.c.ends_at.is_(None),
        )
        .values(ends_at=at)
    )


def _create_payg(
    work: Work, principal: Principal, user: Any, plan_row: Any, moment: datetime, now: datetime
) -> SubscriptionView:
    """A pay-as-you-go subscription: no fee, no renewals, no invoice of its own; it is
    the consent under which the provider meters and charges the user's usage."""
    start, end = calendar_period("none", 1, moment)
    sub_id = _insert(
        work,
        user,
        plan_row,
        moment,
        now,
        status="active",
        interval="none",
        interval_count=1,
        billing_anchor="calendar",
        trial_end=None,
        billing_origin=moment,
        current_period_start=max(start, moment),
        current_period_end=end,
    )
    return _created(work, principal, sub_id, user.id, plan_row.code, "calendar", now)


def _default_plan_row(work: Work, principal: Principal, service_code: object) -> Any:
    """The plan a user gets when subscribing to a service without naming one."""
    if service_code is None:
        raise InvalidRequest("give a plan, or a service to get its default plan", param="plan")
    if not isinstance(service_code, str) or not service_code:
        raise InvalidRequest("service must be a service code", param="service")
    row = work.conn.execute(
        select(services.c.default_plan_id, services.c.status).where(services.c.code == service_code)
    ).one_or_none()
    if row is None or row.status != "active":
        raise NotFound(f"no service {service_code}", code="service_not_found", param="service")
    if row.default_plan_id is None:
        raise InvalidRequest(
            f"service {service_code} has no default plan; name a plan",
            code="no_default_plan",
            param="plan",
        )
    code = work.conn.execute(
        select(plans.c.code).where(plans.c.id == row.default_plan_id)
    ).scalar_one()
    return _plan_row(work, code)


def _subscriber(work: Work, principal: Principal, user_ref: str, plan_row: Any) -> Any:
    """The user to subscribe, if the asker may subscribe them to this plan: the user
    itself or an admin; the plan's provider only once the user is its customer (the
    first subscription is the user's consent, never the provider's doing)."""
    user = user_row(work, user_ref)
    if not _can_act(principal, user.id, plan_row.provider_id) or (
        principal.role == Role.PROVIDER and not is_customer(work, user.id, plan_row.provider_id)
    ):
        raise NotFound(f"no user {user_ref}", code="user_not_found", param="user")
    if principal.role == Role.USER and plan_row.status != "active":
        raise NotFound(f"no plan {plan_row.code}", code="plan_not_found", param="plan")
    if plan_row.status != "active":
        raise Conflict(f"plan {plan_row.code} is retired", code="plan_retired", param="plan")
    return user


def _start(start: object, now: datetime) -> datetime:
    """When the subscription starts: now, or up to MAX_BACKDATE in the past."""
    moment = now if start is None else parse_time(start, "start")
    if moment > now + timedelta(minutes=5):
        raise InvalidRequest("start must not be in the future", param="start")
    if moment < now - MAX_BACKDATE:
        raise InvalidRequest("start may be at most 31 days in the past", param="start")
    return moment


def _check_plan(plan: Plan, plan_code: object, user: Any) -> None:
    if plan.currency.code != user.currency:
        raise InvalidRequest(
            f"plan {plan_code} is priced in {plan.currency.code}, the user pays in {user.currency}",
            code="currency_mismatch",
            param="plan",
        )
    if user.status != "active":
        raise Conflict("the user is not active", code="user_inactive", param="user")


def _make_room(
    work: Work, user_id: str, plan_row: Any, plan: Plan, moment: datetime, now: datetime
) -> None:
    """One live subscription per user and service: a second one is a plan change. A
    pay-as-you-go subscription gives way to a recurring plan of its service, which then
    prices the usage from its start."""
    taken = work.conn.execute(
        select(subscriptions).where(
            subscriptions.c.user_id == user_id,
            subscriptions.c.service_id == plan_row.service_id,
            subscriptions.c.status.in_(LIVE),
        )
    ).first()
    if taken is None:
        return
    if taken.interval == "none" and plan.interval != "none":
        _end_payg(work, taken, max(moment, taken.started_at), now)
        return
    raise Conflict(
        f"the user already has subscription {taken.id} to service "
        f"{plan_row.service_code}; change its plan instead",
        code="already_subscribed",
        param="plan",
    )


def _end_payg(work: Work, row: Any, at: datetime, now: datetime) -> None:
    """Ends a pay-as-you-go subscription at `at`: usage after it is no longer its."""
    _end_open_phase(work, row.id, at)
    work.conn.execute(
        update(subscriptions)
        .where(subscriptions.c.id == row.id)
        .values(status="canceled", ended_at=at, current_period_end=at, updated_at=now)
    )


def _bill_first_periods(
    batch: Batch, work: Work, sub_id: str, moment: datetime, end: datetime, now: datetime
) -> None:
    """Opens the first period and takes its fee; bills whole periods a backdated start
    already has behind it."""
    sub = load_subs(work, [_row(work, sub_id)])[0]
    batch.subs = [sub]
    invoice = batch.open_period(sub, moment, end)
    batch.settle([invoice], {sub.user_id: sub.user})
    if invoice.billing_mode == "prepaid" and invoice.amount_due > 0:
        raise InsufficientFunds(
            "the wallet cannot cover the first fee; top up first",
            code="insufficient_funds",
            param="user",
        )
    if end <= now:
        advance(batch, batch.subs, now)
        batch.settle(batch.invoices.values(), {sub.user_id: sub.user})
    batch.flush()


def _row(work: Work, sub_id: str, *, lock: bool = False) -> Any:
    query = select(subscriptions).where(subscriptions.c.id == sub_id)
    if lock:
        query = query.with_for_update()
    row = work.conn.execute(query).one_or_none()
    if row is None:
        raise NotFound(f"no subscription {sub_id}", code="subscription_not_found")
    return row


def _load_for(work: Work, principal: Principal, sub_id: str, *, lock: bool = False) -> Any:
    row = _row(work, sub_id, lock=lock)
    if not _can_act(principal, row.user_id, row.provider_id):
        raise NotFound(f"no subscription {sub_id}", code="subscription_not_found")
    return row


def get(work: Work, principal: Principal, sub_id: str) -> SubscriptionView:
    return _view(work, _load_for(work, principal, sub_id))


def list_for(
    work: Work, principal: Principal, *, user_ref: str | None, limit: int, after: str | None
) -> tuple[list[SubscriptionView], bool]:
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be 1 to 1000", param="limit")
    query = select(subscriptions).order_by(subscriptions.c.id).limit(limit + 1)
    if principal.role == Role.USER:
        query = query.where(subscriptions.c.user_id == principal.user_id)
    elif principal.role == Role.PROVIDER:
        query = query.where(subscriptions.c.provider_id == principal.provider_id)
        if user_ref is not None and not was_customer(work, user_ref, principal.provider_id or ""):
            raise NotFound(f"no user {user_ref}", code="user_not_found", param="user")
    if user_ref is not None:
        query = query.where(subscriptions.c.user_id == user_ref)
    if after is not None:
        query = query.where(subscriptions.c.id > after)
    rows = list(work.conn.execute(query))
    return [_view(work, row) for row in rows[:limit]], len(rows) > limit


def _timing(value: object, default: str) -> str:
    if value is None:
        return default
    if value not in TIMINGS:
        raise InvalidRequest('timing must be "immediate" or "period_end"', param="timing")
    return str(value)


def _remaining_lines(
    batch: Batch, sub: Sub, old: Plan, new: Plan | None, at: datetime
) -> list[Line]:
    """Credit for the unused days of the old plan's advance fee, charge on the new one."""
    start, end = sub.current_period_start, sub.current_period_end
    if sub.in_trial(at) or at >= end:
        return []
    whole_start, whole_end = sub.whole_period(start)
    days = period_fraction(whole_start, whole_end, whole_start, whole_end)[1]
    left = min(period_fraction(at, end, whole_start, whole_end)[0], days)
    found = []
    cur = old.currency
    note = f"{left}/{days} days, {at:%Y-%m-%d} to {end:%Y-%m-%d}"
    if old.fee_timing == "advance" and old.fixed_fee:
        credit = money(prorate(old.fixed_fee, left, days, cur), cur)
        if credit:
            found.append(
                Line(
                    "proration",
                    f"Unused time on {old.name} ({note})",
                    -credit,
                    period_start=at,
                    period_end=end,
                )
            )
    if new is not None and new.fee_timing == "advance" and new.fixed_fee:
        charge = money(prorate(new.fixed_fee, left, days, cur), cur)
        if charge:
            found.append(
                Line(
                    "proration",
                    f"Remaining time on {new.name} ({note})",
                    charge,
                    period_start=at,
                    period_end=end,
                )
            )
    return found


def change_plan(
    work: Work, principal: Principal, sub_id: str, *, plan_code: object, timing: object = None
) -> SubscriptionView:
    now = work.clock.now()
    row = _load_for(work, principal, sub_id, lock=True)
    if row.status not in LIVE:
        raise Conflict("the subscription has ended", code="subscription_ended")
    new_row = _plan_row(work, plan_code)
    if new_row.id == row.plan_id:
        raise InvalidRequest("the subscription is already on that plan", param="plan")
    if new_row.service_id != row.service_id or new_row.status != "active":
        raise InvalidRequest(
            "the new plan must be an active plan of the same service", param="plan"
        )
    batch = Batch(work, now)
    batch.catalog.load(work, [row.plan_id, new_row.id], [row.provider_id])
    old, new = batch.catalog.plan(row.plan_id, now), batch.catalog.plan(new_row.id, now)
    if (new.interval, new.interval_count, new.currency) != (
        old.interval,
        old.interval_count,
        old.currency,
    ):
        raise InvalidRequest(
            "the new plan must bill in the same interval and currency; subscribe to a "
            "recurring plan to leave pay-as-you-go, or cancel and subscribe",
            code="plan_incompatible",
            param="plan",
        )
    if old.interval == "none":
        # Pay-as-you-go has no period to wait for, and no fee to prorate.
        _timing(timing, "immediate")
        _switch_payg(work, row, new_row.id, now)
        return _changed(work, principal, sub_id, new_row.code, "immediate", now)
    upgrade = new.fixed_fee >= old.fixed_fee
    when = _timing(timing, "immediate" if upgrade else "period_end")
    sub = load_subs(work, [row])[0]
    batch.subs = [sub]
    if when == "period_end":
        sub.set(pending_plan_id=new_row.id, updated_at=now)
    else:
        if sub.in_trial(now):
            pass
        elif sub.invoice is None:
            raise Conflict("the current period has no invoice yet", code="not_billed")
        lines = _remaining_lines(batch, sub, old, new, now)
        sub.phases[-1].ends_at, sub.phases[-1].dirty = now, True
        sub.phases.append(Phase(new_row.id, now, None))
        sub.set(plan_id=new_row.id, pending_plan_id=None, updated_at=now)
        if lines and sub.invoice is not None:
            batch.track(sub.invoice)
            for line in lines:
                sub.invoice.add(line)
            batch.settle([sub.invoice], {sub.user_id: sub.user})
            if sub.invoice.billing_mode == "prepaid" and any(not x.settled for x in lines):
                raise InsufficientFunds(
                    "the wallet cannot cover the change of plan; top up first",
                    code="insufficient_funds",
                    param="plan",
                )
    batch.flush()
    return _changed(work, principal, sub_id, new_row.code, when, now)


def _changed(
    work: Work, principal: Principal, sub_id: str, plan: str, when: str, now: datetime
) -> SubscriptionView:
    audit.record(
        work,
        principal,
        "subscription.plan_changed",
        "subscription",
        sub_id,
        at=now,
        details={"plan": plan, "timing": when},
    )
    return _view(work, _row(work, sub_id))


def _switch_payg(work: Work, row: Any, plan_id: str, now: datetime) -> None:
    """Moves a pay-as-you-go subscription to another pay-as-you-go plan, now."""
    _end_open_phase(work, row.id, now)
    work.conn.execute(
        subscription_phases.insert().values(
            subscription_id=row.id, plan_id=plan_id, starts_at=now, ends_at=None
        )
    )
    work.conn.execute(
        update(subscriptions)
        .where(subscriptions.c.id == row.id)
        .values(plan_id=plan_id, updated_at=now)
    )


def cancel(
    work: Work, principal: Principal, sub_id: str, *, timing: object = None
) -> SubscriptionView:
    now = work.clock.now()
    row = _load_for(work, principal, sub_id, lock=True)
    if row.status not in LIVE:
        raise Conflict("the subscription has already ended", code="subscription_ended")
    when = _timing(timing, "period_end")
    if row.interval == "none":
        # Pay-as-you-go ends now: there is no period end to wait for.
        _end_payg(work, row, now, now)
        return _canceled(work, principal, sub_id, "immediate", now)
    batch = Batch(work, now)
    batch.catalog.load(work, [row.plan_id], [row.provider_id])
    sub = load_subs(work, [row])[0]
    batch.subs = [sub]
    if when == "period_end":
        sub.set(cancel_at_period_end=1, pending_plan_id=None, updated_at=now)
    else:
        old = batch.catalog.plan(row.plan_id, now)
        lines = _remaining_lines(batch, sub, old, None, now)
        if sub.invoice is not None:
            batch.track(sub.invoice)
            for line in lines:
                sub.invoice.add(line)
            sub.invoice.period_end = max(now, sub.current_period_start)
        sub.phases[-1].ends_at, sub.phases[-1].dirty = now, True
        sub.set(current_period_end=max(now, sub.current_period_start))
        rows = usage_rows(work, [sub])
        batch.close_period(sub, rows)
        sub.set(status="canceled", ended_at=now, pending_plan_id=None, updated_at=now)
        batch.settle(batch.invoices.values(), {sub.user_id: sub.user})
    batch.flush()
    return _canceled(work, principal, sub_id, when, now)


def _canceled(
    work: Work, principal: Principal, sub_id: str, when: str, now: datetime
) -> SubscriptionView:
    audit.record(
        work,
        principal,
        "subscription.canceled",
        "subscription",
        sub_id,
        at=now,
        details={"timing": when},
    )
    return _view(work, _row(work, sub_id))
