"""Buckets and windows, the balance forecast, spike detection and webhook signatures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billfold.alerts import sign
from billfold.domain.analytics import (
    bucket_of,
    check_range,
    forecast,
    is_spike,
    window_start,
    windows,
    zone,
)
from billfold.domain.errors import InvalidRequest


def test_buckets_are_utc_quarter_hours() -> None:
    moment = datetime(2026, 11, 3, 10, 44, 59, 999999, tzinfo=UTC)
    assert bucket_of(moment) == datetime(2026, 11, 3, 10, 30, tzinfo=UTC)
    kolkata = datetime(2026, 11, 3, 16, 14, tzinfo=zone("Asia/Kolkata"))
    assert bucket_of(kolkata) == datetime(2026, 11, 3, 10, 30, tzinfo=UTC)


def test_day_windows_across_a_dst_change() -> None:
    ny = zone("America/New_York")
    # 2026-11-01 is the day New York falls back: a 25-hour day.
    start = datetime(2026, 10, 31, 4, tzinfo=UTC)
    days = list(windows(start, start + timedelta(days=3), "day", ny))
    assert [d.isoformat() for d in days] == [
        "2026-10-31T00:00:00-04:00",
        "2026-11-01T00:00:00-04:00",
        "2026-11-02T00:00:00-05:00",
    ]
    assert (days[2].astimezone(UTC) - days[1].astimezone(UTC)).total_seconds() == 25 * 3600
    assert window_start(datetime(2026, 11, 15, 3, tzinfo=UTC), "month", ny).isoformat() == (
        "2026-11-01T00:00:00-04:00"
    )
    hours = list(windows(start, start + timedelta(days=1), "hour", ny))
    assert len(hours) == 24


def test_ranges_must_fall_on_the_grid() -> None:
    t = datetime(2026, 11, 1, tzinfo=UTC)
    check_range(t, t + timedelta(minutes=45))
    with pytest.raises(InvalidRequest):
        check_range(t, t + timedelta(minutes=10))
    with pytest.raises(InvalidRequest):
        check_range(t, t)
    with pytest.raises(InvalidRequest):
        zone("Not/AZone")


def test_forecast_on_a_constructed_history() -> None:
    now = datetime(2026, 11, 20, tzinfo=UTC)
    # 14 days at 5.00 a day (70 in all) and 100 left: 20 days.
    f = forecast(Decimal(100), [Decimal(5)] * 14, now, 14)
    assert f.burn_per_day == Decimal(5) and f.days_left == Decimal("20.0")
    assert f.runs_out_at == now + timedelta(days=20)
    # Days with no spend count as zero: 35 over 14 days is 2.5 a day.
    f = forecast(Decimal(10), [Decimal(35)], now, 14)
    assert f.days_left == Decimal("4.0")
    # Nothing spent, or refunds only: no end in sight.
    assert forecast(Decimal(10), [], now, 14).days_left is None
    assert forecast(Decimal(10), [Decimal(-3)], now, 14).runs_out_at is None
    # Already below zero: it has run out.
    assert forecast(Decimal(-1), [Decimal(1)], now, 1).days_left == Decimal("0.0")


def test_spikes_on_constructed_histories() -> None:
    steady = [Decimal(10)] * 14
    assert is_spike(Decimal(31), steady, factor=Decimal(3), minimum=Decimal(1))
    assert not is_spike(Decimal(30), steady, factor=Decimal(3), minimum=Decimal(1))
    # One earlier spike does not raise the bar (the median, not the mean).
    spiky = [Decimal(10)] * 13 + [Decimal(500)]
    assert is_spike(Decimal(40), spiky, factor=Decimal(3), minimum=Decimal(1))
    # Too little history, or too small an amount, is never a spike.
    assert not is_spike(Decimal(1000), [Decimal(1)] * 6, factor=Decimal(3), minimum=Decimal(1))
    assert not is_spike(Decimal("0.5"), [Decimal(0)] * 14, factor=Decimal(3), minimum=Decimal(1))
    # A quiet user (all zeros) who suddenly spends is a spike once above the minimum.
    assert is_spike(Decimal(2), [Decimal(0)] * 14, factor=Decimal(3), minimum=Decimal(1))


def test_standard_webhooks_signature_matches_the_published_example() -> None:
    # The example of the Standard Webhooks specification and its reference libraries
    # (github.com/standard-webhooks/standard-webhooks, "Verifying webhook authenticity").
    assert (
        sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            '{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
