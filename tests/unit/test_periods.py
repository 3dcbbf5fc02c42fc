"""Calendar periods in UTC."""

from datetime import UTC, datetime

import pytest

from billfold.domain.periods import calendar_period


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("interval", "count", "moment", "start", "end"),
    [
        ("month", 1, "2026-11-22T10:00:00", "2026-11-01", "2026-12-01"),
        ("month", 1, "2026-12-31T23:59:59", "2026-12-01", "2027-01-01"),
        ("none", 1, "2026-02-28T00:00:00", "2026-02-01", "2026-03-01"),
        ("day", 1, "2026-11-22T23:00:00", "2026-11-22", "2026-11-23"),
        ("week", 1, "2026-11-22T23:00:00", "2026-11-16", "2026-11-23"),  # A Sunday.
        ("week", 1, "2026-11-23T00:00:00", "2026-11-23", "2026-11-30"),  # A Monday.
        ("quarter", 1, "2026-11-22T00:00:00", "2026-10-01", "2027-01-01"),
        ("year", 1, "2028-02-29T12:00:00", "2028-01-01", "2029-01-01"),
        ("month", 6, "2026-11-22T00:00:00", "2026-07-01", "2027-01-01"),
    ],
)
def test_calendar_periods(interval: str, count: int, moment: str, start: str, end: str) -> None:
    assert calendar_period(interval, count, at(moment)) == (at(start), at(end))
