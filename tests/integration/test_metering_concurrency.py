"""Many clients metering and authorizing for the same users at once, on PostgreSQL.

16 threads send overlapping batches (the same event ids from several threads at once)
and authorize, capture and void usage for four thinly funded users. Afterwards: every
accepted event is stored once, each user's charges are exactly the price of its stored
usage (nothing charged twice, nothing lost), no wallet is below its floor, and verify
passes.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from billfold import authorizations, metering, parties
from billfold.clock import SystemClock
from billfold.core.access import SYSTEM
from billfold.core.context import Context
from billfold.domain.money import currency, to_units
from billfold.domain.pricing import MetricUsage, parse_plan, price_charge
from billfold.domain.rating import units_due
from billfold.ledger.verify import verify
from billfold.store.tables import usage_events
from tests.integration.helpers import funded_user, metered_catalog

PLAN = {
    "code": "payg",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [
        {
            "metric": "calls",
            "model": "graduated",
            "tiers": [{"up_to": 300, "unit_price": "0.01"}, {"up_to": None, "unit_price": "0.005"}],
        }
    ],
}
THREADS = 16
ROUNDS = 12


@pytest.mark.postgres
def test_concurrent_metering_and_authorizations(pg_ctx: Context) -> None:
    ctx = pg_ctx
    ctx.clock = SystemClock()
    me = metered_catalog(ctx, PLAN, commission_rate="0.3")
    users = [funded_user(ctx, n, "3") for n in range(4)]
    accepted = 0
    lock = threading.Lock()
    errors: list[BaseException] = []

    def event(n: int) -> dict[str, object]:
        # The same id always carries the same content, whichever thread sends it.
        return {
            "id": f"e-{n}",
            "user": users[n % 4],
            "service": "maps",
            "metric": "calls",
            "value": 1 + n % 3,
        }

    def worker(seed: int) -> None:
        nonlocal accepted
        rng = random.Random(seed)
        try:
            for _ in range(ROUNDS):
                if rng.random() < 0.7:
                    batch = [event(rng.randrange(600)) for _ in range(25)]
                    result = metering.ingest(ctx, me, batch)
                    assert not result.rejected, result.rejected
                    with lock:
                        accepted += result.accepted
                    continue
                auth = ctx.run(
                    authorizations.authorize,
                    me,
                    user_ref=rng.choice(users),
                    service_code="maps",
                    metric_code="calls",
                    quantity=5,
                )
                if auth.status != "approved":
                    continue
                if rng.random() < 0.6:
                    used = rng.randint(0, 5)
                    ctx.run(authorizations.capture, me, auth.id, quantity=used)
                    if used:
                        with lock:
                            accepted += 1  # The capture records its usage as one event.
                else:
                    ctx.run(authorizations.void, me, auth.id)
        except BaseException as error:  # Reported below with the thread's seed.
            errors.append(error)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))
    assert not errors, errors[:3]

    with ctx.db.unit_of_work(read_only=True) as uow:
        stored = int(uow.conn.execute(select(func.count()).select_from(usage_events)).scalar_one())
        per_user = {
            row.user_id: Decimal(row.total)
            for row in uow.conn.execute(
                select(
                    usage_events.c.user_id,
                    func.sum(func.cast(usage_events.c.value, usage_events.c.seq.type)).label(
                        "total"
                    ),
                ).group_by(usage_events.c.user_id)
            )
        }
    # Every accepted event is stored, and stored once.
    assert stored == accepted
    charge = parse_plan(PLAN).charges[0]
    usd = currency("USD")
    for user_id in users:
        balance = ctx.run(parties.get_balance, SYSTEM, user_id)
        assert balance.posted >= 0 and balance.held >= 0
        spent = to_units(Decimal(3) - balance.posted + balance.receivable, usd)
        expected = units_due(
            price_charge(charge, MetricUsage(given=per_user.get(user_id, Decimal(0)))).amount,
            usd.ledger_scale,
        )
        assert spent == expected, user_id
    report = ctx.run(verify, SYSTEM)
    assert report.ok, [(c.name, c.problems) for c in report.checks if not c.ok]


def test_requests_racing_with_the_same_event_ids_accept_each_once(ctx: Context) -> None:
    ctx.clock = SystemClock()
    me = metered_catalog(ctx, PLAN, commission_rate="0.3")
    user_id = funded_user(ctx, 0, "100")
    barrier = threading.Barrier(8)

    def send(index: int) -> tuple[int, int]:
        shared = [
            {"id": f"shared-{n}", "user": user_id, "service": "maps", "metric": "calls"}
            for n in range(50)
        ]
        own = [
            {"id": f"own-{index}-{n}", "user": user_id, "service": "maps", "metric": "calls"}
            for n in range(50)
        ]
        barrier.wait()
        result = metering.ingest(ctx, me, shared + own)
        return result.accepted, result.duplicates

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))
    assert sum(a for a, _ in results) == 50 + 8 * 50
    assert sum(d for _, d in results) == 7 * 50
    usd = currency("USD")
    charge = parse_plan(PLAN).charges[0]
    expected = units_due(
        price_charge(charge, MetricUsage(given=Decimal(450))).amount, usd.ledger_scale
    )
    spent = to_units(Decimal(100) - ctx.run(parties.get_balance, SYSTEM, user_id).posted, usd)
    assert spent == expected
    assert ctx.run(verify, SYSTEM).ok
