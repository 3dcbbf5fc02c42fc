"""The pricing engine: plans, charge models and quotes, as pure functions over exact decimals.

A plan (API.md "PLAN") prices one service: a fixed fee per interval, a minimum spend, and
charges, one per metric and model. `quote(plan, usage)` prices a period's usage and says
how every amount came about, line by line, so a quote can be pasted into a support ticket.

All arithmetic runs in a decimal context that traps Inexact: prices have at most 12
decimal places and quantities are bounded, so every product and sum is exact, and any
rounding would be a bug that fails loudly rather than a cent that goes missing. Quote
amounts are exact, not rounded: money is rounded only where it is settled.
"""

from __future__ import annotations

import bisect
import decimal
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billfold.domain.errors import ErrorCode, InvalidRequest, LimitExceeded
from billfold.domain.money import Currency, currency, format_decimal, parse_amount, parse_rate

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


# --- usage ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    metric: str
    value: Decimal
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class MetricUsage:
    """One metric's usage in a period: its events in time order and any given quantity."""

    events: tuple[Event, ...] = ()
    given: Decimal = ZERO

    @property
    def quantity(self) -> Decimal:
        with decimal.localcontext(PRICING_CONTEXT):
            return sum((e.value for e in self.events), self.given)


@dataclass(frozen=True, slots=True)
class Usage:
    metrics: Mapping[str, MetricUsage]

    def of(self, metric: str) -> MetricUsage:
        return self.metrics.get(metric) or MetricUsage()


def parse_time(value: object, param: str) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise _fail(
            "must be an ISO 8601 time with an offset, such as 2026-11-01T00:00:00Z",
            param,
            code="invalid_usage",
        )
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _fail(
            "must be an ISO 8601 time with an offset, such as 2026-11-01T00:00:00Z",
            param,
            code="invalid_usage",
        ) from None
    if moment.tzinfo is None:
        raise _fail("needs a UTC offset (such as Z or +08:00)", param, code="invalid_usage")
    return moment.astimezone(UTC)


def parse_usage(data: object, *, max_events: int = MAX_EVENTS) -> Usage:
    """USAGE from its JSON form: {"quantities": {metric: q}, "events": [EVENT, ...]}."""
    if data is None:
        data = {}
    body = _mapping(data, "usage")
    _allowed(body, ("quantities", "events"), "usage")
    given: dict[str, Decimal] = {}
    for metric, value in _mapping(body.get("quantities") or {}, "usage.quantities").items():
        param = f"usage.quantities.{metric}"
        _code(metric, param)
        try:
            given[metric] = parse_amount(value, param=param)
        except InvalidRequest as error:
            raise _fail(error.message.removeprefix(param + " "), param, "invalid_usage") from None
    raw_events = _list(body.get("events") or [], "usage.events", limit=max_events)
    timed: dict[str, list[Event]] = {}
    untimed: dict[str, list[Event]] = {}
    for index, raw in enumerate(raw_events):
        param = f"usage.events[{index}]"
        event = _mapping(raw, param)
        _allowed(event, ("metric", "timestamp", "value", "id", "properties"), param)
        metric = _code(event.get("metric"), f"{param}.metric")
        try:
            value = parse_amount(event.get("value", 1), param=f"{param}.value")
        except InvalidRequest as error:
            raise _fail(
                error.message.removeprefix(f"{param}.value "), f"{param}.value", "invalid_usage"
            ) from None
        stamp = event.get("timestamp")
        moment = parse_time(stamp, f"{param}.timestamp") if stamp is not None else None
        target = timed if moment is not None else untimed
        target.setdefault(metric, []).append(Event(metric, value, moment))
    metrics: dict[str, MetricUsage] = {}
    for metric in set(given) | set(timed) | set(untimed):
        ordered = sorted(timed.get(metric, []), key=lambda e: e.timestamp)  # type: ignore[arg-type, return-value]
        # Events are taken in time order; events without a timestamp follow in the order given.
        metrics[metric] = MetricUsage(
            tuple(ordered + untimed.get(metric, [])), given.get(metric, ZERO)
        )
    return Usage(metrics)


# --- charge models --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Priced:
    amount: Decimal
    details: list[dict[str, Any]]
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class Continued:
    """What more events of an event-priced charge cost, and the free allowance they used."""

    amount: Decimal
    free_value_used: Decimal = ZERO
    free_units_used: Decimal = ZERO


@dataclass(slots=True)
class _PercentageWalk:
    amount: Decimal = ZERO
    free_value_used: Decimal = ZERO
    free_count: int = 0
    partial_count: int = 0
    details: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Tier:
    up_to: Decimal | None
    price: Decimal
    flat_fee: Decimal


def _parse_tiers(value: object, param: str, price_field: str) -> tuple[Tier, ...]:
    raw = _list(value, param, limit=MAX_TIERS, minimum=1)
    tiers: list[Tier] = []
    previous = ZERO
    for index, item in enumerate(raw):
        where = f"{param}[{index}]"
        tier = _mapping(item, where)
        _allowed(tier, ("up_to", price_field, "flat_fee"), where)
        last = index == len(raw) - 1
        up_to_raw = tier.get("up_to")
        if last:
            if up_to_raw is not None:
                raise _fail('the last tier must be open-ended ("up_to": null)', f"{where}.up_to")
            up_to = None
        else:
            if up_to_raw is None:
                raise _fail("only the last tier may be open-ended", f"{where}.up_to")
            up_to = _price(up_to_raw, f"{where}.up_to")
            if up_to <= previous:
                raise _fail(
                    f"tier bounds must increase (this one is {_d(up_to)}, the one before "
                    f"{_d(previous)})",
                    f"{where}.up_to",
                )
            previous = up_to
        price = (
            _rate(tier.get(price_field), f"{where}.{price_field}")
            if price_field == "rate"
            else _price(tier.get(price_field), f"{where}.{price_field}")
        )
        tiers.append(
            Tier(up_to, price, _price(tier.get("flat_fee"), f"{where}.flat_fee", default=ZERO))
        )
    return tuple(tiers)


def _tier_dict(tier: Tier, price_field: str) -> dict[str, Any]:
    return {
        "up_to": None if tier.up_to is None else _d(tier.up_to),
        price_field: _d(tier.price),
        "flat_fee": _d(tier.flat_fee),
    }


def _graduated_amount(tiers: Sequence[Tier], q: Decimal) -> Decimal:
    """The graduated amount alone, without the details a quote shows (for rating)."""
    amount = ZERO
    lower = ZERO
    for index, tier in enumerate(tiers):
        if index > 0 and q <= lower:
            break
        top = q if tier.up_to is None else min(q, tier.up_to)
        amount += max(top - lower, ZERO) * tier.price + tier.flat_fee
        if tier.up_to is None or q <= tier.up_to:
            break
        lower = tier.up_to
    return amount


def _graduated(tiers: Sequence[Tier], q: Decimal, price_field: str) -> Priced:
    amount = ZERO
    lower = ZERO
    details = []
    for index, tier in enumerate(tiers):
        if index > 0 and q <= lower:
            break
        top = q if tier.up_to is None else min(q, tier.up_to)
        units = max(top - lower, ZERO)
        part = units * tier.price + tier.flat_fee
        amount += part
        details.append(
            {
                "tier": index + 1,
                "from": _d(lower),
                "up_to": None if tier.up_to is None else _d(tier.up_to),
                "units": _d(units),
                price_field: _d(tier.price),
                "flat_fee": _d(tier.flat_fee),
                "amount": _d(part),
            }
        )
        if tier.up_to is None or q <= tier.up_to:
            break
        lower = tier.up_to
    return Priced(amount, details, q)


@dataclass(frozen=True, slots=True)
class Charge:
    """What every charge model has: the metric it prices and how it is described."""

    metric: str
    model: str

    def price(self, usage: MetricUsage) -> Priced:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def amount_for_total(self, quantity: Decimal) -> Decimal:
        """The amount for a period's total alone (models priced on the total)."""
        return self.price(MetricUsage(given=quantity)).amount

    @property
    def depends_only_on_total(self) -> bool:
        """Whether the amount depends only on the period's total quantity, not its events."""
        return True


@dataclass(frozen=True, slots=True)
class PerUnit(Charge):
    unit_price: Decimal
    free_units: Decimal = ZERO

    def amount_for_total(self, quantity: Decimal) -> Decimal:
        return max(quantity - self.free_units, ZERO) * self.unit_price

    def price(self, usage: MetricUsage) -> Priced:
        q = usage.quantity
        billable = max(q - self.free_units, ZERO)
        amount = billable * self.unit_price
        return Priced(
            amount,
            [
                {
                    "free_units": _d(min(q, self.free_units)),
                    "billable_units": _d(billable),
                    "unit_price": _d(self.unit_price),
                    "amount": _d(amount),
                }
            ],
            q,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "model": self.model,
            "unit_price": _d(self.unit_price),
            "free_units": _d(self.free_units),
        }


@dataclass(frozen=True, slots=True)
class Graduated(Charge):
    """Each tier prices the units inside it; graduated_percentage is the same with rates."""

    tiers: tuple[Tier, ...]
    price_field: ClassVar[str] = "unit_price"

    def amount_for_total(self, quantity: Decimal) -> Decimal:
        return _graduated_amount(self.tiers, quantity)

    def price(self, usage: MetricUsage) -> Priced:
        return _graduated(self.tiers, usage.quantity, self.price_field)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "model": self.model,
            "tiers": [_tier_dict(t, self.price_field) for t in self.tiers],
        }


@dataclass(frozen=True, slots=True)
class Volume(Charge):
    tiers: tuple[Tier, ...]

    def price(self, usage: MetricUsage) -> Priced:
        q = usage.quantity
        index, tier = next(
            (i, t) for i, t in enumerate(self.tiers) if t.up_to is None or q <= t.up_to
        )
        amount = q * tier.price + tier.flat_fee
        return Priced(
            amount,
            [
                {
                    "tier": index + 1,
                    "up_to": None if tier.up_to is None else _d(tier.up_to),
                    "units": _d(q),
                    "unit_price": _d(tier.price),
                    "flat_fee": _d(tier.flat_fee),
                    "amount": _d(amount),
                }
            ],
            q,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "model": self.model,
            "tiers": [_tier_dict(t, "unit_price") for t in self.tiers],
        }


@dataclass(frozen=True, slots=True)
class Package(Charge):
    package_size: Decimal
    package_price: Decimal
    free_units: Decimal = ZERO
    rounding: str = "up"

    def price(self, usage: MetricUsage) -> Priced:
        q = usage.quantity
        billable = max(q - self.free_units, ZERO)
        whole, rest = divmod(billable, self.package_size)
        packages = whole + (1 if rest and self.rounding == "up" else 0)
        amount = packages * self.package_price
        return Priced(
            amount,
            [
                {
                    "free_units": _d(min(q, self.free_units)),
                    "billable_units": _d(billable),
                    "package_size": _d(self.package_size),
                    "packages": _d(packages),
                    "rounding": self.rounding,
                    "package_price": _d(self.package_price),
                    "amount": _d(amount),
                }
            ],
            q,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "model": self.model,
            "package_size": _d(self.package_size),
            "package_price": _d(self.package_price),
            "free_units": _d(self.free_units),
            "rounding": self.rounding,
        }


@dataclass(frozen=True, slots=True)
class Percentage(Charge):
    rate: Decimal
    fixed_fee_per_event: Decimal = ZERO
    free_events: int | None = None
    free_amount: Decimal | None = None
    min_per_event: Decimal | None = None
    max_per_event: Decimal | None = None

    @property
    def depends_only_on_total(self) -> bool:
        return False

    def _fee(self, uncovered: Decimal) -> Decimal:
        fee = uncovered * self.rate + self.fixed_fee_per_event
        if self.min_per_event is not None:
            fee = max(fee, self.min_per_event)
        if self.max_per_event is not None:
            fee = min(fee, self.max_per_event)
        return fee

    def price(self, usage: MetricUsage) -> Priced:
        # A given quantity (without events) counts as one more event, after the others.
        values = [e.value for e in usage.events]
        if usage.given:
            values.append(usage.given)
        walk = self._walk(values, events_seen=0, free_value_used=ZERO, details=True)
        summary: dict[str, Any] = {
            "events": len(values),
            "free_events": walk.free_count,
            "partly_free_events": walk.partial_count,
            "free_value_used": _d(walk.free_value_used),
            "rate": _d(self.rate),
            "fixed_fee_per_event": _d(self.fixed_fee_per_event),
            "amount": _d(walk.amount),
        }
        if len(values) > MAX_DETAIL_EVENTS:
            summary["events_shown"] = MAX_DETAIL_EVENTS
        with decimal.localcontext(PRICING_CONTEXT):
            total = sum(values, ZERO)
        return Priced(walk.amount, [summary, *walk.details], total)

    def price_continuing(
        self, values: Sequence[Decimal], *, events_seen: int, free_value_used: Decimal
    ) -> Continued:
        """The fees of more events, after `events_seen` events used `free_value_used` free."""
        with decimal.localcontext(PRICING_CONTEXT):
            walk = self._walk(
                values, events_seen=events_seen, free_value_used=free_value_used, details=False
            )
        return Continued(walk.amount, free_value_used=walk.free_value_used)

    def _walk(
        self,
        values: Sequence[Decimal],
        *,
        events_seen: int,
        free_value_used: Decimal,
        details: bool,
    ) -> _PercentageWalk:
        has_allowance = self.free_events is not None or self.free_amount is not None
        events_left = None if self.free_events is None else max(self.free_events - events_seen, 0)
        amount_left = (
            None if self.free_amount is None else max(self.free_amount - free_value_used, ZERO)
        )
        walk = _PercentageWalk()
        for index, value in enumerate(values):
            in_allowance = (
                has_allowance
                and (events_left is None or events_left > 0)
                and (amount_left is None or amount_left > 0)
            )
            covered = ZERO
            if in_allowance:
                covered = value if amount_left is None else min(value, amount_left)
                if events_left is not None:
                    events_left -= 1
                if amount_left is not None:
                    amount_left -= covered
                walk.free_value_used += covered
            uncovered = value - covered
            fee = ZERO
            if in_allowance and uncovered == 0:
                walk.free_count += 1
            else:
                walk.partial_count += 1 if in_allowance else 0
                fee = self._fee(uncovered)
            walk.amount += fee
            if details and index < MAX_DETAIL_EVENTS:
                walk.details.append(
                    {"event": index, "value": _d(value), "free_value": _d(covered), "fee": _d(fee)}
                )
        return walk

    def to_dict(self) -> dict[str, Any]:
        def opt(value: Decimal | None) -> str | None:
            return None if value is None else _d(value)

        return {
            "metric": self.metric,
            "model": self.model,
            "rate": _d(self.rate),
            "fixed_fee_per_event": _d(self.fixed_fee_per_event),
            "free_events": self.free_events,
            "free_amount": opt(self.free_amount),
            "min_per_event": opt(self.min_per_event),
            "max_per_event": opt(self.max_per_event),
        }


@dataclass(frozen=True, slots=True)
class GraduatedPercentage(Graduated):
    price_field: ClassVar[str] = "rate"


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


def parse_charge(value: object, param: str) -> Charge:
    data = _mapping(value, param)
    metric = _code(data.get("metric"), f"{param}.metric")
    model = _choice(data.get("model"), MODELS, f"{param}.model")
    _allowed(data, ("metric", "model", *_CHARGE_FIELDS[model]), param)

    def get(name: str) -> Any:
        return data.get(name)

    if model == "per_unit":
        return PerUnit(
            metric,
            model,
            _price(get("unit_price"), f"{param}.unit_price"),
            _price(get("free_units"), f"{param}.free_units", default=ZERO),
        )
    if model in ("graduated", "volume"):
        tiers = _parse_tiers(get("tiers"), f"{param}.tiers", "unit_price")
        return (Graduated if model == "graduated" else Volume)(metric, model, tiers)
    if model == "graduated_percentage":
        return GraduatedPercentage(
            metric, model, _parse_tiers(get("tiers"), f"{param}.tiers", "rate")
        )
    if model == "package":
        size = _price(get("package_size"), f"{param}.package_size")
        if size == 0:
            raise _fail("must be greater than zero", f"{param}.package_size")
        return Package(
            metric,
            model,
            size,
            _price(get("package_price"), f"{param}.package_price"),
            _price(get("free_units"), f"{param}.free_units", default=ZERO),
            _choice(get("rounding"), ("up", "down"), f"{param}.rounding", default="up"),
        )
    if model == "percentage":
        minimum = (
            None
            if get("min_per_event") is None
            else _price(get("min_per_event"), f"{param}.min_per_event")
        )
        maximum = (
            None
            if get("max_per_event") is None
            else _price(get("max_per_event"), f"{param}.max_per_event")
        )
        if minimum is not None and maximum is not None and minimum > maximum:
            raise _fail("must not be less than min_per_event", f"{param}.max_per_event")
        return Percentage(
            metric,
            model,
            _rate(get("rate"), f"{param}.rate"),
            _price(get("fixed_fee_per_event"), f"{param}.fixed_fee_per_event", default=ZERO),
            None
            if get("free_events") is None
            else _count(get("free_events"), f"{param}.free_events", default=0, low=0, high=10**9),
            None
            if get("free_amount") is None
            else _price(get("free_amount"), f"{param}.free_amount"),
            minimum,
            maximum,
        )
    assert model == "time_of_day"
    zone_name = get("timezone")
    if not isinstance(zone_name, str) or not zone_name or len(zone_name) > 64:
        raise _fail("must be an IANA time zone such as Asia/Shanghai", f"{param}.timezone")
    try:
        ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(
            f"{zone_name!r} is not an IANA time zone (such as Europe/Berlin)", f"{param}.timezone"
        ) from None
    windows = []
    for index, raw in enumerate(_list(get("windows"), f"{param}.windows", limit=MAX_WINDOWS)):
        where = f"{param}.windows[{index}]"
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
                "from and to must differ, and from must be before 24:00 "
                "(00:00-24:00 is the whole day)",
                f"{where}.to",
            )
        windows.append(
            Window(
                tuple(dict.fromkeys(days)),
                start_us,
                end_us,
                _price(window.get("unit_price"), f"{where}.unit_price"),
                start_text,
                end_text,
            )
        )
    return TimeOfDay(
        metric,
        model,
        zone_name,
        tuple(windows),
        _price(get("default_unit_price"), f"{param}.default_unit_price"),
        _price(get("free_units"), f"{param}.free_units", default=ZERO),
    )


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
        }

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
)


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
        )


@dataclass(frozen=True, slots=True)
class QuoteLine:
    kind: str
    metric: str | None
    model: str | None
    quantity: Decimal
    amount: Decimal
    details: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "model": self.model,
            "quantity": _d(self.quantity),
            "amount": _d(self.amount),
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class Quote:
    currency: Currency
    total: Decimal
    lines: tuple[QuoteLine, ...]
    ignored_metrics: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency.code,
            "total": _d(self.total),
            "lines": [line.to_dict() for line in self.lines],
            "ignored_metrics": list(self.ignored_metrics),
        }


def price_charge(charge: Charge, usage: MetricUsage) -> Priced:
    """One charge's amount for one metric's usage (exact)."""
    with decimal.localcontext(PRICING_CONTEXT):
        return charge.price(usage)


def quote(plan: Plan, usage: Usage, *, include_fixed_fee: bool = True) -> Quote:
    """Prices a period's usage under the plan: fixed fee, usage lines, minimum true-up."""
    with decimal.localcontext(PRICING_CONTEXT):
        lines: list[QuoteLine] = []
        if include_fixed_fee and plan.fixed_fee:
            lines.append(
                QuoteLine(
                    "fixed_fee",
                    None,
                    None,
                    ONE,
                    plan.fixed_fee,
                    [
                        {
                            "interval": plan.interval,
                            "interval_count": plan.interval_count,
                            "fee_timing": plan.fee_timing,
                            "amount": _d(plan.fixed_fee),
                        }
                    ],
                )
            )
        usage_total = ZERO
        for charge in plan.charges:
            priced = charge.price(usage.of(charge.metric))
            usage_total += priced.amount
            lines.append(
                QuoteLine(
                    "usage",
                    charge.metric,
                    charge.model,
                    priced.quantity,
                    priced.amount,
                    priced.details,
                )
            )
        if plan.minimum and usage_total < plan.minimum:
            true_up = plan.minimum - usage_total
            lines.append(
                QuoteLine(
                    "minimum",
                    None,
                    None,
                    ONE,
                    true_up,
                    [
                        {
                            "minimum": _d(plan.minimum),
                            "usage_charges": _d(usage_total),
                            "true_up": _d(true_up),
                        }
                    ],
                )
            )
        total = sum((line.amount for line in lines), ZERO)
        ignored = tuple(sorted(set(usage.metrics) - plan.metrics))
        return Quote(plan.currency, total, tuple(lines), ignored)
