"""Prepaid products as pure rules: resource packages' reset cycles and how usage draws on
them, and what a discount coupon takes off.

A resource package holds quantities of metrics. Its validity runs from its purchase for a
number of days; with a reset, the quantities are whole again at the start of each day or
month of it (counted from the purchase, as a monthly subscription is), and what a cycle
left unused does not roll over. Usage draws on the packages valid at its moment, the one
expiring first first, and only what they cannot cover is priced by the plan.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

from billfold.domain.errors import InvalidRequest
from billfold.domain.money import MONEY_CONTEXT, parse_amount

RESETS: Final = ("none", "day", "month")
MAX_VALIDITY_DAYS: Final = 3660
ZERO: Final = Decimal(0)


def parse_reset(value: object) -> str:
    reset = "none" if value is None else value
    if reset not in RESETS:
        raise InvalidRequest("reset must be none, day or month", param="reset")
    return str(reset)


def parse_validity(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VALIDITY_DAYS:
        raise InvalidRequest(
            f"validity_days must be a whole number of days from 1 to {MAX_VALIDITY_DAYS}",
            param="validity_days",
        )
    return value


def months_later(moment: datetime, months: int) -> datetime:
    """The same day and time `months` later; a day past the month's end falls on its last."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def cycle_start(starts_at: datetime, reset: str, at: datetime) -> datetime:
    """The start of the reset cycle of a package bought at `starts_at` that `at` falls in."""
    if reset == "none" or at <= starts_at:
        return starts_at
    if reset == "day":
        return starts_at + timedelta(days=(at - starts_at) // timedelta(days=1))
    assert reset == "month"
    months = (at.year - starts_at.year) * 12 + at.month - starts_at.month
    while months > 0 and months_later(starts_at, months) > at:
        months -= 1
    return months_later(starts_at, months)


def cycle_end(starts_at: datetime, reset: str, start: datetime, expires_at: datetime) -> datetime:
    """When the cycle beginning at `start` ends: the next reset, or the expiry."""
    if reset == "none":
        return expires_at
    if reset == "day":
        return min(start + timedelta(days=1), expires_at)
    months = (start.year - starts_at.year) * 12 + start.month - starts_at.month
    return min(months_later(starts_at, months + 1), expires_at)


@dataclass(slots=True)
class Lot:
    """One holding's quantity of one metric left in the cycle an event falls in."""

    holding_id: str
    cycle_start: datetime
    remaining: Decimal


def draw(lots: Sequence[Lot], quantity: Decimal) -> tuple[Decimal, list[tuple[Lot, Decimal]]]:
    """Covers `quantity` from the lots in order (each as far as it goes), taking it off
    them: (what the lots covered, [(lot, what it gave)])."""
    covered = ZERO
    taken: list[tuple[Lot, Decimal]] = []
    for lot in lots:
        if quantity - covered <= 0:
            break
        take = min(lot.remaining, quantity - covered)
        if take > 0:
            lot.remaining -= take
            covered += take
            taken.append((lot, take))
    return covered, taken


def discount_units(
    percent: Decimal, base: int, *, max_discount: int | None, min_spend: int | None
) -> int:
    """What a discount coupon takes off `base` ledger units: `percent` of it, rounded
    half-up to a unit, at most `max_discount`; nothing when `base` is under `min_spend`."""
    if base <= 0 or (min_spend is not None and base < min_spend):
        return 0
    off = int((Decimal(base) * percent / 100).to_integral_value(ROUND_HALF_UP, MONEY_CONTEXT))
    if max_discount is not None:
        off = min(off, max_discount)
    return max(0, min(off, base))


def parse_percent(value: object) -> Decimal:
    """A discount's percentage, above 0 and at most 100 (`"15"` is 15% off)."""
    percent = parse_amount(value, param="percent", allow_zero=False, max_amount=Decimal(100))
    return percent
