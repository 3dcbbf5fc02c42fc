"""Subscriptions end to end through the services: renewals, proration, invoices, dunning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billfold import catalog, metering, parties, subscriptions
from billfold.authorizations import entitlements
from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.domain.errors import InsufficientFunds
from billfold.invoicing import billing, invoices
from billfold.ledger.verify import verify
from billfold.parties.profile import set_profile


def _plan(code: str, fee: str, **extra: object) -> dict[str, object]:
    plan: dict[str, object] = {
        "code": code,
        "name": code.title(),
        "service": "maps",
        "currency": "USD",
        "interval": "month",
        "interval_count": 1,
        "fixed_fee": fee,
        "fee_timing": "advance",
        "charges": [
            {"metric": "calls", "model": "per_unit", "unit_price": "0.001", "free_units": "100"}
        ],
    }
    plan.update(extra)
    return plan


def _catalog(ctx: Context) -> Principal:
    provider = ctx.run(
        parties.create_provider, SYSTEM, name="P", email="p@p.io", commission_rate="0.2"
    )
    me = Principal("k", Role.PROVIDER, provider_id=provider.id)
    ctx.run(catalog.create_service, me, code="maps", name="Maps")
    ctx.run(catalog.create_metric, me, "maps", code="calls", name="Calls", aggregation="count")
    ctx.run(catalog.create_plan, me, _plan("basic", "30"))
    ctx.run(catalog.create_plan, me, _plan("pro", "60"))
    ctx.run(catalog.create_plan, me, _plan("post", "50", minimum="80"))
    return me


def _user(ctx: Context, mode: str = "prepaid", top_up: str | None = "100", **extra: object) -> str:
    user = ctx.run(
        parties.create_user,
        SYSTEM,
        name="U",
        email="u@u.io",
        currency_code="USD",
        billing_mode=mode,
        **extra,
    )
    if top_up:
        ctx.run(parties.top_up, SYSTEM, user.id, amount=top_up)
    return user.id


def _move(ctx: Context, clock: TestClock, moment: datetime) -> dict[str, int]:
    clock.set(moment)
    return billing.bill_run(ctx)


def _invoices(ctx: Context, user: str) -> list[invoices.InvoiceView]:
    return sorted(
        ctx.run(invoices.list_for, SYSTEM, user=user, limit=1000)[0], key=lambda v: v.period_start
    )


def _wallet(ctx: Context, user: str) -> Decimal:
    return ctx.run(parties.get_balance, SYSTEM, user).posted


def test_prepaid_renewals_take_the_fee_once_per_period(ctx: Context, clock: TestClock) -> None:
    _catalog(ctx)
    user = _user(ctx, top_up="100")
    sub = ctx.run(subscriptions.create, SYSTEM, user_ref=user, plan_code="basic")
    # START is Nov 1 12:00: the calendar period Nov 1 - Dec 1 is whole by days.
    assert (sub.current_period_start, sub.current_period_end) == (
        clock.now(),
        datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert _wallet(ctx, user) == Decimal(70)
    _move(ctx, clock, datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC))
    again = billing.bill_run(ctx)
    assert again.get("subscriptions_processed", 0) == 0  # Nothing is billed twice.
    found = _invoices(ctx, user)
    assert [v.status for v in found] == ["paid", "draft"]
    assert found[0].number == "BF-2026-000001"
    assert [line.amount for line in found[1].lines] == [Decimal(30)]
    assert _wallet(ctx, user) == Decimal(40)
    assert ctx.run(verify, SYSTEM).ok


def test_postpaid_invoice_has_usage_minimum_and_tax(ctx: Context, clock: TestClock) -> None:
    me = _catalog(ctx)
    user = _user(ctx, "postpaid", top_up=None, tax_rate="0.1")
    ctx.run(subscriptions.create, SYSTEM, user_ref=user, plan_code="post")
    events = [
        {"id": f"e{i}", "user": user, "service": "maps", "metric": "calls", "value": "1001"}
        for i in range(3)
    ]
    result = metering.ingest(ctx, me, events)
    assert result.accepted == 3
    _move(ctx, clock, datetime(2026, 12, 1, tzinfo=UTC))
    inv = _invoices(ctx, user)[0]
    assert inv.status == "open"
    kinds = {line.kind: line for line in inv.lines}
    # 3003 calls, 100 free: 2903 * 0.001 = 2.903, rounded half-up on the line to 2.90.
    assert kinds["usage"].amount == Decimal("2.90")
    assert kinds["usage"].quantity == "3003"
    assert kinds["fixed_fee"].amount == Decimal(50)
    assert kinds["minimum"].amount == Decimal("77.10")
    assert inv.subtotal == sum(line.amount for line in inv.lines)
    assert inv.tax == sum(line.tax for line in inv.lines) == Decimal("13.00")
    assert inv.total == inv.subtotal + inv.tax == Decimal("143.00")
    balance = ctx.run(parties.get_balance, SYSTEM, user)
    # The ledger owes exactly what the invoice says, plus December's fee (50 + 10% tax),
    # charged when December's period opened and invoiced when it closes.
    assert balance.receivable == inv.total + Decimal(55)
    # Money arriving does not pay the invoice unless the user chose so...
    ctx.run(parties.top_up, SYSTEM, user, amount="200")
    assert ctx.run(invoices.get, SYSTEM, inv.id).status == "open"
    # ...and choosing so pays what is open from the cash already there.
    ctx.run(set_profile, SYSTEM, user, {"autopay_invoices": True})
    assert ctx.run(invoices.get, SYSTEM, inv.id).status == "paid"
    assert ctx.run(parties.get_balance, SYSTEM, user).receivable == Decimal(55)
    assert ctx.run(verify, SYSTEM).ok


def test_wallet_short_at_renewal_goes_past_due_then_suspended_then_back(
    ctx: Context, clock: TestClock
) -> None:
    _catalog(ctx)
    user = _user(ctx, top_up="40")
    sub = ctx.run(subscriptions.create, SYSTEM, user_ref=user, plan_code="basic")
    _move(ctx, clock, datetime(2026, 12, 1, 1, tzinfo=UTC))
    assert ctx.run(subscriptions.get, SYSTEM, sub.id).status == "past_due"
    assert ctx.run(entitlements, SYSTEM, user, "maps").has_access  # Within the grace period.
    _move(ctx, clock, datetime(2026, 12, 9, tzinfo=UTC))
    assert ctx.run(subscriptions.get, SYSTEM, sub.id).status == "suspended"
    access = ctx.run(entitlements, SYSTEM, user, "maps")
    assert (access.has_access, access.reason) == (False, "suspended")
    ctx.run(parties.top_up, SYSTEM, user, amount="25")
    assert ctx.run(subscriptions.get, SYSTEM, sub.id).status == "active"
    assert _wallet(ctx, user) == Decimal(5)
    assert ctx.run(entitlements, SYSTEM, user, "maps").has_access
    assert ctx.run(verify, SYSTEM).ok


def test_upgrade_now_prorates_and_downgrade_waits(ctx: Context, clock: TestClock) -> None:
    _catalog(ctx)
    user = _user(ctx, top_up="200")
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))
    sub = ctx.run(subscriptions.create, SYSTEM, user_ref=user, plan_code="basic")
    clock.set(datetime(2026, 12, 17, 9, tzinfo=UTC))  # 15 of 31 days left.
    ctx.run(subscriptions.change_plan, SYSTEM, sub.id, plan_code="pro")
    draft = _invoices(ctx, user)[-1]
    assert [line.amount for line in draft.lines] == [
        Decimal(30),
        Decimal("-14.52"),  # 30 * 15 / 31 = 14.516..
        Decimal("29.03"),  # 60 * 15 / 31 = 29.032..
    ]
    assert _wallet(ctx, user) == Decimal(200) - Decimal(30) - Decimal("14.51")
    later = ctx.run(subscriptions.change_plan, SYSTEM, sub.id, plan_code="basic")
    assert (later.plan, later.pending_plan) == ("pro", "basic")
    _move(ctx, clock, datetime(2027, 1, 1, tzinfo=UTC))
    assert ctx.run(subscriptions.get, SYSTEM, sub.id).plan == "basic"
    assert _invoices(ctx, user)[-1].lines[0].amount == Decimal(30)
    assert ctx.run(verify, SYSTEM).ok


def test_upgrade_the_wallet_cannot_cover_changes_nothing(ctx: Context, clock: TestClock) -> None:
    _catalog(ctx)
    user = _user(ctx, top_up="31")
    sub = ctx.run(subscriptions.create, SYSTEM, user_ref=user, plan_code="basic")
    clock.advance(days=2)
    with pytest.raises(InsufficientFunds):
        ctx.run(subscriptions.change_plan, SYSTEM, sub.id, plan_code="pro")
    assert ctx.run(subscriptions.get, SYSTEM, sub.id).plan == "basic"
    assert len(_invoices(ctx, user)[-1].lines) == 1


def test_cancel_now_credits_unused_days(ctx: Context, clock: TestClock) -> None:
    _catalog(ctx)
    user = _user(ctx, top_up="100")
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))
    sub = ctx.run(subscriptions.create, SYSTEM, user_ref=user, plan_code="basic")
    clock.set(datetime(2026, 12, 11, tzinfo=UTC))  # 21 of 31 days unused.
    ended = ctx.run(subscriptions.cancel, SYSTEM, sub.id, timing="immediate")
    assert ended.status == "canceled"
    inv = _invoices(ctx, user)[-1]
    assert inv.status == "paid"
    assert [line.amount for line in inv.lines] == [Decimal(30), Decimal("-20.32")]
    assert _wallet(ctx, user) == Decimal(100) - Decimal(30) + Decimal("20.32")
    _move(ctx, clock, datetime(2027, 2, 1, tzinfo=UTC))
    assert len(_invoices(ctx, user)) == 1  # A canceled subscription renews no more.
    assert ctx.run(verify, SYSTEM).ok


def test_trial_then_anniversary_billing(ctx: Context, clock: TestClock) -> None:
    me = _catalog(ctx)
    ctx.run(catalog.create_plan, me, _plan("trial", "20", trial_days=14))
    user = _user(ctx, top_up="100")
    sub = ctx.run(
        subscriptions.create, SYSTEM, user_ref=user, plan_code="trial", billing_anchor="anniversary"
    )
    assert sub.status == "trialing"
    assert _wallet(ctx, user) == Decimal(100)
    _move(ctx, clock, clock.now() + timedelta(days=14))
    now = ctx.run(subscriptions.get, SYSTEM, sub.id)
    assert now.status == "active"
    assert now.current_period_end == datetime(2026, 12, 15, 12, tzinfo=UTC)
    assert _wallet(ctx, user) == Decimal(80)
    assert ctx.run(verify, SYSTEM).ok


def test_credit_note_and_void(ctx: Context, clock: TestClock) -> None:
    _catalog(ctx)
    user = _user(ctx, "postpaid", top_up=None)
    ctx.run(subscriptions.create, SYSTEM, user_ref=user, plan_code="basic")
    _move(ctx, clock, datetime(2026, 12, 1, tzinfo=UTC))
    first = _invoices(ctx, user)[0]
    note = ctx.run(invoices.credit, SYSTEM, invoice_id=first.id, amount="10", reason="outage")
    assert note.amount == Decimal(10)
    assert ctx.run(invoices.get, SYSTEM, first.id).amount_due == Decimal(20)
    assert ctx.run(parties.get_balance, SYSTEM, user).receivable == Decimal(50)  # 20 + next 30
    voided = ctx.run(invoices.void, SYSTEM, first.id)
    assert voided.status == "void"
    assert ctx.run(parties.get_balance, SYSTEM, user).receivable == Decimal(30)
    assert ctx.run(verify, SYSTEM).ok
