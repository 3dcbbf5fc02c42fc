"""What every part of pricing shares: the exact decimal context, bounds, field checks."""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from billfold.domain.errors import ErrorCode, InvalidRequest, LimitExceeded
from billfold.domain.money import format_decimal, parse_amount, parse_rate

PRICING_CONTEXT: Final = decimal.Context(
    prec=80,
    rounding=decimal.ROUND_HALF_UP,
    Emax=999,
    Emin=-999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact],
)

MAX_CHARGES: Final = 100
MAX_TIERS: Final = 100
MAX_WINDOWS: Final = 100
MAX_PRICE_PLACES: Final = 12
MAX_EVENTS: Final = 1_000_000
MAX_DETAIL_EVENTS: Final = 100
MAX_NAME_LENGTH: Final = 200
MAX_INTERVAL_COUNT: Final = 1000
MAX_TRIAL_DAYS: Final = 3650
CODE_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")

INTERVALS: Final = ("none", "day", "week", "month", "quarter", "year")
FEE_TIMINGS: Final = ("advance", "arrears")
MODELS: Final = (
    "per_unit",
    "graduated",
    "volume",
    "package",
    "percentage",
    "graduated_percentage",
    "time_of_day",
)
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_US: Final = 86_400_000_000
QUARTER_HOUR_US: Final = 900_000_000
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ZERO: Final = Decimal(0)
ONE: Final = Decimal(1)


# --- parsing helpers ------------------------------------------------------------------


def _fail(message: str, param: str, code: ErrorCode = "invalid_plan") -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", code=code, param=param)


def _mapping(value: object, param: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail("must be an object", param)
    return value


def _allowed(data: Mapping[str, Any], allowed: Iterable[str], param: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        where = f"{param}.{unknown[0]}" if param else unknown[0]
        raise _fail("is not a field of this object", where)


def _code(value: object, param: str) -> str:
    if not isinstance(value, str) or not CODE_PATTERN.match(value):
        raise _fail(
            "must be 1 to 64 letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit",
            param,
        )
    return value


def _name(value: object, param: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_LENGTH:
        raise _fail(f"must be a non-empty text of at most {MAX_NAME_LENGTH} characters", param)
    return value.strip()


def _price(value: object, param: str, *, default: Decimal | None = None) -> Decimal:
    """A non-negative amount with at most 12 decimal places."""
    if value is None:
        if default is None:
            raise _fail("is required", param)
        return default
    try:
        amount = parse_amount(value, param=param)
    except InvalidRequest as error:
        raise _fail(error.message.removeprefix(f"{param} "), param) from None
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -MAX_PRICE_PLACES:
        raise _fail(f"may have at most {MAX_PRICE_PLACES} decimal places", param)
    return amount


def _rate(value: object, param: str, *, default: Decimal | None = None) -> Decimal:
    if value is None:
        if default is None:
            raise _fail("is required", param)
        return default
    try:
        rate = parse_rate(value, param=param)
    except InvalidRequest as error:
        raise _fail(
            'must be a fraction from 0 to 1, such as "0.029" for 2.9% '
            f"({error.message.removeprefix(param + ' ')})",
            param,
        ) from None
    exponent = rate.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -MAX_PRICE_PLACES:
        raise _fail(f"may have at most {MAX_PRICE_PLACES} decimal places", param)
    return rate


def _count(value: object, param: str, *, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise _fail(f"must be a whole number from {low} to {high}", param)
    try:
        number = Decimal(value) if not isinstance(value, Decimal) else value
    except decimal.InvalidOperation:
        raise _fail(f"must be a whole number from {low} to {high}", param) from None
    if not number.is_finite() or number != number.to_integral_value() or not low <= number <= high:
        raise _fail(f"must be a whole number from {low} to {high}", param)
    return int(number)


def _choice(
    value: object, choices: Sequence[str], param: str, *, default: str | None = None
) -> str:
    if value is None and default is not None:
        return default
    if value not in choices:
        raise _fail(f"must be one of {', '.join(choices)}", param)
    return str(value)


def _list(value: object, param: str, *, limit: int, minimum: int = 0) -> list[Any]:
    if not isinstance(value, list):
        raise _fail("must be a list", param)
    if len(value) > limit:
        raise LimitExceeded(
            f"{param}: at most {limit} entries are allowed", code="too_many", param=param
        )
    if len(value) < minimum:
        raise _fail(f"needs at least {minimum} entries", param)
    return value


def _d(value: Decimal) -> str:
    return format_decimal(value)
