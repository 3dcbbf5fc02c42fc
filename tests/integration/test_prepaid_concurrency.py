"""32 clients spending one voucher and one package at once, on PostgreSQL: usage, one-off
charges and purchases race for the same grant and the same package cycle. Afterwards the
package covered exactly its quantity, the voucher paid exactly its sum, nothing was charged
twice, the rest was priced and paid in cash, and verify passes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from billfold import metering, parties, prepaid
from billfold.clock import SystemClock
from billfold.core.access import SYSTEM
from billfold.core.context import Context
from billfold.domain.errors import InsufficientFunds
from billfold.ledger.verify import verify
from tests.integration.helpers import funded_user, metered_catalog

PLAN = {
    "code": "maps-payg",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.01"}],
}
CLIENTS = 32
EVENTS = 25  # per client: 800 calls against a package of 500.


@pytest.mark.postgres
def test_32_clients_never_spend_more_than_a_voucher_and_a_package_hold(pg_ctx: Context) -> None:
    ctx = pg_ctx
    ctx.clock = SystemClock()
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "100")
    package = ctx.run(
        prepaid.create_package, me, code="p500", name="500 calls", service="maps",
        currency_code="USD", price="1", quantities={"calls": "500"}, validity_days=30,
    ).id  # fmt: skip
    ctx.run(prepaid.buy_package, SYSTEM, user, package)  # 1.00 from cash: 99 left.
    ctx.run(prepaid.create_coupon, SYSTEM, code="FIVE", kind="amount", currency_code="USD",
            amount="5")  # fmt: skip
    ctx.run(prepaid.redeem, SYSTEM, user, "FIVE")
    now = ctx.clock.now().isoformat()

    def client(n: int) -> Decimal:
        result = metering.ingest(
            ctx,
            me,
            [
                {"id": f"c{n}-{i}", "user": user, "service": "maps", "metric": "calls",
                 "timestamp": now, "value": "1"}
                for i in range(EVENTS)
            ],
        )  # fmt: skip
        assert result.accepted == EVENTS
        try:
            ctx.run(parties.charge, me, user_ref=user, amount="0.25", description=f"fee {n}",
                    service="maps")  # fmt: skip
        except InsufficientFunds:  # pragma: no cover - 99 cash is plenty
            return Decimal(0)
        return Decimal("0.25")

    with ThreadPoolExecutor(CLIENTS) as pool:
        fees = sum(pool.map(client, range(CLIENTS)), Decimal(0))

    [held] = ctx.run(prepaid.list_holdings, SYSTEM, user)
    assert held.used == {"calls": Decimal(500)}
    balance = ctx.run(parties.get_balance, SYSTEM, user)
    # 800 calls: 500 covered, 300 priced at 0.01 = 3.00; fees 8.00. The voucher paid 5 of
    # the 11.00, cash the other 6.00.
    assert fees == Decimal(8)
    assert balance.vouchers == 0
    assert balance.cash == Decimal(99) - Decimal(6)
    report = ctx.run(verify, SYSTEM)
    assert report.ok, [c.problems for c in report.checks if not c.ok]
