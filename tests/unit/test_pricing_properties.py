"""Properties of the pricing engine, stated as Hypothesis tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from billfold.domain.pricing import (
    Event,
    MetricUsage,
    Usage,
    parse_charge,
    parse_plan,
    price_charge,
    quote,
)

prices = st.decimals(min_value=0, max_value=1000, places=4)
quantities = st.decimals(min_value=0, max_value=10**6, places=3)


@st.composite
def tier_lists(draw: st.DrawFn, price_field: str = "unit_price") -> list[dict[str, Any]]:
    bounds = sorted(set(draw(st.lists(st.integers(min_value=1, max_value=10**5), max_size=6))))
    values = st.decimals(min_value=0, max_value=1, places=4) if price_field == "rate" else prices
    tiers = [{"up_to": b, price_field: draw(values), "flat_fee": draw(prices)} for b in bounds]
    tiers.append({"up_to": None, price_field: draw(values), "flat_fee": draw(prices)})
    return tiers


def usage_of(q: Decimal) -> MetricUsage:
    return MetricUsage(given=q)


@given(tier_lists(), quantities, quantities)
def test_graduated_never_decreases_as_quantity_grows(
    tiers: list[dict[str, Any]], a: Decimal, b: Decimal
) -> None:
    charge = parse_charge({"metric": "m", "model": "graduated", "tiers": tiers}, "c")
    low, high = sorted((a, b))
    assert price_charge(charge, usage_of(low)).amount <= price_charge(charge, usage_of(high)).amount


@given(prices, quantities, st.sampled_from(["graduated", "volume"]))
def test_a_single_tier_equals_per_unit(price: Decimal, q: Decimal, model: str) -> None:
    tiered = parse_charge(
        {"metric": "m", "model": model, "tiers": [{"up_to": None, "unit_price": price}]}, "c"
    )
    per_unit = parse_charge({"metric": "m", "model": "per_unit", "unit_price": price}, "c")
    assert price_charge(tiered, usage_of(q)).amount == price_charge(per_unit, usage_of(q)).amount


moments = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)


@given(
    prices,
    st.lists(st.tuples(moments, quantities), max_size=30),
    st.sampled_from(["America/New_York", "Asia/Shanghai", "Europe/London", "UTC"]),
    st.decimals(min_value=0, max_value=50, places=2),
)
def test_time_of_day_with_every_window_at_the_default_equals_per_unit(
    price: Decimal, raw: list[tuple[datetime, Decimal]], zone: str, free: Decimal
) -> None:
    windows = [
        {"days": ["mon", "tue"], "from": "09:00", "to": "18:00", "unit_price": price},
        {"days": ["fri", "sat"], "from": "22:00", "to": "06:00", "unit_price": price},
    ]
    tod = parse_charge(
        {
            "metric": "m",
            "model": "time_of_day",
            "timezone": zone,
            "windows": windows,
            "default_unit_price": price,
            "free_units": free,
        },
        "c",
    )
    per_unit = parse_charge(
        {"metric": "m", "model": "per_unit", "unit_price": price, "free_units": free}, "c"
    )
    usage = MetricUsage(tuple(Event("m", v, t) for t, v in sorted(raw)))
    assert price_charge(tod, usage).amount == price_charge(per_unit, usage).amount


total_only_charges = st.one_of(
    st.builds(lambda t: {"metric": "m", "model": "graduated", "tiers": t}, tier_lists()),
    st.builds(lambda t: {"metric": "m", "model": "volume", "tiers": t}, tier_lists()),
    st.builds(
        lambda t: {"metric": "m", "model": "graduated_percentage", "tiers": t}, tier_lists("rate")
    ),
    st.builds(
        lambda p, f: {"metric": "m", "model": "per_unit", "unit_price": p, "free_units": f},
        prices,
        quantities,
    ),
    st.builds(
        lambda s, p, f, r: {
            "metric": "m",
            "model": "package",
            "package_size": s,
            "package_price": p,
            "free_units": f,
            "rounding": r,
        },
        st.integers(min_value=1, max_value=1000),
        prices,
        quantities,
        st.sampled_from(["up", "down"]),
    ),
)


@given(total_only_charges, st.lists(quantities, min_size=1, max_size=20), st.randoms())
def test_models_of_the_total_ignore_how_usage_is_split_into_events(
    definition: dict[str, Any], values: list[Decimal], rng: Any
) -> None:
    charge = parse_charge(definition, "c")
    assert charge.depends_only_on_total
    start = datetime(2026, 11, 1, tzinfo=UTC)
    shuffled = list(values)
    rng.shuffle(shuffled)
    as_events = MetricUsage(
        tuple(Event("m", v, start + timedelta(seconds=i)) for i, v in enumerate(shuffled))
    )
    as_total = MetricUsage(given=sum(values, Decimal(0)))
    assert price_charge(charge, as_events).amount == price_charge(charge, as_total).amount


@settings(max_examples=50)
@given(st.lists(total_only_charges, min_size=1, max_size=4), quantities, prices, prices)
def test_the_quote_total_is_the_sum_of_its_lines_and_never_a_float(
    charges: list[dict[str, Any]], q: Decimal, fixed_fee: Decimal, minimum: Decimal
) -> None:
    plan = parse_plan(
        {
            "code": "p",
            "service": "s",
            "currency": "USD",
            "fixed_fee": fixed_fee,
            "minimum": minimum,
            "charges": charges,
        }
    )
    result = quote(plan, Usage({"m": MetricUsage(given=q)}))
    assert result.total == sum((line.amount for line in result.lines), Decimal(0))
    assert all(isinstance(line.amount, Decimal) for line in result.lines)

    def no_floats(value: object) -> None:
        assert not isinstance(value, float)
        if isinstance(value, dict):
            for item in value.values():
                no_floats(item)
        if isinstance(value, list):
            for item in value:
                no_floats(item)

    body = result.to_dict()
    no_floats(body)
    assert json.loads(json.dumps(body)) == body
