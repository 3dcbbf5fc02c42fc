"""Exact money.

billfold never uses binary floating point for money (beancount: "never use floating-point
in an accounting system"). Amounts are `decimal.Decimal` in the domain and are built in
one place, `parse_amount`, which refuses floats outright.

The ledger stores amounts as integers at a fixed scale per currency: the currency's
minor unit plus `EXTRA_DIGITS` more decimal places (USD: 8 places, so a unit price of
0.000001 is exactly 100 units). Integers are exact on SQLite and PostgreSQL alike, fast
to add, and a 64-bit balance still holds 92 billion USD. Rounding to the minor unit
happens only where money is settled (an invoice line), half-up, via `round_to_minor`.
"""

from __future__ import annotations

import decimal
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Final

from billfold.domain.errors import InvalidAmount, UnknownCurrency

# Decimal arithmetic in billfold never needs to round implicitly: a context with room for
# 60 significant digits keeps every product and sum of our bounded amounts exact. Rounding
# is always asked for by name (quantize, to_integral_value with ROUND_HALF_UP); the
# pricing engine adds the Inexact trap on top, so silent rounding there fails loudly.
DECIMAL_TEXT: Final = re.compile(r"^-?[0-9]+(\.[0-9]+)?\Z")
MONEY_CONTEXT: Final = decimal.Context(
    prec=60,
    rounding=ROUND_HALF_UP,
    Emax=999,
    Emin=-999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)

EXTRA_DIGITS: Final = 6
"""Decimal places the ledger keeps beyond a currency's minor unit."""

MAX_AMOUNT: Final = Decimal("1000000000000")
"""The largest magnitude of a single amount accepted from outside (10^12)."""

MAX_AMOUNT_TEXT_LENGTH: Final = 64
MAX_DECIMAL_PLACES: Final = 30
MAX_UNITS: Final = 2**62
"""Bound on any stored integer amount or balance; SQLite's INTEGER is 64-bit signed."""


@dataclass(frozen=True, slots=True)
class Currency:
    """An ISO 4217 currency and the scale billfold's ledger keeps it at."""

    code: str
    minor_units: int

    @property
    def ledger_scale(self) -> int:
        return self.minor_units + EXTRA_DIGITS

    @property
    def minor_quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.minor_units)


# ISO 4217 active codes by number of minor units (funds codes and precious metals that
# are not spent as money are left out on purpose).
_ZERO_DECIMAL = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMAL = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DECIMAL = "CLF UYW"
_TWO_DECIMAL = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN "
    "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB "
    "EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS "
    "KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN "
    "MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD "
    "SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS "
    "UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)

CURRENCIES: Final[dict[str, Currency]] = {
    code: Currency(code, minor)
    for text, minor in (
        (_ZERO_DECIMAL, 0),
        (_TWO_DECIMAL, 2),
        (_THREE_DECIMAL, 3),
        (_FOUR_DECIMAL, 4),
    )
    for code in text.split()
}


def currency(code: object, *, param: str = "currency") -> Currency:
    """The ISO 4217 currency with this code; refuses anything else."""
    if not isinstance(code, str) or code not in CURRENCIES:
        shown = code if isinstance(code, str) and len(code) <= 16 else "that value"
        raise UnknownCurrency(
            f"{shown!s} is not an ISO 4217 currency code (use three capital letters, "
            "such as USD or EUR)",
            param=param,
        )
    return CURRENCIES[code]


def parse_amount(
    value: object,
    *,
    param: str = "amount",
    allow_negative: bool = False,
    allow_zero: bool = True,
    max_amount: Decimal = MAX_AMOUNT,
) -> Decimal:
    """The one constructor of amounts: a decimal string, an int or a Decimal, never a float."""
    if isinstance(value, bool | float):
        # A float has already lost the exact value the caller meant; refuse rather than guess.
        raise InvalidAmount(
            f'{param} must be a decimal string such as "12.50", not a binary float',
            param=param,
        )
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        # Exactly the API's pattern: ASCII digits, an optional sign and fraction. Python's
        # Decimal would also take "1_000", full-width digits, padding and exponents.
        if len(value) > MAX_AMOUNT_TEXT_LENGTH or not DECIMAL_TEXT.match(value):
            raise InvalidAmount(
                f'{param} must be a decimal number such as "12.50", got {value[:32]!r}',
                param=param,
            )
        amount = Decimal(value)
    else:
        raise InvalidAmount(f'{param} must be a decimal string such as "12.50"', param=param)
    if not amount.is_finite():
        raise InvalidAmount(f"{param} must be a finite number", param=param)
    if amount.is_signed() and not amount.is_zero() and not allow_negative:
        raise InvalidAmount(f"{param} must not be negative", param=param)
    if amount.is_zero() and not allow_zero:
        raise InvalidAmount(f"{param} must be greater than zero", param=param)
    if abs(amount) > max_amount:
        raise InvalidAmount(f"{param} must be at most {max_amount}", param=param)
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -MAX_DECIMAL_PLACES:
        raise InvalidAmount(
            f"{param} may have at most {MAX_DECIMAL_PLACES} decimal places", param=param
        )
    # -0 and 0E+3 are both zero; one spelling keeps equal amounts equal everywhere.
    return Decimal(0) if amount.is_zero() else amount


def to_units(amount: Decimal, cur: Currency, *, param: str = "amount") -> int:
    """The exact integer number of ledger units; refuses amounts finer than the ledger keeps."""
    scaled = amount.scaleb(cur.ledger_scale, MONEY_CONTEXT)
    units = int(scaled)
    if scaled != units:
        raise InvalidAmount(
            f"{param} has more than {cur.ledger_scale} decimal places, "
            f"finer than billfold keeps {cur.code} amounts",
            param=param,
        )
    if abs(units) >= MAX_UNITS:
        raise InvalidAmount(f"{param} is too large", param=param)
    return units


def from_units(units: int, cur: Currency) -> Decimal:
    """The exact amount of a number of ledger units."""
    return Decimal(units).scaleb(-cur.ledger_scale, MONEY_CONTEXT)


def require_minor_units(amount: Decimal, cur: Currency, *, param: str = "amount") -> None:
    """Refuses an amount finer than the currency's minor unit (money entering or leaving)."""
    if amount != amount.quantize(cur.minor_quantum, context=MONEY_CONTEXT):
        raise InvalidAmount(
            f"{param} must have at most {cur.minor_units} decimal places for {cur.code}",
            param=param,
        )


def round_to_minor(amount: Decimal | Fraction, cur: Currency) -> Decimal:
    """Settles an exact amount: half-up (ties away from zero) to the currency's minor unit.

    The one place money is rounded to what can be paid: invoice lines, prorations, taxes,
    MRR and ARPU. Fractions (a prorated fee: amount * days / days in the period) are
    rounded exactly, never through a decimal approximation.
    """
    exact = Fraction(amount)
    units = int(abs(exact) * 10**cur.minor_units + Fraction(1, 2))  # Truncates: the floor.
    return Decimal(-units if exact < 0 else units).scaleb(-cur.minor_units)


def format_money(amount: Decimal, cur: Currency) -> str:
    """The API's one text for an amount of money: plain decimal text with at least the
    currency's minor digits, and more where the amount has them: 12.5 USD is "12.50",
    0.000001 USD is "0.000001", 5 JPY is "5"."""
    normal = amount.normalize(MONEY_CONTEXT)
    exponent = normal.as_tuple().exponent
    assert isinstance(exponent, int)
    places = max(-exponent, cur.minor_units)
    return f"{normal:.{places}f}"


def format_decimal(value: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros: 157.50 is "157.5"."""
    normal = value.normalize(MONEY_CONTEXT)
    exponent = normal.as_tuple().exponent
    assert isinstance(exponent, int)
    return f"{normal:.{max(-exponent, 0)}f}"


def parse_rate(value: object, *, param: str = "rate") -> Decimal:
    """A fraction between 0 and 1 inclusive, such as a commission rate of "0.20"."""
    return parse_amount(value, param=param, max_amount=Decimal(1))
