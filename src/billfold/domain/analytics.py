"""Time buckets and windows for analytics, and the insight rules (pure).

Usage and revenue are rolled up per quarter-hour in UTC. Every UTC offset in use today
is a whole number of quarter-hours, so an hour, a day or a month in any time zone is a
whole number of buckets, and a series in any zone is a sum of rollup rows.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billfold.domain.errors import InvalidRequest

BUCKET: Final = timedelta(minutes=15)
WINDOWS: Final = ("hour", "day", "month")
MAX_POINTS: Final = 5000


def bucket_of(moment: datetime) -> datetime:
    """The start of the UTC quarter-hour holding `moment`."""
    moment = moment.astimezone(UTC)
    return moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"unknown time zone {name!r} (use an IANA name)", param="tz") from None


def window_start(moment: datetime, window: str, tz: ZoneInfo) -> datetime:
    """The start (in `tz`) of the hour, day or month holding `moment`."""
    local = moment.astimezone(tz)
    if window == "hour":
        local = local.replace(minute=0, second=0, microsecond=0)
    elif window == "day":
        local = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif window == "month":
        local = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise InvalidRequest(f"window must be one of {', '.join(WINDOWS)}", param="window")
    # Midnight may not exist on a day clocks jump: fold onto the instant that does.
    return local.astimezone(UTC).astimezone(tz)


def next_window(start: datetime, window: str, tz: ZoneInfo) -> datetime:
    if window == "hour":
        return (start.astimezone(UTC) + timedelta(hours=1)).astimezone(tz)
    if window == "day":
        naive = start.replace(tzinfo=None) + timedelta(days=1)
    else:
        year, month = divmod(start.month, 12)
        naive = start.replace(tzinfo=None, year=start.year + year, month=month + 1, day=1)
    return window_start(naive.replace(tzinfo=tz) + timedelta(hours=3), window, tz)


def windows(start: datetime, end: datetime, window: str, tz: ZoneInfo) -> Iterator[datetime]:
    """The windows that overlap [start, end), as local starts."""
    current = window_start(start, window, tz)
    count = 0
    while current < end:
        yield current
        count += 1
        if count > MAX_POINTS:
            raise InvalidRequest(
                f"that asks for more than {MAX_POINTS} points; use a longer window",
                param="window",
            )
        current = next_window(current, window, tz)


def check_range(start: datetime, end: datetime) -> None:
    if end <= start:
        raise InvalidRequest("to must be after from", param="to")
    for name, moment in (("from", start), ("to", end)):
        if bucket_of(moment) != moment.astimezone(UTC):
            raise InvalidRequest(
                f"{name} must fall on a quarter-hour (analytics are kept per 15 minutes)",
                param=name,
            )


@dataclass(frozen=True, slots=True)
class Forecast:
    days: int
    burn_per_day: Decimal
    days_left: Decimal | None
    runs_out_at: datetime | None


def forecast(
    available: Decimal, spent_per_day: Sequence[Decimal], now: datetime, days: int
) -> Forecast:
    """Days until `available` runs out at the mean daily spend of the last `days` days."""
    burn = sum(spent_per_day, Decimal(0)) / days if days else Decimal(0)
    if burn <= 0:
        return Forecast(days, Decimal(0), None, None)
    left = max(available, Decimal(0)) / burn
    seconds = int(left * 86400)
    return Forecast(days, burn, left.quantize(Decimal("0.1")), now + timedelta(seconds=seconds))


def is_spike(
    today: Decimal,
    history: Sequence[Decimal],
    *,
    factor: Decimal,
    minimum: Decimal,
    min_days: int = 7,
) -> bool:
    """A day far above the recent pattern: over `factor` times the median of the days
    before it (and above `minimum`, so that tiny amounts never alarm anyone).

    The median, not the mean, so that one earlier spike does not hide the next. With
    fewer than `min_days` days of history there is no pattern yet, and no spike.
    """
    if len(history) < min_days or today < minimum:
        return False
    baseline = statistics.median(history)
    return today > baseline * factor if baseline > 0 else today >= minimum
