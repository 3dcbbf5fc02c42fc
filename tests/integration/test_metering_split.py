"""The revenue split of usage charges: the plan's commission rate overrides the provider's."""

from __future__ import annotations

from decimal import Decimal

from billfold import catalog, ledger, metering, parties
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.domain.ledger import PLATFORM_OWNER_ID, AccountKind, OwnerType
from billfold.domain.money import currency, from_units
from tests.conftest import START
from tests.integration.helpers import subscribe


def _balance(ctx: Context, owner_type: OwnerType, owner: str, kind: AccountKind) -> Decimal:
    with ctx.db.unit_of_work(read_only=True) as uow:
        account = ledger.find_account(uow, owner_type, owner, kind, "USD")
        assert account is not None
        return from_units(ledger.balance(uow, account).posted, currency("USD"))


def test_plan_commission_overrides_the_providers(ctx: Context) -> None:
    provider = ctx.run(
        parties.create_provider, SYSTEM, name="A", email="a@p.io", commission_rate="0.10"
    )
    me = Principal("k", Role.PROVIDER, provider_id=provider.id)
    user = ctx.run(parties.create_user, SYSTEM, name="U", email="u@u.io", currency_code="USD")
    ctx.run(parties.top_up, SYSTEM, user.id, amount="100")
    for code in ("maps", "geo"):
        ctx.run(catalog.create_service, me, code=code, name=code)
        ctx.run(catalog.create_metric, me, code, code="calls", name="Calls", aggregation="count")
    base = {
        "currency": "USD",
        "interval": "none",
        "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "1"}],
    }
    ctx.run(
        catalog.create_plan,
        me,
        {**base, "code": "maps-payg", "service": "maps", "commission_rate": "0.35"},
    )
    ctx.run(catalog.create_plan, me, {**base, "code": "geo-payg", "service": "geo"})
    subscribe(ctx, user.id, "maps")
    subscribe(ctx, user.id, "geo")
    stamp = START.isoformat()
    result = metering.ingest(
        ctx,
        me,
        [
            {
                "id": "m1",
                "user": user.id,
                "service": "maps",
                "metric": "calls",
                "value": 10,
                "timestamp": stamp,
            },
            {
                "id": "g1",
                "user": user.id,
                "service": "geo",
                "metric": "calls",
                "value": 10,
                "timestamp": stamp,
            },
        ],
    )
    assert result.accepted == 2 and len(result.charges) == 2
    # maps: 10 at 35% to the platform; geo: 10 at the provider's 10%.
    assert _balance(ctx, OwnerType.PROVIDER, provider.id, AccountKind.PROVIDER_EARNINGS) == (
        Decimal("6.5") + Decimal(9)
    )
    assert _balance(ctx, OwnerType.PLATFORM, PLATFORM_OWNER_ID, AccountKind.PLATFORM_REVENUE) == (
        Decimal("3.5") + Decimal(1)
    )
    assert ctx.run(parties.get_balance, SYSTEM, user.id).posted == Decimal(80)
