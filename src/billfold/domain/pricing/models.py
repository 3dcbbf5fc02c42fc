"""The charge models priced on a period's quantity or events: per unit, graduated,
volume, package, percentage and graduated percentage.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from billfold.domain.pricing.core import (
    MAX_DETAIL_EVENTS,
    MAX_TIERS,
    PRICING_CONTEXT,
    ZERO,
    _allowed,
    _d,
    _fail,
    _list,
    _mapping,
    _price,
    _rate,
)
from billfold.domain.pricing.usage import MetricUsage

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
