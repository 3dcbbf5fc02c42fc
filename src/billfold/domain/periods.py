"""Billing periods. Usage outside a subscription is rated in calendar periods, in UTC.

A plan's interval (day, week, month, quarter, year, times interval_count) cuts time into
periods that start at midnight UTC: days, ISO weeks (Mondays), and months, quarters and
years on their first day. Multi-interval periods count from 1970-01-01 (week: 1969-12-29,
a Monday), so every instant has exactly one period. Pay-as-you-go plans (interval none)
reset their tiers and allowances monthly.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from billfold.domain.errors import InvalidRequest

EPOCH_MONDAY = datetime(1969, 12, 29, tzinfo=UTC)


def _months(moment: datetime) -> int:
    return (moment.year - 1970) * 12 + moment.month - 1


def _month_start(index: int) -> datetime:
    year, month = divmod(index, 12)
    return datetime(1970 + year, month + 1, 1, tzinfo=UTC)


def calendar_period(
    interval: str, interval_count: int, moment: datetime
) -> tuple[datetime, datetime]:
    """The [start, end) period that contains `moment`."""
    assert interval_count >= 1 and moment.tzinfo is not None
    moment = moment.astimezone(UTC)
    if interval in ("day", "week"):
        length = timedelta(days=interval_count * (7 if interval == "week" else 1))
        origin = EPOCH_MONDAY if interval == "week" else datetime(1970, 1, 1, tzinfo=UTC)
        start = origin + ((moment - origin) // length) * length
        return start, start + length
    months = {"month": 1, "none": 1, "quarter": 3, "year": 12}[interval]
    months *= interval_count if interval != "none" else 1
    index = (_months(moment) // months) * months
    return _month_start(index), _month_start(index + months)


MONTH_PATTERN = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
# The times billfold accepts from outside. Dates near year 1 or 9999 are typing errors,
# and arithmetic on them (a period after, a day before) would leave the calendar.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def check_moment(moment: datetime, param: str) -> datetime:
    """`moment` if it has an offset and lies between 1970 and 9000; else a 400."""
    if moment.tzinfo is None:
        raise InvalidRequest(f"{param} needs an offset, such as 2026-11-01T00:00:00Z", param=param)
    if not EARLIEST <= moment < LATEST:
        raise InvalidRequest(f"{param} must be between 1970 and 9000", param=param)
    return moment


def parse_period(text: str | None) -> tuple[datetime, datetime]:
    """`YYYY-MM` as the UTC month [start, end)."""
    match = MONTH_PATTERN.match(text or "")
    if not match:
        raise InvalidRequest("period must be a month, YYYY-MM", param="period")
    year, month = int(match[1]), int(match[2])
    if not EARLIEST.year <= year < LATEST.year:
        raise InvalidRequest("period must be a month between 1970 and 9000", param="period")
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end
