"""Plans: a PLAN parsed with its charges (every field checked and named on error)."""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billfold.domain.arrears import ArrearsTerms
from billfold.domain.errors import InvalidRequest
from billfold.domain.money import Currency, currency
from billfold.domain.pricing.core import (
    DAY_US,
    FEE_TIMINGS,
    INTERVALS,
    MAX_CHARGES,
    MAX_INTERVAL_COUNT,
    MAX_TRIAL_DAYS,
    MAX_WINDOWS,
    MODELS,
    PRICING_CONTEXT,
    WEEKDAYS,
    ZERO,
    _allowed,
    _choice,
    _code,
    _count,
    _d,
    _fail,
    _list,
    _mapping,
    _name,
    _price,
    _rate,
)
from billfold.domain.pricing.models import (
    Charge,
    Graduated,
    GraduatedPercentage,
    Package,
    Percentage,
    PerUnit,
    Volume,
    _parse_tiers,
)
from billfold.domain.pricing.time_of_day import TimeOfDay, Window, _parse_clock

_CHARGE_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "per_unit": ("unit_price", "free_units"),
    "graduated": ("tiers",),
    "volume": ("tiers",),
    "package": ("package_size", "package_price", "free_units", "rounding"),
    "percentage": (
        "rate",
        "fixed_fee_per_event",
        "free_events",
        "free_amount",
        "min_per_event",
        "max_per_event",
    ),
    "graduated_percentage": ("tiers",),
    "time_of_day": ("timezone", "windows", "default_unit_price", "free_units"),
}


Fields = Mapping[str, Any]


def _per_unit(metric: str, model: str, get: Fields, param: str) -> Charge:
    return PerUnit(
        metric,
        model,
        _price(get.get("unit_price"), f"{param}.unit_price"),
        _price(get.get("free_units"), f"{param}.free_units", default=ZERO),
    )


def _tiered(metric: str, model: str, get: Fields, param: str) -> Charge:
    if model == "graduated_percentage":
        return GraduatedPercentage(
            metric, model, _parse_tiers(get.get("tiers"), f"{param}.tiers", "rate")
        )
    tiers = _parse_tiers(get.get("tiers"), f"{param}.tiers", "unit_price")
    return (Graduated if model == "graduated" else Volume)(metric, model, tiers)


def _package(metric: str, model: str, get: Fields, param: str) -> Charge:
    size = _price(get.get("package_size"), f"{param}.package_size")
    if size == 0:
        raise _fail("must be greater than zero", f"{param}.package_size")
    return Package(
        metric,
        model,
        size,
        _price(get.get("package_price"), f"{param}.package_price"),
        _price(get.get("free_units"), f"{param}.free_units", default=ZERO),
        _choice(get.get("rounding"), ("up", "down"), f"{param}.rounding", default="up"),
    )


def _optional_price(value: object, param: str) -> Decimal | None:
    return None if value is None else _price(value, param)


def _percentage(metric: str, model: str, get: Fields, param: str) -> Charge:
    minimum = _optional_price(get.get("min_per_event"), f"{param}.min_per_event")
    maximum = _optional_price(get.get("max_per_event"), f"{param}.max_per_event")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise _fail("must not be less than min_per_event", f"{param}.max_per_event")
    free_events = get.get("free_events")
    return Percentage(
        metric,
        model,
        _rate(get.get("rate"), f"{param}.rate"),
        _price(get.get("fixed_fee_per_event"), f"{param}.fixed_fee_per_event", default=ZERO),
        None
        if free_events is None
        else _count(free_events, f"{param}.free_events", default=0, low=0, high=10**9),
        _optional_price(get.get("free_amount"), f"{param}.free_amount"),
        minimum,
        maximum,
    )


def _zone(value: object, param: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise _fail("must be an IANA time zone such as Asia/Shanghai", param)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(f"{value!r} is not an IANA time zone (such as Europe/Berlin)", param) from None
    return value


def _window(raw: object, where: str) -> Window:
    window = _mapping(raw, where)
    _allowed(window, ("days", "from", "to", "unit_price"), where)
    days = _list(window.get("days"), f"{where}.days", limit=7, minimum=1)
    for day_index, day in enumerate(days):
        if day not in WEEKDAYS:
            raise _fail(f"must be one of {', '.join(WEEKDAYS)}", f"{where}.days[{day_index}]")
    start_us, start_text = _parse_clock(window.get("from"), f"{where}.from")
    end_us, end_text = _parse_clock(window.get("to"), f"{where}.to")
    if start_us in (end_us, DAY_US):
        raise _fail(
            "from and to must differ, and from must be before 24:00 (00:00-24:00 is the whole day)",
            f"{where}.to",
        )
    return Window(
        tuple(dict.fromkeys(days)),
        start_us,
        end_us,
        _price(window.get("unit_price"), f"{where}.unit_price"),
        start_text,
        end_text,
    )


def _time_of_day(metric: str, model: str, get: Fields, param: str) -> Charge:
    zone_name = _zone(get.get("timezone"), f"{param}.timezone")
    raw_windows = _list(get.get("windows"), f"{param}.windows", limit=MAX_WINDOWS)
    return TimeOfDay(
        metric,
        model,
        zone_name,
        tuple(_window(raw, f"{param}.windows[{i}]") for i, raw in enumerate(raw_windows)),
        _price(get.get("default_unit_price"), f"{param}.default_unit_price"),
        _price(get.get("free_units"), f"{param}.free_units", default=ZERO),
    )


_CHARGE_PARSERS: Final[dict[str, Callable[[str, str, Fields, str], Charge]]] = {
    "per_unit": _per_unit,
    "graduated": _tiered,
    "volume": _tiered,
    "graduated_percentage": _tiered,
    "package": _package,
    "percentage": _percentage,
    "time_of_day": _time_of_day,
}


def parse_charge(value: object, param: str) -> Charge:
    """One CHARGE of a plan, every field checked; an error names the field."""
    data = _mapping(value, param)
    metric = _code(data.get("metric"), f"{param}.metric")
    model = _choice(data.get("model"), MODELS, f"{param}.model")
    _allowed(data, ("metric", "model", *_CHARGE_FIELDS[model]), param)
    return _CHARGE_PARSERS[model](metric, model, data, param)


# --- plans and quotes -----------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    code: str
    name: str
    service: str
    currency: Currency
    interval: str
    interval_count: int
    fixed_fee: Decimal
    fee_timing: str
    trial_days: int
    minimum: Decimal
    commission_rate: Decimal | None
    charges: tuple[Charge, ...]
    arrears: ArrearsTerms | None = None
    """This plan's own grace and termination periods, instead of the platform's."""

    def to_dict(self) -> dict[str, Any]:
        """The plan in its canonical JSON form (amounts as decimal strings)."""
        return {
            "code": self.code,
            "name": self.name,
            "service": self.service,
            "currency": self.currency.code,
            "interval": self.interval,
            "interval_count": self.interval_count,
            "fixed_fee": _d(self.fixed_fee),
            "fee_timing": self.fee_timing,
            "trial_days": self.trial_days,
            "minimum": _d(self.minimum),
            "commission_rate": None if self.commission_rate is None else _d(self.commission_rate),
            "charges": [c.to_dict() for c in self.charges],
        } | (
            {}
            if self.arrears is None
            else {
                "arrears": {
                    "grace_hours": self.arrears.grace // timedelta(hours=1),
                    "terminate_after_days": self.arrears.terminate_after.days,
                }
            }
        )

    @property
    def metrics(self) -> set[str]:
        return {c.metric for c in self.charges}


PLAN_FIELDS: Final = (
    "code",
    "name",
    "service",
    "currency",
    "interval",
    "interval_count",
    "fixed_fee",
    "fee_timing",
    "trial_days",
    "minimum",
    "commission_rate",
    "charges",
    "arrears",
)
MAX_GRACE_HOURS = 24 * 90
MAX_TERMINATE_DAYS = 365


def _arrears(value: object) -> ArrearsTerms | None:
    """A plan's `arrears`: {"grace_hours": 0-2160, "terminate_after_days": 1-365}."""
    if value is None:
        return None
    data = _mapping(value, "arrears")
    _allowed(data, ("grace_hours", "terminate_after_days"), "arrears")
    hours = _count(
        data.get("grace_hours"), "arrears.grace_hours", default=0, low=0, high=MAX_GRACE_HOURS
    )
    days = _count(
        data.get("terminate_after_days"),
        "arrears.terminate_after_days",
        default=15,
        low=1,
        high=MAX_TERMINATE_DAYS,
    )
    return ArrearsTerms(timedelta(hours=hours), timedelta(days=days))


def parse_plan(value: object) -> Plan:
    """A plan from its JSON form; refuses one that cannot be priced, naming the field."""
    with decimal.localcontext(PRICING_CONTEXT):
        data = _mapping(value, "plan")
        _allowed(data, PLAN_FIELDS, "")
        code = _code(data.get("code"), "code")
        name = _name(data.get("name", code), "name")
        service = _code(data.get("service"), "service")
        try:
            cur = currency(data.get("currency"))
        except InvalidRequest as error:
            raise _fail(error.message, "currency") from None
        interval = _choice(data.get("interval"), INTERVALS, "interval", default="month")
        interval_count = _count(
            data.get("interval_count"), "interval_count", default=1, low=1, high=MAX_INTERVAL_COUNT
        )
        fixed_fee = _price(data.get("fixed_fee"), "fixed_fee", default=ZERO)
        if interval == "none" and fixed_fee:
            raise _fail("a pay-as-you-go plan (interval none) has no fixed fee", "fixed_fee")
        fee_timing = _choice(data.get("fee_timing"), FEE_TIMINGS, "fee_timing", default="advance")
        trial_days = _count(
            data.get("trial_days"), "trial_days", default=0, low=0, high=MAX_TRIAL_DAYS
        )
        minimum = _price(data.get("minimum"), "minimum", default=ZERO)
        commission = data.get("commission_rate")
        commission_rate = None if commission is None else _rate(commission, "commission_rate")
        charges = tuple(
            parse_charge(item, f"charges[{index}]")
            for index, item in enumerate(
                _list(data.get("charges") or [], "charges", limit=MAX_CHARGES)
            )
        )
        return Plan(
            code,
            name,
            service,
            cur,
            interval,
            interval_count,
            fixed_fee,
            fee_timing,
            trial_days,
            minimum,
            commission_rate,
            charges,
            _arrears(data.get("arrears")),
        )
