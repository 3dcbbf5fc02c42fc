"""Subscription schedules and proration, as pure functions.

A subscription bills in periods cut by its plan's interval (day, week, month, quarter or
year, times `interval_count`) and its billing anchor:

- `calendar`: periods on the calendar grid, in UTC (midnight, Mondays, the 1st of the
  month, calendar quarters and years), the same grid as pay-as-you-go usage periods.
- `anniversary`: periods start at the moment billing started, and repeat from it.
- a day of the month `1`..`31`: periods start at midnight UTC on that day, every
  `interval_count` months (or quarters or years) from the first such day; a day past a
  month's end falls on its last day, and the next month goes back to the anchor day
  (31 gives Jan 31, Feb 28, Mar 31), because every boundary is computed from the anchor,
  never from the boundary before it.

A subscription that starts between two boundaries has a partial first period. Partial
periods are prorated by days (API.md): `amount * days_used / days_in_the_period`, where
the period is the whole one the partial one belongs to, rounded half-up to the currency's
minor unit. Days are UTC calendar days: the day on which a change takes effect belongs to
what follows it (an upgrade on Sep 16 of a September period leaves 15 days, Sep 16 to 30,
on the new plan).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Final

from billfold.domain.errors import InvalidRequest
from billfold.domain.money import Currency, round_to_minor
from billfold.domain.periods import EPOCH_MONDAY

INTERVALS: Final = ("day", "week", "month", "quarter", "year")
MONTHS_PER: Final = {"month": 1, "quarter": 3, "year": 12}
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ANCHORS: Final = ("calendar", "anniversary")


def parse_anchor(value: object, interval: str) -> str:
    """The billing anchor as stored: `calendar`, `anniversary` or a day `1`..`31`."""
    if value is None:
        return "calendar"
    if isinstance(value, bool):
        raise InvalidRequest(_ANCHOR_MESSAGE, param="billing_anchor")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        day = int(value)
        if not 1 <= day <= 31:
            raise InvalidRequest(_ANCHOR_MESSAGE, param="billing_anchor")
        if interval not in MONTHS_PER:
            raise InvalidRequest(
                f"a day-of-month anchor needs a monthly, quarterly or yearly plan, not {interval}",
                param="billing_anchor",
            )
        return str(day)
    if value in ANCHORS:
        return str(value)
    raise InvalidRequest(_ANCHOR_MESSAGE, param="billing_anchor")


_ANCHOR_MESSAGE: Final = 'billing_anchor must be "calendar", "anniversary" or a day 1 to 31'


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return divmod(index, 12)[0], divmod(index, 12)[1] + 1


def _on_day(year: int, month: int, day: int, template: datetime) -> datetime:
    """`day` of the month (clamped to its last day) at `template`'s time of day."""
    last = calendar.monthrange(year, month)[1]
    return template.replace(year=year, month=month, day=min(day, last))


@dataclass(frozen=True, slots=True)
class Schedule:
    """The boundaries of a subscription's billing periods: boundary(k) for every integer k."""

    interval: str
    interval_count: int
    anchor: str
    origin: datetime
    """When billing started (after any trial), in UTC."""

    def __post_init__(self) -> None:
        assert self.interval in INTERVALS and self.interval_count >= 1
        assert self.origin.tzinfo is not None

    # The k-th boundary. k = 0 is the first boundary at or after the grid's reference.
    def boundary(self, k: int) -> datetime:
        n = self.interval_count
        if self.interval in ("day", "week"):
            length = timedelta(days=n * (7 if self.interval == "week" else 1))
            if self.anchor == "anniversary":
                return self.origin + k * length
            base = EPOCH_MONDAY if self.interval == "week" else EPOCH
            return base + k * length
        months = MONTHS_PER[self.interval] * n
        if self.anchor == "calendar":
            year, month = _add_months(1970, 1, k * months)
            return datetime(year, month, 1, tzinfo=UTC)
        year, month = _add_months(self.origin.year, self.origin.month, k * months)
        if self.anchor == "anniversary":
            return _on_day(year, month, self.origin.day, self.origin)
        midnight = self.origin.replace(hour=0, minute=0, second=0, microsecond=0)
        return _on_day(year, month, int(self.anchor), midnight)

    def index_at(self, moment: datetime) -> int:
        """The k with boundary(k) <= moment < boundary(k + 1)."""
        moment = moment.astimezone(UTC)
        if self.interval in ("day", "week"):
            length = timedelta(days=self.interval_count * (7 if self.interval == "week" else 1))
            base = (
                self.origin
                if self.anchor == "anniversary"
                else (EPOCH_MONDAY if self.interval == "week" else EPOCH)
            )
            return (moment - base) // length
        months = MONTHS_PER[self.interval] * self.interval_count
        reference = (
            (1970, 1) if self.anchor == "calendar" else (self.origin.year, self.origin.month)
        )
        elapsed = (moment.year - reference[0]) * 12 + moment.month - reference[1]
        k = elapsed // months
        # The estimate is off by at most one either way (the day within the month).
        while self.boundary(k) > moment:
            k -= 1
        while self.boundary(k + 1) <= moment:
            k += 1
        return k

    def period_containing(self, moment: datetime) -> tuple[datetime, datetime]:
        """The whole [start, end) period of the grid that contains `moment`."""
        k = self.index_at(moment)
        return self.boundary(k), self.boundary(k + 1)

    def billing_period(self, moment: datetime) -> tuple[datetime, datetime]:
        """The period billed for `moment`: the grid's, but never starting before origin."""
        start, end = self.period_containing(max(moment, self.origin))
        return max(start, self.origin), end


def days_between(start: datetime, end: datetime) -> int:
    """Whole UTC calendar days from `start`'s day to `end`'s day."""
    return (end.astimezone(UTC).date() - start.astimezone(UTC).date()).days


def prorate(amount: Decimal, days_used: int, days_in_period: int, cur: Currency) -> Decimal:
    """`amount * days_used / days_in_period`, rounded half-up to the minor unit.

    Computed as an exact fraction, so the only rounding is the one on the invoice line.
    """
    assert 0 <= days_used <= days_in_period and days_in_period > 0
    if days_used == days_in_period:
        return round_to_minor(Fraction(amount), cur)
    return round_to_minor(Fraction(amount) * days_used / days_in_period, cur)


def period_fraction(
    start: datetime, end: datetime, whole_start: datetime, whole_end: datetime
) -> tuple[int, int]:
    """(days of [start, end), days of the whole period [whole_start, whole_end))."""
    whole = days_between(whole_start, whole_end)
    used = days_between(start, end)
    if whole == 0:  # A period shorter than a day (an anniversary day period) is one day.
        return (1 if end > start else 0), 1
    return min(max(used, 0), whole), whole
