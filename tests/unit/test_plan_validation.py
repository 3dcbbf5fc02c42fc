"""A plan that cannot be priced is refused, and the error names the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from billfold.domain.errors import InvalidRequest, LimitExceeded
from billfold.domain.pricing import parse_plan, parse_usage

BASE: dict[str, Any] = {
    "code": "p",
    "name": "P",
    "service": "s",
    "currency": "USD",
    "interval": "month",
    "charges": [
        {
            "metric": "a",
            "model": "graduated",
            "tiers": [{"up_to": 10, "unit_price": 1}, {"up_to": None, "unit_price": "0.5"}],
        },
        {
            "metric": "b",
            "model": "time_of_day",
            "timezone": "Europe/Berlin",
            "windows": [{"days": ["mon"], "from": "09:00", "to": "17:00", "unit_price": 2}],
            "default_unit_price": 1,
        },
        {"metric": "c", "model": "package", "package_size": 10, "package_price": 5},
    ],
}


def with_change(path: str, value: object) -> dict[str, Any]:
    plan = copy.deepcopy(BASE)
    target: Any = plan
    parts = path.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    if value is DELETE:
        del target[int(last) if last.isdigit() else last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return plan


class _Delete:
    def __repr__(self) -> str:
        return "<deleted>"


DELETE = _Delete()

CASES = [
    ("charges[0].tiers[0].up_to", 0, "charges[0].tiers[0].up_to"),  # Bounds start above 0.
    ("charges[0].tiers[1].up_to", 10, "charges[0].tiers[1].up_to"),  # Last is not open-ended.
    ("charges[0].tiers[0].up_to", None, "charges[0].tiers[0].up_to"),  # Open-ended too soon.
    ("charges[0].tiers[0].unit_price", "-1", "charges[0].tiers[0].unit_price"),
    ("charges[0].tiers[0].flat_fee", "abc", "charges[0].tiers[0].flat_fee"),
    ("charges[0].tiers", [], "charges[0].tiers"),
    ("charges[2].package_size", 0, "charges[2].package_size"),
    ("charges[2].rounding", "nearest", "charges[2].rounding"),
    ("charges[1].timezone", "Mars/Olympus", "charges[1].timezone"),
    ("charges[1].windows[0].days", ["monday"], "charges[1].windows[0].days[0]"),
    ("charges[1].windows[0].from", "9am", "charges[1].windows[0].from"),
    ("charges[1].windows[0].to", "25:00", "charges[1].windows[0].to"),
    ("charges[1].windows[0].to", "09:00", "charges[1].windows[0].to"),
    ("currency", "usd", "currency"),
    ("currency", "ABC", "currency"),
    ("interval", "fortnight", "interval"),
    ("interval_count", 0, "interval_count"),
    ("fixed_fee", "-5", "fixed_fee"),
    ("minimum", 0.5, "minimum"),  # A binary float is refused.
    ("code", "has space", "code"),
    ("charges[0].model", "magic", "charges[0].model"),
    ("charges[0].color", "red", "charges[0].color"),
    ("charges[0].tiers[0].unit_price", "0.0000000000001", "charges[0].tiers[0].unit_price"),
    ("commission_rate", "1.2", "commission_rate"),
    ("trial_days", -1, "trial_days"),
    ("service", DELETE, "service"),
]


@pytest.mark.parametrize(("path", "value", "param"), CASES, ids=[f"{p}={v!r}" for p, v, _ in CASES])
def test_an_unpriceable_plan_is_refused_naming_the_field(
    path: str, value: object, param: str
) -> None:
    with pytest.raises(InvalidRequest) as error:
        parse_plan(with_change(path, value))
    assert error.value.param == param
    assert param in error.value.message


def test_tier_bounds_must_increase() -> None:
    tiers = [
        {"up_to": 10, "unit_price": 1},
        {"up_to": 10, "unit_price": 1},
        {"up_to": None, "unit_price": 1},
    ]
    with pytest.raises(InvalidRequest) as error:
        parse_plan({**BASE, "charges": [{"metric": "m", "model": "graduated", "tiers": tiers}]})
    assert error.value.param == "charges[0].tiers[1].up_to"
    assert "increase" in error.value.message


def test_the_base_plan_is_valid() -> None:
    assert len(parse_plan(BASE).charges) == 3


def test_a_pay_as_you_go_plan_has_no_fixed_fee() -> None:
    with pytest.raises(InvalidRequest, match="fixed_fee"):
        parse_plan({**BASE, "interval": "none", "fixed_fee": "10"})


def test_bounds_on_charges_and_tiers() -> None:
    charge = {"metric": "m", "model": "per_unit", "unit_price": 1}
    parse_plan({**BASE, "charges": [charge] * 100})
    with pytest.raises(LimitExceeded) as error:
        parse_plan({**BASE, "charges": [charge] * 101})
    assert error.value.param == "charges"
    tiers = [{"up_to": n + 1, "unit_price": 1} for n in range(100)] + [
        {"up_to": None, "unit_price": 1}
    ]
    with pytest.raises(LimitExceeded):
        parse_plan({**BASE, "charges": [{"metric": "m", "model": "volume", "tiers": tiers}]})


def test_bad_usage_is_refused_naming_the_field() -> None:
    for usage, param in [
        ({"quantities": {"m": "-1"}}, "usage.quantities.m"),
        ({"quantities": {"m": 1.5}}, "usage.quantities.m"),
        ({"events": [{"metric": "m", "timestamp": "yesterday"}]}, "usage.events[0].timestamp"),
        (
            {"events": [{"metric": "m", "timestamp": "2026-11-01T00:00:00"}]},
            "usage.events[0].timestamp",
        ),
        ({"events": [{"metric": "m", "value": "x"}]}, "usage.events[0].value"),
        ({"events": [{"value": 1}]}, "usage.events[0].metric"),
        ({"extra": 1}, "extra"),
    ]:
        with pytest.raises(InvalidRequest) as error:
            parse_usage(usage)
        assert error.value.param is not None and param in error.value.param, usage
