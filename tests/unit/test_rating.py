"""Rating usage as it arrives adds up exactly to the quote of the whole period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from billfold.domain.pricing import Event, MetricUsage, Usage, parse_plan, quote
from billfold.domain.rating import MetricState, aggregate, rate, units_due

CHARGES: list[dict[str, Any]] = [
    {"metric": "m", "model": "per_unit", "unit_price": "0.0013", "free_units": 7},
    {
        "metric": "m",
        "model": "graduated",
        "tiers": [
            {"up_to": 10, "unit_price": "0.5", "flat_fee": 2},
            {"up_to": 100, "unit_price": "0.25"},
            {"up_to": None, "unit_price": "0.1", "flat_fee": 1},
        ],
    },
    {
        "metric": "m",
        "model": "volume",
        "tiers": [
            {"up_to": 10, "unit_price": "0.5"},
            {"up_to": None, "unit_price": "0.3", "flat_fee": 3},
        ],
    },
    {"metric": "m", "model": "package", "package_size": 7, "package_price": "1.1", "free_units": 3},
    {
        "metric": "m",
        "model": "graduated_percentage",
        "tiers": [{"up_to": 50, "rate": "0.02", "flat_fee": 1}, {"up_to": None, "rate": "0.01"}],
    },
    {
        "metric": "m",
        "model": "percentage",
        "rate": "0.029",
        "fixed_fee_per_event": "0.3",
        "free_events": 3,
        "free_amount": 20,
        "min_per_event": "0.31",
        "max_per_event": 4,
    },
    {
        "metric": "m",
        "model": "time_of_day",
        "timezone": "America/New_York",
        "windows": [
            {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "from": "09:00",
                "to": "18:00",
                "unit_price": "0.02",
            },
            {"days": ["sat"], "from": "22:00", "to": "02:00", "unit_price": "0.001"},
        ],
        "default_unit_price": "0.01",
        "free_units": 5,
    },
]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(CHARGES),
    st.lists(st.decimals(min_value=0, max_value=40, places=3), min_size=1, max_size=60),
    st.data(),
)
def test_batches_add_up_to_the_quote(
    charge: dict[str, Any], values: list[Decimal], data: st.DataObject
) -> None:
    plan = parse_plan({"code": "p", "service": "s", "currency": "USD", "charges": [charge]})
    start = datetime(2026, 11, 1, tzinfo=UTC)
    events = [Event("m", v, start + timedelta(hours=7 * i)) for i, v in enumerate(values)]
    cuts = sorted(
        data.draw(
            st.sets(
                st.integers(min_value=1, max_value=len(events) - 1)
                if len(events) > 1
                else st.nothing()
            )
        )
    )
    batches = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    state = MetricState()
    charged_units = 0
    for batch in batches:
        state = rate(plan, "m", "sum", state, batch)
        charged_units = units_due(state.amount, 8)
    whole = quote(plan, Usage({"m": MetricUsage(tuple(events))}))
    assert state.amount == whole.total
    assert charged_units == units_due(whole.total, 8)


def test_aggregations() -> None:
    t = datetime(2026, 11, 1, tzinfo=UTC)
    events = [
        Event("m", Decimal(3), t),
        Event("m", Decimal(9), t - timedelta(hours=1)),
        Event("m", Decimal(5), t + timedelta(hours=1)),
    ]
    state = MetricState(quantity=Decimal(4), latest_at=t - timedelta(days=1))
    assert aggregate("count", state, [Event("m", Decimal(1))] * 3)[0] == Decimal(7)
    assert aggregate("sum", state, events)[0] == Decimal(21)
    assert aggregate("max", state, events)[0] == Decimal(9)
    assert aggregate("latest", state, events) == (Decimal(5), t + timedelta(hours=1))
    assert aggregate("unique_count", state, events, new_unique=2)[0] == Decimal(6)


def test_units_are_rounded_once_from_the_cumulative_amount() -> None:
    plan = parse_plan(
        {
            "code": "p",
            "service": "s",
            "currency": "USD",
            "charges": [{"metric": "m", "model": "per_unit", "unit_price": "0.000000001"}],
        }
    )
    state = MetricState()
    charged = 0
    for _ in range(1000):
        state = rate(plan, "m", "count", state, [Event("m", Decimal(1))])
        charged = units_due(state.amount, 8)
    # 1000 calls at a tenth of a ledger unit each: 100 units, not 0 (per-call rounding) or 1000.
    assert charged == 100
