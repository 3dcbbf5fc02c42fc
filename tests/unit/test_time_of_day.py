"""Time-of-day pricing: windows, weekdays, edges, midnight and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billfold.domain.errors import InvalidRequest
from billfold.domain.pricing import (
    WEEKDAYS,
    Event,
    MetricUsage,
    parse_charge,
    parse_usage,
    price_charge,
)


def window_of(windows: list[dict[str, Any]], zone: str, timestamp: str) -> str:
    """Which window prices an event at `timestamp` (each window has a distinct price)."""
    charge = parse_charge(
        {
            "metric": "m",
            "model": "time_of_day",
            "timezone": zone,
            "windows": windows,
            "default_unit_price": "0",
        },
        "c",
    )
    usage = parse_usage({"events": [{"metric": "m", "timestamp": timestamp}]}).of("m")
    details = price_charge(charge, usage).details
    return str(details[1]["window"])


PEAK = [
    {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "18:00", "unit_price": "2"}
]
NIGHT = [{"days": ["fri"], "from": "22:00", "to": "06:00", "unit_price": "1"}]
UTC_ZONE = "UTC"


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-11-23T09:00:00Z", "mon,tue,wed,thu,fri 09:00-18:00"),  # Monday, the start edge.
        ("2026-11-23T08:59:59.999999Z", "default"),
        ("2026-11-23T17:59:59.999999Z", "mon,tue,wed,thu,fri 09:00-18:00"),
        ("2026-11-23T18:00:00Z", "default"),  # The end is not in the window.
        ("2026-11-22T12:00:00Z", "default"),  # Sunday.
        ("2026-11-28T12:00:00Z", "default"),  # Saturday.
    ],
)
def test_weekday_windows_and_their_edges(timestamp: str, expected: str) -> None:
    assert window_of(PEAK, UTC_ZONE, timestamp) == expected


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-11-27T22:00:00Z", "fri 22:00-06:00"),  # Friday night.
        ("2026-11-27T23:59:59Z", "fri 22:00-06:00"),
        ("2026-11-28T00:00:00Z", "fri 22:00-06:00"),  # After midnight: still Friday's night.
        ("2026-11-28T05:59:59Z", "fri 22:00-06:00"),
        ("2026-11-28T06:00:00Z", "default"),
        ("2026-11-27T21:59:59Z", "default"),
        ("2026-11-26T23:00:00Z", "default"),  # Thursday night is not listed.
        ("2026-11-28T23:00:00Z", "default"),  # Nor Saturday night.
        ("2026-11-27T05:00:00Z", "default"),  # Friday early morning is Thursday's night.
    ],
)
def test_windows_that_cross_midnight(timestamp: str, expected: str) -> None:
    assert window_of(NIGHT, UTC_ZONE, timestamp) == expected


def test_a_sunday_night_window_wraps_into_monday() -> None:
    windows = [{"days": ["sun"], "from": "23:00", "to": "01:00", "unit_price": "1"}]
    assert (
        window_of(windows, UTC_ZONE, "2026-11-23T00:30:00Z") == "sun 23:00-01:00"
    )  # Monday 00:30.
    assert window_of(windows, UTC_ZONE, "2026-11-22T00:30:00Z") == "default"  # Sunday 00:30.


def test_weekday_is_the_local_one() -> None:
    # 2026-11-22 17:00 UTC is Sunday in London but Monday 01:00 in Shanghai.
    windows = [{"days": ["mon"], "from": "00:00", "to": "24:00", "unit_price": "1"}]
    assert window_of(windows, "Asia/Shanghai", "2026-11-22T17:00:00Z") == "mon 00:00-24:00"
    assert window_of(windows, "Europe/London", "2026-11-22T17:00:00Z") == "default"


def test_the_first_matching_window_wins() -> None:
    windows = [{"days": ["mon"], "from": "12:00", "to": "13:00", "unit_price": "5"}, *PEAK]
    assert window_of(windows, UTC_ZONE, "2026-11-23T12:30:00Z") == "mon 12:00-13:00"
    assert window_of(windows, UTC_ZONE, "2026-11-23T13:30:00Z") == "mon,tue,wed,thu,fri 09:00-18:00"


DAILY = [
    {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "from": "09:00",
        "to": "17:00",
        "unit_price": "2",
    }
]
NY = "America/New_York"


def test_spring_forward_in_new_york_2026_03_08() -> None:
    # Saturday 2026-03-07 is EST (UTC-5): 13:30 UTC is 08:30 local, before the window.
    assert window_of(DAILY, NY, "2026-03-07T13:30:00Z") == "default"
    assert window_of(DAILY, NY, "2026-03-07T14:00:00Z") != "default"  # 09:00 EST.
    # Sunday 2026-03-08 is EDT (UTC-4) from 02:00 local: 13:30 UTC is 09:30 local.
    assert window_of(DAILY, NY, "2026-03-08T13:30:00Z") != "default"
    assert window_of(DAILY, NY, "2026-03-08T12:59:59Z") == "default"  # 08:59:59 EDT.
    assert window_of(DAILY, NY, "2026-03-08T21:00:00Z") == "default"  # 17:00 EDT, the end.
    # The hour 02:00-03:00 does not exist that night: a window on it prices nothing.
    lost = [{"days": ["sun"], "from": "02:00", "to": "03:00", "unit_price": "9"}]
    for moment in ("2026-03-08T06:59:59Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"):
        assert window_of(lost, NY, moment) == "default"


def test_fall_back_in_new_york_2026_11_01() -> None:
    # 01:00-02:00 local happens twice: first in EDT (05:00-06:00 UTC), then in EST (06:00-07:00).
    twice = [{"days": ["sun"], "from": "01:00", "to": "02:00", "unit_price": "3"}]
    assert window_of(twice, NY, "2026-11-01T05:30:00Z") == "sun 01:00-02:00"
    assert window_of(twice, NY, "2026-11-01T06:30:00Z") == "sun 01:00-02:00"
    assert window_of(twice, NY, "2026-11-01T07:00:00Z") == "default"  # 02:00 EST.
    assert window_of(twice, NY, "2026-11-01T04:59:59Z") == "default"  # 00:59:59 EDT.
    # After the change, 09:00 local is 14:00 UTC, no longer 13:00.
    assert window_of(DAILY, NY, "2026-11-01T13:30:00Z") == "default"
    assert window_of(DAILY, NY, "2026-11-01T14:00:00Z") != "default"


def test_free_units_are_used_in_time_order() -> None:
    windows = [{"days": ["mon"], "from": "00:00", "to": "12:00", "unit_price": "10"}]
    charge = parse_charge(
        {
            "metric": "m",
            "model": "time_of_day",
            "timezone": UTC_ZONE,
            "windows": windows,
            "default_unit_price": "1",
            "free_units": 3,
        },
        "c",
    )
    # Given out of order: the Monday-morning events come first in time and use the free units.
    usage = parse_usage(
        {
            "events": [
                {"metric": "m", "timestamp": "2026-11-23T15:00:00Z", "value": 5},
                {"metric": "m", "timestamp": "2026-11-23T08:00:00Z", "value": 2},
                {"metric": "m", "timestamp": "2026-11-23T09:00:00Z", "value": 2},
            ]
        }
    ).of("m")
    priced = price_charge(charge, usage)
    # 3 free units: both morning events' first 3 of 4 units; 1 morning unit at 10, 5 at 1.
    assert priced.amount == Decimal(15)
    assert priced.details[0]["free_units"] == "3"


def test_events_need_a_timestamp() -> None:
    charge = parse_charge(
        {
            "metric": "m",
            "model": "time_of_day",
            "timezone": UTC_ZONE,
            "windows": PEAK,
            "default_unit_price": "1",
        },
        "c",
    )
    with pytest.raises(InvalidRequest, match="timestamp"):
        price_charge(charge, parse_usage({"events": [{"metric": "m"}]}).of("m"))


# --- the fast sweep agrees with a plain reference ---------------------------------------


def reference_amount(
    windows: list[dict[str, Any]],
    zone: str,
    default: Decimal,
    events: list[tuple[datetime, Decimal]],
) -> Decimal:
    """Prices each event by converting it to local time, the slow and obvious way."""
    tz = ZoneInfo(zone)
    total = Decimal(0)
    for moment, value in events:
        local = moment.astimezone(tz)
        weekday = WEEKDAYS[local.weekday()]
        yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
        now = local.time()
        price = default
        for window in windows:
            start = time.fromisoformat(window["from"])
            end = time.max if window["to"] == "24:00" else time.fromisoformat(window["to"])
            inclusive_end = window["to"] == "24:00"
            if start < end or inclusive_end:
                hit = weekday in window["days"] and start <= now and (now < end or inclusive_end)
            else:
                hit = (weekday in window["days"] and now >= start) or (
                    yesterday in window["days"] and now < end
                )
            if hit:
                price = Decimal(window["unit_price"])
                break
        total += value * price
    return total


clock_times = st.sampled_from(
    [
        "00:00",
        "01:00",
        "01:30",
        "02:00",
        "02:30",
        "03:00",
        "06:00",
        "09:00",
        "12:15",
        "17:45",
        "22:00",
        "23:59",
        "24:00",
    ]
)
window_strategy = st.builds(
    lambda days, start, end, price: {
        "days": days,
        "from": start,
        "to": end,
        "unit_price": str(price),
    },
    st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True),
    clock_times.filter(lambda t: t != "24:00"),
    clock_times,
    st.integers(min_value=1, max_value=99),
).filter(lambda w: w["from"] != w["to"])
around_dst = st.one_of(
    st.datetimes(min_value=datetime(2026, 3, 6), max_value=datetime(2026, 3, 10)),
    st.datetimes(min_value=datetime(2026, 10, 30), max_value=datetime(2026, 11, 3)),
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1)),
).map(lambda d: d.replace(tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(window_strategy, max_size=5),
    st.sampled_from(
        ["America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]
    ),
    st.lists(
        st.tuples(around_dst, st.integers(min_value=1, max_value=5).map(Decimal)), max_size=40
    ),
    st.booleans(),
)
def test_the_sweep_agrees_with_converting_every_event(
    windows: list[dict[str, Any]], zone: str, raw: list[tuple[datetime, Decimal]], ordered: bool
) -> None:
    events = sorted(raw) if ordered else raw
    charge = parse_charge(
        {
            "metric": "m",
            "model": "time_of_day",
            "timezone": zone,
            "windows": windows,
            "default_unit_price": "100",
        },
        "c",
    )
    usage = MetricUsage(tuple(Event("m", v, t) for t, v in events))
    expected = reference_amount(windows, zone, Decimal(100), events)
    assert price_charge(charge, usage).amount == expected
