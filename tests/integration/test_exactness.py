"""A million charges of 0.000001 through the ledger total exactly 1.00."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billfold import ledger
from billfold.core.context import Context
from billfold.domain.money import currency, from_units, to_units
from tests.integration.helpers import charge_spec, open_books, top_up_spec

BATCH = 10_000


# About 3 minutes on a slow 2-core machine: room beyond the suite's 300 s per test.
@pytest.mark.timeout(900)
@pytest.mark.slow
def test_a_million_micro_charges_total_exactly_one(sqlite_ctx: Context) -> None:
    ctx = sqlite_ctx
    usd = currency("USD")
    books = open_books(ctx)
    unit = to_units(Decimal("0.000001"), usd)
    with ctx.db.unit_of_work() as uow:
        ledger.post(
            uow, top_up_spec(books, to_units(Decimal(2), usd), "funding"), now=ctx.clock.now()
        )
        uow.commit()
    for batch in range(100):
        specs = [
            charge_spec(books, unit, f"m{batch}-{n}", commission=unit // 5) for n in range(BATCH)
        ]
        with ctx.db.unit_of_work() as uow:
            results = ledger.post_many(uow, specs, now=ctx.clock.now())
            uow.commit()
        assert all(not isinstance(r, Exception) for r in results)
    with ctx.db.unit_of_work(read_only=True) as uow:
        wallet = ledger.balance(uow, books.wallet).posted
        provider = ledger.balance(uow, books.provider).posted
        revenue = ledger.balance(uow, books.revenue).posted
    assert from_units(to_units(Decimal(2), usd) - wallet, usd) == Decimal(1)
    assert from_units(provider + revenue, usd) == Decimal(1)
    assert (from_units(provider, usd), from_units(revenue, usd)) == (Decimal("0.8"), Decimal("0.2"))
