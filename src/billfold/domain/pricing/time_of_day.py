"""Time-of-day pricing: each event is priced by the first window (weekday and local time
in an IANA zone) that holds it.
"""

from __future__ import annotations

import bisect
import decimal
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from billfold.domain.errors import InvalidRequest
from billfold.domain.pricing.core import (
    DAY_US,
    EPOCH,
    PRICING_CONTEXT,
    QUARTER_HOUR_US,
    WEEKDAYS,
    ZERO,
    _d,
    _fail,
)
from billfold.domain.pricing.models import (
    Charge,
    Continued,
    Priced,
)
from billfold.domain.pricing.usage import Event, MetricUsage


@dataclass(frozen=True, slots=True)
class Window:
    days: tuple[str, ...]
    start_us: int
    end_us: int
    unit_price: Decimal
    start_text: str
    end_text: str

    @property
    def label(self) -> str:
        return f"{','.join(self.days)} {self.start_text}-{self.end_text}"


def _parse_clock(value: object, param: str) -> tuple[int, str]:
    if not isinstance(value, str) or not re.fullmatch(r"\d{2}:\d{2}(:\d{2})?", value):
        raise _fail("must be a local time HH:MM (or HH:MM:SS), such as 09:00", param)
    parts = [int(p) for p in value.split(":")]
    hours, minutes, seconds = parts[0], parts[1], parts[2] if len(parts) == 3 else 0
    if (hours, minutes, seconds) == (24, 0, 0):
        return DAY_US, value
    if hours > 23 or minutes > 59 or seconds > 59:
        raise _fail("is not a time of day (00:00 to 24:00)", param)
    return ((hours * 60 + minutes) * 60 + seconds) * 1_000_000, value


@dataclass(frozen=True)
class TimeOfDay(Charge):
    timezone: str
    windows: tuple[Window, ...]
    default_unit_price: Decimal
    free_units: Decimal = ZERO
    # Per weekday, the day cut into segments: (start_us, window index or -1 for default).
    _segments: tuple[tuple[list[int], list[int]], ...] = field(
        default=(), compare=False, repr=False
    )
    _offsets: dict[int, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_segments", self._cut_days())

    @property
    def depends_only_on_total(self) -> bool:
        return False

    def _cut_days(self) -> tuple[tuple[list[int], list[int]], ...]:
        pieces: list[list[tuple[int, int, int]]] = [[] for _ in WEEKDAYS]
        for index, window in enumerate(self.windows):
            for day in window.days:
                weekday = WEEKDAYS.index(day)
                if window.start_us < window.end_us:
                    pieces[weekday].append((window.start_us, window.end_us, index))
                else:
                    # Crossing midnight: the part after midnight belongs to the next day.
                    pieces[weekday].append((window.start_us, DAY_US, index))
                    if window.end_us > 0:
                        pieces[(weekday + 1) % 7].append((0, window.end_us, index))
        days = []
        for parts in pieces:
            bounds = sorted({0, DAY_US, *(p[0] for p in parts), *(p[1] for p in parts)})
            starts: list[int] = []
            owners: list[int] = []
            for low, high in itertools.pairwise(bounds):
                # The first window (in the plan's order) that covers this stretch wins.
                owner = min((i for s, e, i in parts if s <= low and high <= e), default=-1)
                if owners and owners[-1] == owner:
                    continue
                starts.append(low)
                owners.append(owner)
            days.append((starts, owners))
        return tuple(days)

    def _offset_us(self, bucket: int, zone: ZoneInfo) -> int:
        """The zone's UTC offset during one UTC quarter hour (offsets change only between them)."""
        offset = self._offsets.get(bucket)
        if offset is None:
            start = EPOCH + timedelta(microseconds=bucket * QUARTER_HOUR_US)
            # tzinfo.utcoffset() reads its argument as local wall time; converting first
            # asks for the offset in force at this UTC instant, which is what we need.
            delta = start.astimezone(zone).utcoffset()
            assert delta is not None
            offset = delta // timedelta(microseconds=1)
            self._offsets[bucket] = offset
        return offset

    def _locate(self, moment: datetime, zone: ZoneInfo) -> tuple[int, datetime, datetime]:
        """The window pricing `moment` (-1: the default), and the UTC stretch [low, high)
        around it over which that answer holds: the same window and the same offset."""
        utc_us = (moment - EPOCH) // timedelta(microseconds=1)
        bucket = utc_us // QUARTER_HOUR_US
        offset = self._offset_us(bucket, zone)
        day, time_us = divmod(utc_us + offset, DAY_US)
        starts, owners = self._segments[(day + 3) % 7]  # 1970-01-01 was a Thursday.
        index = bisect.bisect_right(starts, time_us) - 1
        segment_end = starts[index + 1] if index + 1 < len(starts) else DAY_US
        low = max(bucket * QUARTER_HOUR_US, day * DAY_US + starts[index] - offset)
        high = min((bucket + 1) * QUARTER_HOUR_US, day * DAY_US + segment_end - offset)
        return (
            owners[index],
            EPOCH + timedelta(microseconds=low),
            EPOCH + timedelta(microseconds=high),
        )

    def price_continuing(self, events: Sequence[Event], *, free_units_used: Decimal) -> Continued:
        """What more events cost, after `free_units_used` of the free units went to earlier ones."""
        with decimal.localcontext(PRICING_CONTEXT):
            free_left = max(self.free_units - free_units_used, ZERO)
            per_window, left_after = self._sweep(events, free_left)
            amount = sum(
                (
                    units * (self.default_unit_price if i < 0 else self.windows[i].unit_price)
                    for i, units in per_window.items()
                ),
                ZERO,
            )
        return Continued(amount, free_units_used=free_left - left_after)

    def _sweep(
        self, events: Sequence[Event], free_left: Decimal
    ) -> tuple[dict[int, Decimal], Decimal]:
        """Units per window (-1: default) after free units, and the free units left."""
        zone = ZoneInfo(self.timezone)
        per_window: dict[int, Decimal] = {}
        # Events come in time order, so most fall in the stretch the one before found:
        # a sweep answers them with two comparisons, and looks up only at a boundary.
        owner, low, high = -1, EPOCH, EPOCH
        running = ZERO
        for event in events:
            moment = event.timestamp
            if moment is None:
                raise InvalidRequest(
                    f"usage.events: events of {self.metric} need a timestamp, which its "
                    "time_of_day charge prices by",
                    code="invalid_usage",
                    param="usage.events",
                )
            value = event.value
            if free_left > 0:
                used = min(free_left, value)
                free_left -= used
                value -= used
                if not value:
                    continue
            if not low <= moment < high:
                if running:
                    per_window[owner] = per_window.get(owner, ZERO) + running
                    running = ZERO
                owner, low, high = self._locate(moment, zone)
            running += value
        if running:
            per_window[owner] = per_window.get(owner, ZERO) + running
        return per_window, free_left

    def price(self, usage: MetricUsage) -> Priced:
        per_window, free_left = self._sweep(usage.events, self.free_units)
        if usage.given:
            # A quantity without a timestamp has no time of day: it is priced at the default.
            used = min(free_left, usage.given)
            free_left -= used
            per_window[-1] = per_window.get(-1, ZERO) + usage.given - used
        amount = ZERO
        details: list[dict[str, Any]] = [
            {"free_units": _d(self.free_units - free_left), "timezone": self.timezone}
        ]
        for index in sorted(per_window, key=lambda i: (i < 0, i)):
            units = per_window[index]
            if not units:
                continue
            price = self.default_unit_price if index < 0 else self.windows[index].unit_price
            part = units * price
            amount += part
            details.append(
                {
                    "window": "default" if index < 0 else self.windows[index].label,
                    "units": _d(units),
                    "unit_price": _d(price),
                    "amount": _d(part),
                }
            )
        return Priced(amount, details, usage.quantity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "model": self.model,
            "timezone": self.timezone,
            "windows": [
                {
                    "days": list(w.days),
                    "from": w.start_text,
                    "to": w.end_text,
                    "unit_price": _d(w.unit_price),
                }
                for w in self.windows
            ],
            "default_unit_price": _d(self.default_unit_price),
            "free_units": _d(self.free_units),
        }
