"""One gateway success delivered by 16 clients at once (notifications and returns racing),
on PostgreSQL: the wallet is credited exactly once, and verify passes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from billfold import parties, payments
from billfold.clock import SystemClock
from billfold.core.access import SYSTEM
from billfold.core.context import Context
from billfold.ledger.verify import verify
from billfold.store.tables import payments as payment_rows


@pytest.mark.postgres
def test_a_success_raced_by_16_deliveries_credits_once(pg_ctx: Context) -> None:
    ctx = pg_ctx
    ctx.clock = SystemClock()
    user = ctx.run(parties.create_user, SYSTEM, name="U", email="u@u.io", currency_code="USD")
    now = ctx.clock.now()
    ctx.run(
        lambda work: work.conn.execute(
            payment_rows.insert().values(
                id="pay_race", user_id=user.id, gateway="stripe", purpose="top_up",
                currency="USD", amount=42 * 10**8, status="pending", gateway_ref="pi_race",
                refunded=0, created_at=now, updated_at=now,
            )
        )
    )  # fmt: skip
    notice = payments.Notice("pi_race", "pi_race", "succeeded", 4200, "USD", "evt_1")

    def deliver(_: int) -> str:
        return str(ctx.run(lambda work: payments.apply_notice(work, "stripe", notice)))

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(deliver, range(16)))
    assert outcomes.count("succeeded") == 1 and outcomes.count("replayed") == 15
    assert ctx.run(parties.get_balance, SYSTEM, user.id).cash == Decimal(42)
    report = ctx.run(verify, SYSTEM)
    assert report.ok
