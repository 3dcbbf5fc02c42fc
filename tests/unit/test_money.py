"""Money is exact: one constructor, no floats, integers at a fixed scale per currency."""

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billfold.domain.errors import InvalidAmount, UnknownCurrency
from billfold.domain.money import (
    CURRENCIES,
    currency,
    format_decimal,
    format_money,
    from_units,
    parse_amount,
    parse_rate,
    require_minor_units,
    round_to_minor,
    to_units,
)

USD = currency("USD")
JPY = currency("JPY")
KWD = currency("KWD")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12.50", Decimal("12.50")),
        (12, Decimal(12)),
        (Decimal("0.000001"), Decimal("0.000001")),
        ("3", Decimal(3)),
        ("-0", Decimal(0)),
    ],
)
def test_parse_amount_accepts_exact_values(value: object, expected: Decimal) -> None:
    assert parse_amount(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        *(0.1, 1.0, True, None, "", "abc", "NaN", "Infinity", "-1", "1" * 65, "1e-31", "1e13"),
        *([], {}),
        # The API's pattern only: no padding, exponents, underscores or non-ASCII digits.
        *(" 3 ", "1e2", "1_000", "１０", "+5", ".5", "5.", "\u0665"),
    ],
)
def test_parse_amount_refuses_floats_and_garbage(value: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(value)


def test_a_float_never_reaches_the_domain() -> None:
    with pytest.raises(InvalidAmount, match="binary float"):
        parse_amount(0.000001)


def test_zero_and_negative_are_refused_on_request() -> None:
    with pytest.raises(InvalidAmount):
        parse_amount("0", allow_zero=False)
    assert parse_amount("-5", allow_negative=True) == Decimal(-5)


def test_ledger_scale_is_minor_units_plus_six() -> None:
    assert (USD.ledger_scale, JPY.ledger_scale, KWD.ledger_scale) == (8, 6, 9)
    assert to_units(Decimal("0.000001"), USD) == 100
    assert to_units(Decimal("12.50"), USD) == 1_250_000_000
    assert to_units(Decimal(1), JPY) == 1_000_000


def test_amounts_finer_than_the_ledger_are_refused() -> None:
    with pytest.raises(InvalidAmount, match="decimal places"):
        to_units(Decimal("0.000000001"), USD)


def test_a_million_micro_charges_add_up_to_exactly_one() -> None:
    unit = to_units(parse_amount("0.000001"), USD)
    total = sum(unit for _ in range(1_000_000))
    assert from_units(total, USD) == Decimal(1)
    # The same sum in binary floating point drifts; this is why floats are refused.
    assert sum(0.000001 for _ in range(1_000_000)) != 1.0


def test_unknown_currencies_are_refused() -> None:
    for code in ("usd", "XYZ", "", None, 840):
        with pytest.raises(UnknownCurrency):
            currency(code)
    assert len(CURRENCIES) > 150


def test_minor_unit_checks_and_settlement_rounding() -> None:
    require_minor_units(Decimal("10.01"), USD)
    with pytest.raises(InvalidAmount):
        require_minor_units(Decimal("10.001"), USD)
    with pytest.raises(InvalidAmount):
        require_minor_units(Decimal("1.5"), JPY)
    assert round_to_minor(Decimal("35.483870"), USD) == Decimal("35.48")
    assert round_to_minor(Decimal("0.005"), USD) == Decimal("0.01")  # half-up
    assert round_to_minor(Decimal("-0.005"), USD) == Decimal("-0.01")


def test_formatting_keeps_minor_digits_and_never_uses_exponents() -> None:
    assert format_money(Decimal("12.5"), USD) == "12.50"
    assert format_money(Decimal("0.000001"), USD) == "0.000001"
    assert format_money(Decimal("1E+3"), USD) == "1000.00"
    assert format_money(Decimal("5"), JPY) == "5"
    assert format_decimal(Decimal("157.50")) == "157.5"
    assert format_decimal(Decimal("1E+2")) == "100"


def test_rates_are_fractions() -> None:
    assert parse_rate("0.20") == Decimal("0.20")
    with pytest.raises(InvalidAmount):
        parse_rate("1.5")
    with pytest.raises(InvalidAmount):
        parse_rate("-0.1")


@given(st.integers(min_value=-(10**17), max_value=10**17), st.sampled_from(["USD", "JPY", "KWD"]))
def test_units_round_trip_exactly(units: int, code: str) -> None:
    cur = currency(code)
    assert to_units(from_units(units, cur), cur) == units
    assert parse_amount(
        format_money(from_units(units, cur), cur), allow_negative=True
    ) == from_units(units, cur)


@pytest.mark.parametrize(
    ("amount", "code", "expected"),
    [
        (Decimal("2.345"), "USD", "2.35"),  # A tie goes away from zero...
        (Decimal("-2.345"), "USD", "-2.35"),  # ...on both sides.
        (Decimal("2.3449999"), "USD", "2.34"),
        (Fraction(50 * 22, 31), "USD", "35.48"),  # A prorated fee, rounded exactly.
        (Fraction(1, 3), "KWD", "0.333"),
        (Decimal("12.5"), "JPY", "13"),
        (Decimal("0"), "USD", "0.00"),
    ],
)
def test_round_to_minor_is_the_one_settling_rounding(
    amount: Decimal | Fraction, code: str, expected: str
) -> None:
    settled = round_to_minor(amount, currency(code))
    assert format_money(settled, currency(code)) == expected
