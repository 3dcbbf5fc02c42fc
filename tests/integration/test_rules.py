"""Each rule is written once, and every caller agrees with it.

The usage period of an event, the plan in force, the available balance and the charge
transfer are each one function; these tests hold their callers to the same answers.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from billfold import authorizations, catalog, ledger, metering, parties, subscriptions
from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Principal
from billfold.core.context import Context
from billfold.domain.money import currency, from_units
from tests.conftest import START
from tests.integration.helpers import funded_user, metered_catalog, subscribe

USD = currency("USD")
PAYG = {
    "code": "maps-payg",
    "name": "Maps",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [
        {"metric": "calls", "model": "per_unit", "unit_price": "0.01", "free_units": "100"}
    ],
}


def _monthly(code: str, price: str) -> dict[str, object]:
    return {
        **PAYG,
        "code": code,
        "interval": "month",
        "fixed_fee": "0",
        "charges": [
            {"metric": "calls", "model": "per_unit", "unit_price": price, "free_units": "100"}
        ],
    }


def _use(ctx: Context, me: Principal, user: str, event_id: str, calls: int) -> None:
    at = ctx.clock.now().isoformat()
    event = {"id": event_id, "user": user, "service": "maps", "metric": "calls", "value": calls}
    result = metering.ingest(ctx, me, [{**event, "timestamp": at}])
    assert result.accepted == 1, result.rejected


def _posted(ctx: Context, user: str) -> Decimal:
    standing = ctx.read(ledger.user_standing, user, "USD", 0)
    return from_units(standing.posted, USD)


def _agree(ctx: Context, me: Principal, user: str, calls: int) -> Decimal:
    """Authorizes `calls` and then meters them: the hold's price is what was charged."""
    quoted = ctx.run(
        authorizations.authorize,
        me,
        user_ref=user,
        service_code="maps",
        metric_code="calls",
        quantity=str(calls),
    )
    assert quoted.status == "approved"
    ctx.run(authorizations.void, me, quoted.id)
    before = _posted(ctx, user)
    _use(ctx, me, user, f"after-{calls}", calls)
    charged = before - _posted(ctx, user)
    assert quoted.amount == charged
    return charged


def test_after_a_cancellation_usage_is_priced_in_a_period_of_its_own(
    ctx: Context, clock: TestClock
) -> None:
    me = metered_catalog(ctx, PAYG)
    ctx.run(catalog.create_plan, me, _monthly("maps-monthly", "0.02"))
    user = funded_user(ctx, 1, "50")
    clock.set(START + timedelta(days=1))
    _use(ctx, me, user, "payg", 100)  # The month's 100 free calls, used up.
    clock.set(START + timedelta(days=2))
    sub = ctx.run(subscriptions.create, SYSTEM, user_ref=user, plan_code="maps-monthly")
    clock.set(START + timedelta(days=4))
    ctx.run(subscriptions.cancel, SYSTEM, sub.id, timing="immediate")
    clock.set(START + timedelta(days=5))
    # Pay-as-you-go again, in a period that starts with the new subscription: 100 free calls.
    subscribe(ctx, user)
    assert _agree(ctx, me, user, 50) == 0
    entitled = ctx.read(authorizations.entitlements, me, user, "maps")
    assert entitled.remaining == {"calls": Decimal(50)}


def test_after_a_plan_change_usage_is_priced_on_the_new_plan(
    ctx: Context, clock: TestClock
) -> None:
    me = metered_catalog(ctx, PAYG)
    ctx.run(catalog.create_plan, me, _monthly("maps-basic", "0.02"))
    ctx.run(catalog.create_plan, me, _monthly("maps-pro", "0.05"))
    user = funded_user(ctx, 1, "50")
    sub = ctx.run(subscriptions.create, SYSTEM, user_ref=user, plan_code="maps-basic")
    clock.set(START + timedelta(days=1))
    _use(ctx, me, user, "basic", 150)  # 100 free, 50 at 0.02.
    clock.set(START + timedelta(days=2))
    ctx.run(subscriptions.change_plan, SYSTEM, sub.id, plan_code="maps-pro", timing="immediate")
    clock.set(START + timedelta(days=3))
    # The new plan's period starts at the change, with its own 100 free calls.
    assert _agree(ctx, me, user, 120) == Decimal("1.00")
    assert ctx.read(parties.get_balance, SYSTEM, user).currency == USD


def _split(ctx: Context, provider_id: str) -> tuple[Decimal, Decimal]:
    """(provider earnings, platform revenue) in USD now."""
    from billfold.domain.ledger import PLATFORM_OWNER_ID, AccountKind, OwnerType

    def posted(owner_type: OwnerType, owner: str, kind: AccountKind) -> Decimal:
        with ctx.work(read_only=True) as work:
            account = ledger.find_account(work, owner_type, owner, kind, "USD")
            return from_units(ledger.balance(work, account).posted if account else 0, USD)

    return (
        posted(OwnerType.PROVIDER, provider_id, AccountKind.PROVIDER_EARNINGS),
        posted(OwnerType.PLATFORM, PLATFORM_OWNER_ID, AccountKind.PLATFORM_REVENUE),
    )


def test_every_kind_of_charge_is_split_by_the_commission_in_force(
    ctx: Context, clock: TestClock
) -> None:
    """Usage, one-off charges, captures and subscription fees share one charge transfer:
    the plan's commission where it sets one, else the provider's (here 10%)."""
    plan = {**PAYG, "commission_rate": "0.35"}
    plan["charges"] = [{"metric": "calls", "model": "per_unit", "unit_price": "1"}]
    me = metered_catalog(ctx, plan, commission_rate="0.10")
    provider = str(me.provider_id)
    ctx.run(catalog.create_plan, me, {**_monthly("fee-own", "0"), "fixed_fee": "10"})
    ctx.run(
        catalog.create_plan,
        me,
        {**_monthly("fee-half", "0"), "fixed_fee": "10", "commission_rate": "0.5"},
    )
    user = funded_user(ctx, 1, "100")
    other = funded_user(ctx, 2, "100")  # One subscription per service and user.
    steps = {
        "usage (plan: 35%)": lambda: _use(ctx, me, user, "u1", 10),
        "one-off charge (provider: 10%)": lambda: ctx.run(
            parties.charge, me, user_ref=user, amount="10", description="Setup"
        ),
        "capture by amount (provider: 10%)": lambda: ctx.run(
            authorizations.capture,
            me,
            ctx.run(authorizations.authorize, me, user_ref=user, amount="10").id,
        ),
        "subscription fee (provider: 10%)": lambda: ctx.run(
            subscriptions.create, SYSTEM, user_ref=user, plan_code="fee-own"
        ),
        "subscription fee (plan: 50%)": lambda: ctx.run(
            subscriptions.create, SYSTEM, user_ref=other, plan_code="fee-half"
        ),
    }
    expected = {
        "usage (plan: 35%)": (Decimal("6.5"), Decimal("3.5")),
        "one-off charge (provider: 10%)": (Decimal(9), Decimal(1)),
        "capture by amount (provider: 10%)": (Decimal(9), Decimal(1)),
        "subscription fee (provider: 10%)": (Decimal(9), Decimal(1)),
        "subscription fee (plan: 50%)": (Decimal(5), Decimal(5)),
    }
    for name, step in steps.items():
        before = _split(ctx, provider)
        step()
        after = _split(ctx, provider)
        assert (after[0] - before[0], after[1] - before[1]) == expected[name], name
    # Everything the user paid went to the provider and the platform, to the unit.
    earned, revenue = _split(ctx, provider)
    assert earned + revenue == Decimal(200) - _posted(ctx, user) - _posted(ctx, other)


def test_the_available_balance_counts_the_credit_limit_everywhere(ctx: Context) -> None:
    """The balance, the entitlements and the low-balance alert agree on what is available."""
    from billfold import alerts

    me = metered_catalog(ctx, PAYG)
    user = funded_user(ctx, 1, "5")
    ctx.run(parties.set_credit_limit, SYSTEM, user, "20")
    shown = ctx.read(parties.get_balance, SYSTEM, user)
    assert shown.available == Decimal(25)
    assert ctx.read(authorizations.entitlements, SYSTEM, user, "maps").available == Decimal(25)
    # A provider is told whether its customer may use the service, never the balance.
    assert ctx.read(authorizations.entitlements, me, user, "maps").available is None
    # A low-balance level of 10 is not reached while 25 is available.
    ctx.run(
        alerts.set_settings, SYSTEM, user, monthly_budget=None, thresholds=None, low_balance="10"
    )
    assert alerts.evaluate(ctx)["low_balance"] == 0
    ctx.run(parties.charge, me, user_ref=user, amount="16", description="Setup")
    assert alerts.evaluate(ctx)["low_balance"] == 1


def test_the_plan_version_in_force_is_the_same_for_every_caller(
    ctx: Context, clock: TestClock
) -> None:
    """The catalog, metering and authorizations agree on which version prices usage, and
    how a period's usage so far carries over when a new version takes effect in it."""
    plan = {
        **PAYG,
        "charges": [{"metric": "calls", "model": "percentage", "rate": "0.1", "free_events": 5}],
    }
    me = metered_catalog(ctx, plan)
    user = funded_user(ctx, 1, "50")
    for n in range(5):  # The five free events, used up under version 1.
        _use(ctx, me, user, f"v1-{n}", 1)
    later = {**plan, "charges": [{**plan["charges"][0], "rate": "0.2"}]}  # type: ignore[dict-item]
    effective = START + timedelta(hours=1)
    ctx.run(catalog.add_plan_version, me, "maps-payg", later, effective_from=effective)
    clock.set(START + timedelta(hours=2))
    assert ctx.read(catalog.get_plan, me, "maps-payg", at=START).current.version == 1
    assert ctx.read(catalog.get_plan, me, "maps-payg").current.version == 2
    # Version 2 prices the period's next events afresh from its running total: five free
    # events again, then 0.2 of each event's value.
    quoted = ctx.run(
        authorizations.authorize,
        me,
        user_ref=user,
        service_code="maps",
        metric_code="calls",
        quantity="10",
    )
    ctx.run(authorizations.void, me, quoted.id)
    before = _posted(ctx, user)
    for n in range(10):
        _use(ctx, me, user, f"v2-{n}", 1)
    charged = before - _posted(ctx, user)
    assert quoted.amount == charged == Decimal("1.00")


def test_each_event_of_a_batch_finds_the_version_in_force_at_its_own_moment(
    ctx: Context, clock: TestClock
) -> None:
    """Validation remembers what an event found for the moments that share the answer;
    a batch out of time order, across a new version's start, still finds each moment's."""
    from billfold.metering._validation import _prepare

    me = metered_catalog(ctx, PAYG)
    user = funded_user(ctx, 1, "50")
    effective = START + timedelta(hours=1)
    ctx.run(catalog.add_plan_version, me, "maps-payg", PAYG, effective_from=effective)
    clock.set(START + timedelta(hours=2))
    minutes = [10, 50, 70, 20, 60, 59, 61, 5]
    events = [
        {
            "id": f"e{n}",
            "user": user,
            "service": "maps",
            "metric": "calls",
            "timestamp": (START + timedelta(minutes=m)).isoformat(),
        }
        for n, m in enumerate(minutes)
    ]
    with ctx.work(read_only=True) as work:
        prepared = _prepare(work, me, events, False, clock.now())
    assert not prepared.rejected
    assert [e.plan_version for e in prepared.valid] == [1 if m < 60 else 2 for m in minutes]
