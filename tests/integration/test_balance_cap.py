"""The ledger's 2^62-unit cap refuses the one event that would pass it, not its batch."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from billfold import metering, parties
from billfold.core.access import SYSTEM
from billfold.core.context import Context
from billfold.domain.money import MAX_UNITS
from billfold.ledger.verify import verify
from tests.conftest import START
from tests.integration.helpers import funded_user, metered_catalog

# A billion dollars a call: 20 calls are 2e18 ledger units (USD keeps 8 decimals), and
# the cap, 2^62, is about 4.6e18.
PLAN = {
    "code": "maps-payg",
    "name": "Very dear",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "1000000000"}],
}


def _event(n: int, user: str, value: int) -> dict[str, object]:
    return {
        "id": f"e{n}",
        "user": user,
        "service": "maps",
        "metric": "calls",
        "value": value,
        "timestamp": START.isoformat(),
    }


def test_the_event_that_would_pass_the_cap_is_refused_and_the_rest_kept(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    alice, bob = funded_user(ctx, 1, "10"), funded_user(ctx, 2, "10")
    result = metering.ingest(
        ctx,
        me,
        [
            _event(0, alice, 20),
            _event(1, alice, 20),
            _event(2, bob, 1),
            _event(3, alice, 20),  # 6e18 in all: past the cap.
            _event(4, alice, 100),  # Past it on its own.
            _event(5, bob, 2),
        ],
    )
    assert result.accepted == 4
    assert [(r.index, r.code) for r in result.rejected] == [
        (3, "amount_too_large"),
        (4, "amount_too_large"),
    ]
    owed = {user: ctx.read(parties.get_balance, SYSTEM, user).receivable for user in (alice, bob)}
    assert owed[alice] == Decimal(40_000_000_000) - 10
    assert owed[bob] == Decimal(3_000_000_000) - 10
    # The refused events were not stored: sent again, they are refused again, not
    # counted as duplicates.
    again = metering.ingest(ctx, me, [_event(3, alice, 20), _event(6, alice, 1)])
    assert (again.accepted, again.duplicates) == (1, 0)
    assert [r.code for r in again.rejected] == ["amount_too_large"]
    assert ctx.read(verify, SYSTEM).ok


def test_concurrent_batches_near_the_cap_lose_nothing_else(ctx: Context) -> None:
    """Requests applied together in one group commit: a refused event is its own
    request's, by its index, and every other event of the group is kept. (The provider's
    earnings share the cap too, so one user is charged here.)"""
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "10")

    def send(n: int) -> tuple[int, list[int]]:
        batch = [_event(n * 10 + k, user, 10) for k in range(3)]
        result = metering.ingest(ctx, me, batch)
        assert result.duplicates == 0
        return result.accepted, [r.index for r in result.rejected]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))
    # 24 events of 1e18 units each: 4 fit under the cap, 20 do not.
    assert all(accepted + len(refused) == 3 for accepted, refused in results)
    assert sum(accepted for accepted, _ in results) == 4
    owed = ctx.read(parties.get_balance, SYSTEM, user).receivable
    assert owed == Decimal(40_000_000_000) - 10
    assert owed * 10**8 < MAX_UNITS
    assert ctx.read(verify, SYSTEM).ok
