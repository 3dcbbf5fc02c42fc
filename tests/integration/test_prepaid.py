"""Prepaid products on the ledger, on SQLite and PostgreSQL: resource packages drawn before
the plan, vouchers then credit then cash, discount coupons, refunds back to their sources,
resets and expiry."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from billfold import ledger, metering, parties, prepaid
from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.domain.errors import Conflict, InsufficientFunds, InvalidRequest, NotFound
from billfold.ledger.verify import verify_in
from billfold.metering.records import list_records
from tests.integration.helpers import funded_user, metered_catalog

USD = 10**8  # Ledger units of one dollar.
PLAN = {
    "code": "maps-payg",
    "name": "Maps",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.01"}],
}


def _events(ctx: Context, me: Principal, user: str, n: int, tag: str, **at: float) -> None:
    moment = ctx.clock.now() + timedelta(**at) if at else ctx.clock.now()
    result = metering.ingest(
        ctx,
        me,
        [
            {"id": f"{tag}-{i}", "user": user, "service": "maps", "metric": "calls",
             "timestamp": moment.isoformat(), "value": "1"}
            for i in range(n)
        ],
    )  # fmt: skip
    assert result.accepted == n, result.rejected


def _balance(ctx: Context, user: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    view = ctx.run(parties.get_balance, SYSTEM, user)
    return view.cash, view.vouchers, view.credits, view.available


def _package(ctx: Context, me: Principal, **terms: object) -> str:
    body: dict[str, object] = {
        "code": "calls-1k",
        "name": "1,000 calls",
        "service": "maps",
        "currency_code": "USD",
        "price": "5",
        "quantities": {"calls": "1000"},
        "validity_days": 30,
        "reset": "none",
    }
    body.update(terms)
    return ctx.run(prepaid.create_package, me, **body).id  # type: ignore[arg-type]


def _verified(ctx: Context) -> None:
    report = ctx.read(verify_in)
    assert report.ok, [c.problems for c in report.checks if not c.ok]


def test_a_package_covers_usage_before_the_plan_and_the_rest_is_priced(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "20")
    package = _package(ctx, me, quantities={"calls": "100"})
    me_user = Principal("ku", Role.USER, user_id=user)
    holding = ctx.run(prepaid.buy_package, me_user, user, package)
    assert holding.remaining == {"calls": Decimal(100)}
    assert _balance(ctx, user)[0] == Decimal(15)  # The sale: 5 from cash.
    _events(ctx, me, user, 60, "a")
    _events(ctx, me, user, 60, "b")  # 40 covered, 20 priced at 0.01.
    assert _balance(ctx, user)[0] == Decimal("14.80")
    [held] = ctx.run(prepaid.list_holdings, me_user, user)
    assert held.used == {"calls": Decimal(100)} and held.remaining == {"calls": Decimal(0)}
    [record] = ctx.read(list_records, SYSTEM, user_id=user)
    assert Decimal(record.quantity) == 20 and Decimal(record.amount) == Decimal("0.2")
    assert Decimal(record.covered) == 100
    # The provider earned its share of the sale and of the priced usage (20% commission).
    provider = ctx.read(
        ledger.find_account,
        ledger_owner("provider"),
        me.provider_id,
        ledger_kind("earnings"),
        "USD",
    )
    assert ctx.read(ledger.balance, provider).posted == int(Decimal("5.2") * USD * 8 / 10)
    _verified(ctx)


def ledger_owner(name: str) -> object:
    from billfold.domain.ledger import OwnerType

    return OwnerType.PROVIDER if name == "provider" else OwnerType.PLATFORM


def ledger_kind(name: str) -> object:
    from billfold.domain.ledger import AccountKind

    return AccountKind.PROVIDER_EARNINGS if name == "earnings" else AccountKind.PLATFORM_REVENUE


def test_the_package_expiring_first_is_drawn_first(ctx: Context, clock: TestClock) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "20")
    long = _package(ctx, me, code="long", quantities={"calls": "10"}, validity_days=60)
    short = _package(ctx, me, code="short", quantities={"calls": "10"}, validity_days=10)
    ctx.run(prepaid.buy_package, SYSTEM, user, long)
    ctx.run(prepaid.buy_package, SYSTEM, user, short)
    _events(ctx, me, user, 12, "a")
    by_code = {h.package_code: h for h in ctx.run(prepaid.list_holdings, SYSTEM, user)}
    assert by_code["short"].remaining == {"calls": Decimal(0)}
    assert by_code["long"].remaining == {"calls": Decimal(8)}
    clock.advance(days=11)  # The short one has expired: what it had left is gone.
    assert [h.package_code for h in ctx.run(prepaid.list_holdings, SYSTEM, user)] == ["long"]


def test_a_daily_package_refills_without_rolling_over(ctx: Context, clock: TestClock) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "20")
    package = _package(ctx, me, quantities={"calls": "10"}, reset="day", validity_days=3)
    ctx.run(prepaid.buy_package, SYSTEM, user, package)
    _events(ctx, me, user, 4, "d1")  # 6 left unused on day one.
    clock.advance(days=1, hours=1)
    [held] = ctx.run(prepaid.list_holdings, SYSTEM, user)
    assert held.remaining == {"calls": Decimal(10)}  # Not 16.
    cash = _balance(ctx, user)[0]
    _events(ctx, me, user, 12, "d2")  # 10 covered, 2 priced.
    assert _balance(ctx, user)[0] == cash - Decimal("0.02")
    clock.advance(days=2)
    cash = _balance(ctx, user)[0]
    _events(ctx, me, user, 3, "late")  # Expired: all priced.
    assert _balance(ctx, user)[0] == cash - Decimal("0.03")
    _verified(ctx)


def test_a_package_for_a_metric_that_is_not_counted_or_summed_is_refused(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    from billfold import catalog

    ctx.run(
        catalog.create_metric, me, "maps", code="peak", name="Peak", aggregation="max", field="n"
    )
    with pytest.raises(InvalidRequest) as refused:
        _package(ctx, me, quantities={"peak": "5"})
    assert refused.value.param == "quantities.peak"
    with pytest.raises(InvalidRequest):
        _package(ctx, me, quantities={"nope": "5"})
    with pytest.raises(InvalidRequest):
        _package(ctx, me, quantities={"calls": "-1"})


def test_another_providers_service_cannot_hold_a_package(ctx: Context) -> None:
    metered_catalog(ctx, PLAN)
    other = ctx.run(
        parties.create_provider, SYSTEM, name="B", email="b@p.io", commission_rate="0.1"
    )
    stranger = Principal("kb", Role.PROVIDER, provider_id=other.id)
    with pytest.raises(NotFound):
        _package(ctx, stranger)


def test_a_sale_the_wallet_cannot_cover_changes_nothing(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "4")
    package = _package(ctx, me)
    with pytest.raises(InsufficientFunds):
        ctx.run(prepaid.buy_package, SYSTEM, user, package)
    assert ctx.run(prepaid.list_holdings, SYSTEM, user) == []
    assert _balance(ctx, user)[0] == 4


def test_spend_order_is_vouchers_in_scope_then_credit_then_cash(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "10")
    ctx.run(prepaid.create_coupon, SYSTEM, code="MAPS3", kind="amount", currency_code="USD",
            amount="3", services=["maps"])  # fmt: skip
    ctx.run(prepaid.redeem, SYSTEM, user, "maps3")  # Codes are not case-sensitive.
    ctx.run(prepaid.grant_credit, SYSTEM, user, amount="2", expires_at=None, reason="welcome")
    assert _balance(ctx, user) == (Decimal(10), Decimal(3), Decimal(2), Decimal(15))
    _events(ctx, me, user, 400, "a")  # 4.00: 3 voucher, 1 credit.
    assert _balance(ctx, user) == (Decimal(10), Decimal(0), Decimal(1), Decimal(11))
    _events(ctx, me, user, 300, "b")  # 3.00: 1 credit, 2 cash.
    assert _balance(ctx, user) == (Decimal(8), Decimal(0), Decimal(0), Decimal(8))
    _verified(ctx)


def test_a_voucher_out_of_scope_is_not_spent(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "10")
    from tests.integration.helpers import make_customer

    make_customer(ctx, str(me.provider_id), user, "shop")
    ctx.run(prepaid.create_coupon, SYSTEM, code="SHOPONLY", kind="amount", currency_code="USD",
            amount="3", services=["shop"])  # fmt: skip
    ctx.run(prepaid.redeem, SYSTEM, user, "SHOPONLY")
    _events(ctx, me, user, 100, "a")
    assert _balance(ctx, user)[:2] == (Decimal(9), Decimal(3))


def test_a_refund_goes_back_where_the_money_came_from(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "10")
    ctx.run(prepaid.grant_credit, SYSTEM, user, amount="1", expires_at=None, reason="promo")
    charge = ctx.run(parties.charge, me, user_ref=user, amount="4", description="setup",
                     service="maps")  # fmt: skip
    assert _balance(ctx, user)[:3] == (Decimal(7), Decimal(0), Decimal(0))
    ctx.run(parties.refund, me, charge.transfer.id, amount="2")  # Half: 0.50 credit, 1.50 cash.
    assert _balance(ctx, user)[:3] == (Decimal("8.5"), Decimal(0), Decimal("0.5"))
    ctx.run(parties.refund, me, charge.transfer.id)  # The rest, exactly.
    assert _balance(ctx, user)[:3] == (Decimal(10), Decimal(0), Decimal(1))
    with pytest.raises(InvalidRequest):
        ctx.run(parties.refund, me, charge.transfer.id, amount="0.01")
    _verified(ctx)


def test_a_refunded_sale_ends_the_package(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "10")
    holding = ctx.run(prepaid.buy_package, SYSTEM, user, _package(ctx, me))
    ctx.run(parties.refund, me, holding.transfer_id)
    assert ctx.run(prepaid.list_holdings, SYSTEM, user) == []
    [ended] = ctx.run(prepaid.list_holdings, SYSTEM, user, include_ended=True)
    assert ended.status == "refunded"
    assert _balance(ctx, user)[0] == 10
    cash = _balance(ctx, user)[0]
    _events(ctx, me, user, 5, "after")
    assert _balance(ctx, user)[0] == cash - Decimal("0.05")


def test_expired_credit_and_vouchers_go_back_to_their_funder(
    ctx: Context, clock: TestClock
) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "10")
    soon = clock.now() + timedelta(days=2)
    ctx.run(prepaid.grant_credit, SYSTEM, user, amount="2", expires_at=soon, reason="trial")
    ctx.run(prepaid.create_coupon, me, code="MAPSGIFT", kind="amount", currency_code="USD",
            amount="1.5", expires_at=soon)  # fmt: skip
    ctx.run(prepaid.redeem, SYSTEM, user, "MAPSGIFT")
    earnings = ctx.read(
        ledger.find_account,
        ledger_owner("provider"),
        me.provider_id,
        ledger_kind("earnings"),
        "USD",
    )
    assert ctx.read(ledger.balance, earnings).posted == int(Decimal("-1.5") * USD)
    _events(ctx, me, user, 100, "a")  # 1.00 from the provider's voucher.
    clock.advance(days=3)
    assert _balance(ctx, user)[1:3] == (Decimal(0), Decimal(0))  # Expired, not yet swept.
    assert ctx.run(lambda w: prepaid.expire_due(w, now=clock.now())) == 2
    assert ctx.run(lambda w: prepaid.expire_due(w, now=clock.now())) == 0
    # The provider paid 1.00 for the usage it gave away and got back the 0.50 left; it
    # earned its 80% of the 1.00: -1.5 + 0.5 + 0.8.
    assert ctx.read(ledger.balance, earnings).posted == int(Decimal("-0.2") * USD)
    _verified(ctx)


def test_a_discount_coupon_takes_its_part_off_a_purchase_once(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "20")
    package = _package(ctx, me, price="10")
    ctx.run(prepaid.create_coupon, SYSTEM, code="HALF", kind="percent", currency_code="USD",
            percent="50", max_discount="4", min_spend="8")  # fmt: skip
    ctx.run(prepaid.redeem, SYSTEM, user, "HALF")
    with pytest.raises(Conflict):
        ctx.run(prepaid.redeem, SYSTEM, user, "HALF")
    ctx.run(prepaid.buy_package, SYSTEM, user, package)  # 50% capped at 4: pays 6.
    assert _balance(ctx, user)[0] == 14
    ctx.run(prepaid.buy_package, SYSTEM, user, package)  # Used up: pays 10.
    assert _balance(ctx, user)[0] == 4
    # The platform paid the discount; the provider got its full share of both sales.
    earnings = ctx.read(
        ledger.find_account,
        ledger_owner("provider"),
        me.provider_id,
        ledger_kind("earnings"),
        "USD",
    )
    assert ctx.read(ledger.balance, earnings).posted == 16 * USD
    _verified(ctx)


def test_a_coupon_is_redeemed_at_most_its_limit_and_not_after_expiry(
    ctx: Context, clock: TestClock
) -> None:
    metered_catalog(ctx, PLAN)
    users = [funded_user(ctx, n, "1") for n in range(3)]
    ctx.run(prepaid.create_coupon, SYSTEM, code="TWO", kind="amount", currency_code="USD",
            amount="1", max_redemptions=2, expires_at=clock.now() + timedelta(days=1))  # fmt: skip
    ctx.run(prepaid.redeem, SYSTEM, users[0], "TWO")
    ctx.run(prepaid.redeem, SYSTEM, users[1], "TWO")
    with pytest.raises(Conflict) as used_up:
        ctx.run(prepaid.redeem, SYSTEM, users[2], "TWO")
    assert used_up.value.code == "coupon_used_up"
    clock.advance(days=2)
    with pytest.raises(InvalidRequest) as late:
        ctx.run(prepaid.redeem, SYSTEM, users[2], "TWO")
    assert late.value.code == "coupon_expired"


def test_a_provider_coupon_covers_only_its_own_services(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    other = ctx.run(
        parties.create_provider, SYSTEM, name="B", email="b@p.io", commission_rate="0.1"
    )
    stranger = Principal("kb", Role.PROVIDER, provider_id=other.id)
    with pytest.raises(NotFound):
        ctx.run(prepaid.create_coupon, stranger, code="STEAL", kind="amount",
                currency_code="USD", amount="1", services=["maps"])  # fmt: skip
    del me


def test_an_operator_coupon_for_a_provider_that_does_not_exist_is_a_404(ctx: Context) -> None:
    """Found by schemathesis: an empty or unknown provider_id was a 500 (a foreign key)."""
    for provider_id in ("", "prv_nobody"):
        with pytest.raises(NotFound):
            ctx.run(prepaid.create_coupon, SYSTEM, code="GIFT10", kind="amount",
                    currency_code="USD", amount="10", provider_id=provider_id)  # fmt: skip


def test_only_an_admin_grants_credit(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "1")
    from billfold.domain.errors import PermissionDenied

    for who in (me, Principal("ku", Role.USER, user_id=user)):
        with pytest.raises(PermissionDenied):
            ctx.run(prepaid.grant_credit, who, user, amount="5", expires_at=None, reason="x")
    assert _balance(ctx, user)[2] == 0


def test_package_alerts_at_80_and_100_percent_and_3_days_before_expiry(
    ctx: Context, clock: TestClock
) -> None:
    from billfold import alerts

    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "20")
    ctx.run(prepaid.buy_package, SYSTEM, user, _package(ctx, me, quantities={"calls": "10"},
                                                        validity_days=5))  # fmt: skip

    def seen() -> list[tuple[str, str | None]]:
        found = ctx.run(alerts.list_alerts, SYSTEM)
        return sorted((a.type, a.data.get("level")) for a in found if a.type.startswith("package"))

    _events(ctx, me, user, 7, "a")
    alerts.evaluate(ctx)
    assert seen() == []
    _events(ctx, me, user, 1, "b")
    alerts.evaluate(ctx)
    assert seen() == [("package.used", "0.8")]
    _events(ctx, me, user, 5, "c")
    alerts.evaluate(ctx)
    alerts.evaluate(ctx)  # Each once.
    assert seen() == [("package.used", "0.8"), ("package.used", "1")]
    clock.advance(days=2, hours=1)
    alerts.evaluate(ctx)
    assert ("package.expiring", None) in seen()


def test_statements_and_reconcile_agree_with_the_ledger_with_every_promotion_in_play(
    ctx: Context, clock: TestClock
) -> None:
    from billfold import analytics, settlement

    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "30")
    package = _package(ctx, me, price="10", quantities={"calls": "100"})
    ctx.run(prepaid.create_coupon, SYSTEM, code="TENOFF", kind="percent", currency_code="USD",
            percent="10")  # fmt: skip
    ctx.run(prepaid.create_coupon, me, code="OWNFIVE", kind="amount", currency_code="USD",
            amount="5", expires_at=clock.now() + timedelta(days=5))  # fmt: skip
    ctx.run(prepaid.create_coupon, SYSTEM, code="PLAT2", kind="amount", currency_code="USD",
            amount="2")  # fmt: skip
    for code in ("TENOFF", "OWNFIVE", "PLAT2"):
        ctx.run(prepaid.redeem, SYSTEM, user, code)
    ctx.run(prepaid.grant_credit, SYSTEM, user, amount="1", expires_at=None, reason="hello")
    holding = ctx.run(
        prepaid.buy_package, SYSTEM, user, package
    )  # 9.00: vouchers 7, credit 1, cash 1
    _events(ctx, me, user, 300, "a")  # 100 covered, 2.00 from cash.
    ctx.run(parties.refund, me, holding.transfer_id, amount="4.5")
    clock.advance(days=6)
    ctx.run(lambda w: prepaid.expire_due(w, now=clock.now()))
    analytics.fold(ctx)
    report = ctx.run(settlement.reconcile, "2026-11")
    assert report.differences == []
    [statement] = ctx.run(settlement.statements, me, str(me.provider_id), "2026-11")
    assert statement.promotions == int(Decimal("2.5") * USD)  # 5 funded, 2.50 came back.
    # The platform's own: 3 granted (a 2 voucher, 1 credit), 1 off the sale, 0.50 of it
    # back with the half refund.
    [platform] = ctx.run(settlement.promotion_costs, SYSTEM, "2026-11")
    assert (platform.granted, platform.discounts, platform.returned) == (3 * USD, 1 * USD, USD // 2)
    assert platform.cost == int(Decimal("3.5") * USD)
    assert statement.opening + statement.net - statement.payouts == statement.closing
    _verified(ctx)


def test_an_invoice_line_says_what_packages_covered(ctx: Context, clock: TestClock) -> None:
    from billfold import invoicing
    from billfold.invoicing import invoices

    monthly = {**PLAN, "code": "maps-month", "interval": "month", "fixed_fee": "1"}
    me = metered_catalog(ctx, monthly)
    user = funded_user(ctx, 1, "20", customer_of=None)
    from billfold import subscriptions

    ctx.run(subscriptions.create, SYSTEM, user_ref=user, plan_code="maps-month",
            service_code=None, start=None)  # fmt: skip
    ctx.run(prepaid.buy_package, SYSTEM, user, _package(ctx, me, quantities={"calls": "30"}))
    _events(ctx, me, user, 50, "a")  # 30 covered, 20 priced.
    clock.set(clock.now().replace(month=12, day=1, hour=1))
    invoicing.bill_run(ctx)
    found, _more = ctx.run(invoices.list_for, SYSTEM, user=user)
    lines = [line for inv in found for line in inv.lines if line.kind == "usage"]
    assert lines, found
    assert any("30 covered by resource packages" in line.description for line in lines)
    assert any(Decimal(line.quantity) == 20 for line in lines)


def test_entitlements_and_authorizations_count_what_packages_have_left(ctx: Context) -> None:
    from billfold import authorizations

    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "5")
    ctx.run(prepaid.buy_package, SYSTEM, user, _package(ctx, me, quantities={"calls": "100"}))
    assert _balance(ctx, user)[0] == 0  # All the cash went on the package.
    found = ctx.run(authorizations.entitlements, SYSTEM, user, "maps")
    assert found.has_access and found.remaining["calls"] == 100
    inside = ctx.run(authorizations.authorize, me, user_ref=user, service_code="maps",
                     metric_code="calls", quantity="100")  # fmt: skip
    assert inside.status == "approved" and inside.amount == 0
    beyond = ctx.run(authorizations.authorize, me, user_ref=user, service_code="maps",
                     metric_code="calls", quantity="101")  # fmt: skip
    assert beyond.status == "declined" and beyond.reason == "insufficient_funds"


@pytest.mark.parametrize("funded_by", ["platform", "provider"])
def test_a_discount_coupon_takes_its_part_off_an_invoice_and_its_funder_pays_it(
    ctx: Context, funded_by: str
) -> None:
    from billfold import analytics, settlement, subscriptions
    from billfold.invoicing import invoices

    monthly = {**PLAN, "code": "maps-month", "interval": "month", "fixed_fee": "10"}
    me = metered_catalog(ctx, monthly)
    user = funded_user(ctx, 1, "20", customer_of=None)
    ctx.run(prepaid.create_coupon, SYSTEM if funded_by == "platform" else me, code="HALFFEE",
            kind="percent", currency_code="USD", percent="50")  # fmt: skip
    ctx.run(prepaid.redeem, SYSTEM, user, "HALFFEE")
    ctx.run(subscriptions.create, SYSTEM, user_ref=user, plan_code="maps-month",
            service_code=None, start=None)  # fmt: skip
    [invoice], _more = ctx.run(invoices.list_for, SYSTEM, user=user)
    kinds = {line.kind: line.amount for line in invoice.lines}
    assert kinds["discount"] == -kinds["fixed_fee"] / 2
    assert _balance(ctx, user)[0] == 20 - kinds["fixed_fee"] / 2
    earnings = ctx.read(
        ledger.find_account,
        ledger_owner("provider"),
        me.provider_id,
        ledger_kind("earnings"),
        "USD",
    )
    share = ctx.read(ledger.balance, earnings).posted
    fee = int(kinds["fixed_fee"] * USD)
    # The provider earns 80% of the whole fee; its own coupon's discount comes out of it.
    assert share == fee * 8 // 10 - (fee // 2 if funded_by == "provider" else 0)
    analytics.fold(ctx)
    assert ctx.run(settlement.reconcile, "2026-11").differences == []
    _verified(ctx)


def test_a_purchase_sent_twice_buys_one_package(ctx: Context) -> None:
    """A broken client (or a form sent twice) retries with the same transfer id."""
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "12")
    package = _package(ctx, me)
    first = ctx.run(prepaid.buy_package, SYSTEM, user, package, transfer_id="tr_retry")
    again = ctx.run(prepaid.buy_package, SYSTEM, user, package, transfer_id="tr_retry")
    assert first.id == again.id
    assert len(ctx.run(prepaid.list_holdings, SYSTEM, user)) == 1
    assert _balance(ctx, user)[0] == 7
