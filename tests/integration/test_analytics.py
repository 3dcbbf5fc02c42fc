"""Analytics and settlement add up to the ledger exactly, and each role sees only its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billfold import analytics, catalog, ledger, metering, parties, settlement
from billfold.analytics import Query
from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.domain.errors import InsufficientFunds, InvalidRequest, NotFound
from billfold.domain.ledger import AccountKind, OwnerType
from billfold.domain.money import currency, from_units
from tests.integration.helpers import subscribe

DAY0 = datetime(2026, 11, 2, tzinfo=UTC)


def _provider(ctx: Context, name: str, service: str, price: str, rate: str) -> Principal:
    provider = ctx.run(
        parties.create_provider, SYSTEM, name=name, email=f"{name}@p.io", commission_rate=rate
    )
    me = Principal(f"k-{name}", Role.PROVIDER, provider_id=provider.id)
    ctx.run(catalog.create_service, me, code=service, name=service)
    ctx.run(catalog.create_metric, me, service, code="calls", name="Calls", aggregation="count")
    ctx.run(
        catalog.create_plan,
        me,
        {
            "code": f"{service}-payg",
            "name": "PAYG",
            "service": service,
            "currency": "USD",
            "interval": "none",
            "charges": [
                {"metric": "calls", "model": "per_unit", "unit_price": price, "free_units": "3"}
            ],
        },
    )
    return me


def _events(user: str, service: str, start: datetime, count: int, step: timedelta) -> list[object]:
    return [
        {
            "id": f"{user}-{service}-{start.isoformat()}-{n}",
            "user": user,
            "service": service,
            "metric": "calls",
            "timestamp": (start + step * n).isoformat(),
        }
        for n in range(count)
    ]


@pytest.fixture
def world(ctx: Context, clock: TestClock) -> dict[str, object]:
    clock.set(DAY0)
    maps = _provider(ctx, "a", "maps", "0.013", "0.2")
    geo = _provider(ctx, "b", "geo", "0.7", "0.15")
    users = []
    for n in range(3):
        user = ctx.run(
            parties.create_user, SYSTEM, name=f"U{n}", email=f"u{n}@u.io", currency_code="USD"
        )
        ctx.run(parties.top_up, SYSTEM, user.id, amount="500")
        subscribe(ctx, user.id, "maps")
        if n != 2:
            subscribe(ctx, user.id, "geo")
        users.append(user.id)
    # Ten days of usage at uneven times (sub-cent prices, free units, late events).
    for day in range(10):
        clock.set(DAY0 + timedelta(days=day, hours=23, minutes=50))
        for i, user in enumerate(users):
            start = DAY0 + timedelta(days=day, hours=3 + i, minutes=7)
            metering.ingest(
                ctx, maps, _events(user, "maps", start, 5 + day + i, timedelta(minutes=13))
            )
            if i != 2:
                metering.ingest(ctx, geo, _events(user, "geo", start, 2 + i, timedelta(hours=5)))
    return {"maps": maps, "geo": geo, "users": users}


def _charged(ctx: Context, user: str) -> Decimal:
    with ctx.db.unit_of_work(read_only=True) as uow:
        wallet = ledger.find_account(uow, OwnerType.USER, user, AccountKind.WALLET, "USD")
        assert wallet is not None
        return Decimal(500) - from_units(ledger.balance(uow, wallet).posted, currency("USD"))


def _total(series: list[analytics.Series]) -> tuple[Decimal, int, int]:
    return (
        sum((p.quantity for s in series for p in s.points), Decimal(0)),
        sum(p.events for s in series for p in s.points),
        sum(p.amount for s in series for p in s.points),
    )


@pytest.mark.parametrize("folded", [False, True])
def test_usage_series_add_up_to_the_ledger(
    ctx: Context, world: dict[str, object], folded: bool
) -> None:
    if folded:
        analytics.fold(ctx, batch=7)  # Small batches: folding is resumable.
    users = world["users"]
    assert isinstance(users, list)
    q = Query(DAY0, DAY0 + timedelta(days=31), "day", group_by=("user",))
    series = ctx.run(analytics.usage_series, SYSTEM, q)
    for user in users:
        mine = [s for s in series if s.group["user"] == user]
        units = sum(p.amount for s in mine for p in s.points)
        assert from_units(units, currency("USD")) == _charged(ctx, user)
    # Per provider (the provider rollup) equals per user (the user rollup).
    flat = ctx.run(analytics.usage_series, SYSTEM, Query(DAY0, DAY0 + timedelta(days=31), "month"))
    assert _total(flat) == _total(series)
    assert _total(flat)[1] == sum(5 + d + i for d in range(10) for i in range(3)) + 10 * (2 + 3)


def test_day_windows_follow_the_time_zone(ctx: Context, world: dict[str, object]) -> None:
    analytics.fold(ctx)
    maps = world["maps"]
    assert isinstance(maps, Principal)
    utc = ctx.run(analytics.usage_series, maps, Query(DAY0, DAY0 + timedelta(days=11), "day"))
    # Kolkata is UTC+05:30: a quarter-hour grid is needed for its midnights.
    start = datetime(2026, 11, 1, 18, 30, tzinfo=UTC)
    kolkata = ctx.run(
        analytics.usage_series,
        maps,
        Query(start, start + timedelta(days=11), "day", tz="Asia/Kolkata"),
    )
    assert _total(utc) == _total(kolkata)
    assert kolkata[0].points[0].start.isoformat() == "2026-11-02T00:00:00+05:30"
    # Events from 03:07 UTC on: day one in Kolkata holds user 0's whole first day.
    assert [p.events for p in utc[0].points][:2] == [5 + 6 + 7, 6 + 7 + 8]
    hourly = ctx.run(analytics.usage_series, maps, Query(DAY0, DAY0 + timedelta(days=1), "hour"))
    assert len(hourly[0].points) == 24 and sum(p.events for p in hourly[0].points) == 18
    with pytest.raises(InvalidRequest):
        ctx.run(analytics.usage_series, maps, Query(DAY0, DAY0 + timedelta(minutes=7), "hour"))
    with pytest.raises(InvalidRequest):
        ctx.run(
            analytics.usage_series, maps, Query(DAY0, DAY0 + timedelta(days=1), tz="Mars/Olympus")
        )


def test_each_role_sees_only_its_own(ctx: Context, world: dict[str, object]) -> None:
    maps, geo, users = world["maps"], world["geo"], world["users"]
    assert isinstance(maps, Principal) and isinstance(geo, Principal) and isinstance(users, list)
    q = Query(DAY0, DAY0 + timedelta(days=31), "month", group_by=("service", "user"))
    seen = ctx.run(analytics.usage_series, maps, q)
    assert {s.group["service"] for s in seen} == {"maps"}
    with pytest.raises(InvalidRequest):
        ctx.run(
            analytics.usage_series,
            maps,
            Query(DAY0, DAY0 + timedelta(days=1), provider=geo.provider_id),
        )
    user = Principal("ku", Role.USER, user_id=users[0])
    mine = ctx.run(analytics.usage_series, user, q)
    assert {s.group["user"] for s in mine} == {users[0]}
    with pytest.raises(InvalidRequest):
        ctx.run(analytics.usage_series, user, Query(DAY0, DAY0 + timedelta(days=1), user=users[1]))
    from billfold.domain.errors import PermissionDenied

    with pytest.raises(PermissionDenied):
        ctx.run(analytics.revenue_series, user, q)
    revenue = ctx.run(
        analytics.revenue_series,
        geo,
        Query(DAY0, DAY0 + timedelta(days=31), "month", group_by=("provider",)),
    )
    assert {s.group["provider"] for s in revenue} == {geo.provider_id}
    with pytest.raises(NotFound):
        ctx.run(settlement.statements, geo, str(maps.provider_id), "2026-11")


def test_statements_payouts_and_reconciliation(
    ctx: Context, clock: TestClock, world: dict[str, object]
) -> None:
    maps, users = world["maps"], world["users"]
    assert isinstance(maps, Principal) and isinstance(users, list)
    provider = str(maps.provider_id)
    clock.set(DAY0 + timedelta(days=12))
    charge = ctx.run(
        parties.charge, maps, user_ref=users[0], amount="10", description="Setup", service="maps"
    )
    ctx.run(parties.refund, maps, charge.transfer.id, amount="4")
    analytics.fold(ctx)
    clock.set(DAY0 + timedelta(days=13))
    with pytest.raises(InsufficientFunds):
        ctx.run(settlement.payout, SYSTEM, provider_id=provider, amount="100000")
    paid = ctx.run(settlement.payout, SYSTEM, provider_id=provider, amount="5", transfer_id="po_1")
    again = ctx.run(settlement.payout, SYSTEM, provider_id=provider, amount="5", transfer_id="po_1")
    assert again.id == paid.id and again.balance_after == paid.balance_after
    (st,) = ctx.run(settlement.statements, maps, provider, "2026-11")
    with ctx.db.unit_of_work(read_only=True) as uow:
        earnings = ledger.find_account(
            uow, OwnerType.PROVIDER, provider, AccountKind.PROVIDER_EARNINGS, "USD"
        )
        assert earnings is not None
        balance = ledger.balance(uow, earnings).posted
    assert st.opening == 0 and st.closing == balance
    assert st.payouts == 5 * 10**st.currency.ledger_scale
    assert st.refunds == 4 * 10**st.currency.ledger_scale
    assert st.opening + st.net - st.payouts == st.closing
    # Commission is the platform's share: 20% of gross less 20% of what was refunded.
    assert st.commission == pytest.approx((st.gross - st.refunds) * 0.2, abs=10)
    report = ctx.run(settlement.reconcile, "2026-11")
    assert report.ok, report.differences
    assert report.checks > 5
    december = ctx.run(settlement.statements, SYSTEM, provider, "2026-12")
    assert december[0].opening == balance and december[0].gross == 0


def test_reconcile_names_a_difference(ctx: Context, world: dict[str, object]) -> None:
    analytics.fold(ctx)
    from sqlalchemy import update

    from billfold.store.tables import revenue_rollup

    with ctx.db.unit_of_work() as uow:
        row = uow.conn.execute(revenue_rollup.select().limit(1)).one()
        uow.conn.execute(
            update(revenue_rollup)
            .where(
                revenue_rollup.c.bucket == row.bucket,
                revenue_rollup.c.provider_id == row.provider_id,
            )
            .values(gross=revenue_rollup.c.gross + 1)
        )
        uow.commit()
    report = ctx.run(settlement.reconcile, "2026-11")
    assert not report.ok
    assert {d.check for d in report.differences} >= {"statement_vs_ledger"}
    assert any(row.provider_id in d.subject for d in report.differences)


def test_top_lists_and_subscription_metrics(
    ctx: Context, clock: TestClock, world: dict[str, object]
) -> None:
    from billfold import subscriptions

    maps, users = world["maps"], world["users"]
    assert isinstance(maps, Principal) and isinstance(users, list)
    q = Query(DAY0, DAY0 + timedelta(days=31))
    ranked = ctx.run(analytics.top, SYSTEM, q, "user", limit=3)
    assert [r[2] for r in ranked] == sorted((r[2] for r in ranked), reverse=True)
    assert sum(r[2] for r in ranked) == _total(ctx.run(analytics.usage_series, SYSTEM, q))[2]
    assert [r[0] for r in ctx.run(analytics.top, maps, q, "service")] == ["maps"]
    for code, interval, fee in (("m", "month", "30"), ("y", "year", "120")):
        ctx.run(
            catalog.create_plan,
            maps,
            {
                "code": code,
                "name": code,
                "service": "maps",
                "currency": "USD",
                "interval": interval,
                "fixed_fee": fee,
                "charges": [],
            },
        )
    clock.set(DAY0 + timedelta(days=15))
    month = ctx.run(subscriptions.create, SYSTEM, user_ref=users[0], plan_code="m")
    ctx.run(subscriptions.create, SYSTEM, user_ref=users[1], plan_code="y")
    clock.set(DAY0 + timedelta(days=40))
    ctx.run(subscriptions.cancel, SYSTEM, month.id, timing="immediate")
    dec = datetime(2026, 12, 1, tzinfo=UTC)
    (before,) = ctx.run(analytics.subscription_metrics, maps, DAY0, dec)
    assert (before.active, before.mrr, before.arr) == (2, Decimal(40), Decimal(480))
    assert before.paying_users == 3 and before.arpu > 0
    (after,) = ctx.run(analytics.subscription_metrics, maps, dec, dec + timedelta(days=31))
    assert (after.active, after.mrr, after.active_at_start, after.churned) == (1, 10, 2, 1)
    assert after.churn_rate == Decimal("0.5")
    geo = world["geo"]
    assert isinstance(geo, Principal)
    assert ctx.run(analytics.subscription_metrics, geo, DAY0, dec)[0].active == 0


def test_concurrent_payouts_never_exceed_the_earned_balance(pg_ctx: Context) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ctx = pg_ctx
    provider = ctx.run(
        parties.create_provider, SYSTEM, name="P", email="p@p.io", commission_rate="0"
    )
    user = ctx.run(parties.create_user, SYSTEM, name="U", email="u@u.io", currency_code="USD")
    ctx.run(parties.top_up, SYSTEM, user.id, amount="10")
    ctx.run(
        parties.charge,
        SYSTEM,
        user_ref=user.id,
        amount="10",
        description="Work",
        provider_id=provider.id,
    )

    def pay(n: int) -> bool:
        try:
            ctx.run(settlement.payout, SYSTEM, provider_id=provider.id, amount="3")
        except InsufficientFunds:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(pay, range(12)))
    assert results.count(True) == 3
    (st,) = ctx.run(settlement.statements, SYSTEM, provider.id, ctx.clock.now().strftime("%Y-%m"))
    assert (
        st.closing == 1 * 10**st.currency.ledger_scale
        and st.payouts == 9 * 10**st.currency.ledger_scale
    )
    assert ctx.run(settlement.reconcile, ctx.clock.now().strftime("%Y-%m")).ok
