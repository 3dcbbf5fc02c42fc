"""Proration and billing anchors: published worked examples, and our own edge cases.

Each published example is restated in days under API.md's rule (amount * days_used /
days_in_the_period, half-up to the minor unit), with its source.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billfold.domain.billing import Schedule, days_between, parse_anchor, period_fraction, prorate
from billfold.domain.errors import InvalidRequest
from billfold.domain.money import currency

USD = currency("USD")
JPY = currency("JPY")


def at(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def change_net(old: str, new: str, change: datetime, start: datetime, end: datetime) -> Decimal:
    """Charge for the rest of the period on the new plan minus credit for the old one."""
    used, days = period_fraction(change, end, start, end)
    return prorate(Decimal(new), used, days, USD) - prorate(Decimal(old), used, days, USD)


# (source, old fee, new fee, change day, period, expected credit, expected charge)
UPGRADES = [
    # Stripe, "Prorations" (docs.stripe.com/billing/subscriptions/prorations): a 10 USD
    # monthly plan upgraded to 20 USD halfway through the period: -5 USD unused time on
    # the old price, +10 USD remaining time on the new one, 5 USD more in all. Halfway
    # through a 30-day September is Sep 16 (15 days left).
    ("stripe", "10", "20", at(2026, 9, 16), (at(2026, 9, 1), at(2026, 10, 1)), "5", "10"),
    # Autumn, "Proration" (docs.useautumn.com/documentation/modelling-pricing/proration):
    # 20 USD/month upgraded to 50 USD/month halfway through: charged the 15 USD difference.
    ("autumn", "20", "50", at(2026, 9, 16), (at(2026, 9, 1), at(2026, 10, 1)), "10", "25"),
    # Samsung IAP, "Proration examples", Example 1 (developer.samsung.com/iap/
    # subscription-guide/manage-subscription-plan/examples.html): a 30 USD standard plan
    # from Sep 1, changed to the 60 USD premium plan with 15 of 30 days used: 15 USD of the
    # first payment remains, and INSTANT_PRORATED_CHARGE asks 15 USD more. Under our day
    # rule 15 days used means the change takes effect on Sep 16.
    ("samsung", "30", "60", at(2026, 9, 16), (at(2026, 9, 1), at(2026, 10, 1)), "15", "30"),
]


@pytest.mark.parametrize(
    ("source", "old", "new", "change", "period", "credit", "charge"),
    UPGRADES,
    ids=[u[0] for u in UPGRADES],
)
def test_published_upgrade_examples(
    source: str,
    old: str,
    new: str,
    change: datetime,
    period: tuple[datetime, datetime],
    credit: str,
    charge: str,
) -> None:
    used, days = period_fraction(change, period[1], *period)
    assert prorate(Decimal(old), used, days, USD) == Decimal(credit)
    assert prorate(Decimal(new), used, days, USD) == Decimal(charge)
    assert change_net(old, new, change, *period) == Decimal(charge) - Decimal(credit)


def test_api_md_calendar_start_example() -> None:
    # API.md: a calendar subscription starting Aug 10 belongs to Aug 1 - Sep 1:
    # 50 * 22 / 31 = 35.48.
    schedule = Schedule("month", 1, "calendar", at(2026, 8, 10))
    start, end = schedule.billing_period(at(2026, 8, 10))
    whole = schedule.period_containing(at(2026, 8, 10))
    assert (start, end, whole) == (
        at(2026, 8, 10),
        at(2026, 9, 1),
        (at(2026, 8, 1), at(2026, 9, 1)),
    )
    used, days = period_fraction(start, end, *whole)
    assert (used, days) == (22, 31)
    assert prorate(Decimal(50), used, days, USD) == Decimal("35.48")


def test_zuora_actual_days() -> None:
    # Zuora, "Prorating - 30 days or actual days" (docs.zuora.com): with "Use actual number
    # of days" a partial month is charged actual days used / actual days of that month.
    # A 31 USD charge for Jan 16 - Jan 31 (16 of 31 days) is 16 USD; for February 2028
    # (a leap year) 15 of 29 days of 29 USD is 15 USD.
    used, days = period_fraction(at(2026, 1, 16), at(2026, 2, 1), at(2026, 1, 1), at(2026, 2, 1))
    assert prorate(Decimal(31), used, days, USD) == Decimal(16)
    used, days = period_fraction(at(2028, 2, 15), at(2028, 3, 1), at(2028, 2, 1), at(2028, 3, 1))
    assert (used, days) == (15, 29)
    assert prorate(Decimal(29), used, days, USD) == Decimal(15)


def test_month_end_anchor_goes_back_to_the_31st() -> None:
    # Stripe, "Billing cycle" (docs.stripe.com/billing/subscriptions/billing-cycle): a
    # monthly subscription anchored on the 31st bills on the last day of shorter months
    # and returns to the 31st. API.md: 31 gives Feb 28, then Mar 31.
    schedule = Schedule("month", 1, "31", at(2027, 1, 31))
    assert [schedule.boundary(k) for k in range(4)] == [
        at(2027, 1, 31),
        at(2027, 2, 28),
        at(2027, 3, 31),
        at(2027, 4, 30),
    ]
    anniversary = Schedule("month", 1, "anniversary", at(2027, 1, 31, 9))
    assert anniversary.boundary(1) == at(2027, 2, 28, 9)
    assert anniversary.boundary(2) == at(2027, 3, 31, 9)


def test_leap_years() -> None:
    leap = Schedule("month", 1, "31", at(2028, 1, 31))
    assert leap.boundary(1) == at(2028, 2, 29)
    yearly = Schedule("year", 1, "anniversary", at(2028, 2, 29))
    assert [yearly.boundary(k) for k in range(1, 5)] == [
        at(2029, 2, 28),
        at(2030, 2, 28),
        at(2031, 2, 28),
        at(2032, 2, 29),
    ]
    # A year of 366 days: one day of a 366 USD yearly plan is 1 USD.
    used, days = period_fraction(at(2028, 12, 31), at(2029, 1, 1), at(2028, 1, 1), at(2029, 1, 1))
    assert (used, days) == (1, 366)
    assert prorate(Decimal(366), used, days, USD) == Decimal(1)


@pytest.mark.parametrize(
    ("change", "credit", "charge"),
    [
        (at(2026, 11, 1), "30", "60"),  # First day: the whole period is on the new plan.
        (at(2026, 11, 30, 23), "1", "2"),  # Last day: one day of 30 moves.
    ],
)
def test_upgrade_on_first_and_last_day(change: datetime, credit: str, charge: str) -> None:
    start, end = at(2026, 11, 1), at(2026, 12, 1)
    used, days = period_fraction(change, end, start, end)
    assert prorate(Decimal(30), used, days, USD) == Decimal(credit)
    assert prorate(Decimal(60), used, days, USD) == Decimal(charge)


def test_downgrade_and_cancellation_credit() -> None:
    # Cancelled (or downgraded immediately) on Dec 11: Dec 11 - Dec 31 are 21 unused days.
    used, days = period_fraction(at(2026, 12, 11), at(2027, 1, 1), at(2026, 12, 1), at(2027, 1, 1))
    assert (used, days) == (21, 31)
    assert prorate(Decimal(30), used, days, USD) == Decimal("20.32")  # 20.3225..


def test_rounding_is_half_up_on_the_line() -> None:
    assert prorate(Decimal("0.05"), 1, 2, USD) == Decimal("0.03")  # 0.025 -> 0.03
    assert prorate(Decimal(1000), 1, 3, JPY) == Decimal(333)
    assert prorate(Decimal(1001), 1, 2, JPY) == Decimal(501)  # 500.5 -> 501


def test_quarter_and_week_and_day_grids() -> None:
    quarter = Schedule("quarter", 1, "calendar", at(2026, 11, 5))
    assert quarter.period_containing(at(2026, 11, 5)) == (at(2026, 10, 1), at(2027, 1, 1))
    week = Schedule("week", 1, "calendar", at(2026, 11, 5))
    assert week.period_containing(at(2026, 11, 5)) == (at(2026, 11, 2), at(2026, 11, 9))
    days = Schedule("day", 3, "anniversary", at(2026, 11, 5, 7))
    assert days.period_containing(at(2026, 11, 9)) == (at(2026, 11, 8, 7), at(2026, 11, 11, 7))
    assert days_between(at(2026, 11, 5, 23), at(2026, 11, 6, 1)) == 1


def test_anchor_validation() -> None:
    assert parse_anchor(None, "month") == "calendar"
    assert parse_anchor(31, "month") == "31"
    assert parse_anchor("15", "year") == "15"
    for bad in (0, 32, "last", True):
        with pytest.raises(InvalidRequest):
            parse_anchor(bad, "month")
    with pytest.raises(InvalidRequest):
        parse_anchor(5, "week")
