"""Rating usage as it arrives, so that a period's charges always add up to its quote.

A period's usage of one metric has a state: the aggregated quantity, how many events came,
and, for charges priced event by event, how much of their free allowance is used. Rating
new events moves the state forward and returns the new cumulative amount:

- charges priced on the period's total (per_unit, graduated, volume, package,
  graduated_percentage) cost `price(total after) - price(total before)`;
- percentage and time_of_day charges price each new event, continuing the free
  allowance where the earlier events left it (events are taken in arrival order).

The ledger charges the cumulative amount rounded half-up to its unit, minus what was
charged before, so rounding never drifts: the charges of a period add up to the rounded
amount of the whole period.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from billfold.domain.pricing import (
    PRICING_CONTEXT,
    Charge,
    Event,
    Percentage,
    Plan,
    TimeOfDay,
)

ZERO = Decimal(0)
AGGREGATIONS = ("count", "sum", "max", "unique_count", "latest")
EVENT_PRICED_MODELS = ("percentage", "time_of_day")


@dataclass(frozen=True, slots=True)
class ChargeState:
    """One charge's progress through a period."""

    amount: Decimal = ZERO
    events: int = 0
    free_value_used: Decimal = ZERO
    free_units_used: Decimal = ZERO

    def to_json(self) -> dict[str, Any]:
        return {
            "amount": str(self.amount),
            "events": self.events,
            "free_value_used": str(self.free_value_used),
            "free_units_used": str(self.free_units_used),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChargeState:
        return cls(
            Decimal(data["amount"]),
            int(data["events"]),
            Decimal(data["free_value_used"]),
            Decimal(data["free_units_used"]),
        )


@dataclass(frozen=True, slots=True)
class MetricState:
    """A metric's usage in one period, and what its charges have come to."""

    quantity: Decimal = ZERO
    events: int = 0
    latest_at: datetime | None = None
    charges: tuple[ChargeState, ...] = ()

    @property
    def amount(self) -> Decimal:
        with decimal.localcontext(PRICING_CONTEXT):
            return sum((c.amount for c in self.charges), ZERO)


def aggregate(
    aggregation: str, state: MetricState, events: Sequence[Event], new_unique: int = 0
) -> tuple[Decimal, datetime | None]:
    """The metric's quantity after `events` (and `new_unique` new distinct values)."""
    quantity, latest_at = state.quantity, state.latest_at
    with decimal.localcontext(PRICING_CONTEXT):
        if aggregation in ("count", "sum"):
            quantity += sum((e.value for e in events), ZERO)
        elif aggregation == "max":
            quantity = max([quantity, *(e.value for e in events)])
        elif aggregation == "unique_count":
            quantity += new_unique
        else:
            assert aggregation == "latest"
            for event in events:
                moment = event.timestamp or datetime.min.replace(tzinfo=UTC)
                if latest_at is None or moment >= latest_at:
                    quantity, latest_at = event.value, moment
    return quantity, latest_at


def _rate_charge(
    charge: Charge, state: ChargeState, events: Sequence[Event], quantity_after: Decimal
) -> ChargeState:
    if isinstance(charge, Percentage):
        priced = charge.price_continuing(
            [e.value for e in events],
            events_seen=state.events,
            free_value_used=state.free_value_used,
        )
        return ChargeState(
            state.amount + priced.amount,
            state.events + len(events),
            state.free_value_used + priced.free_value_used,
            ZERO,
        )
    if isinstance(charge, TimeOfDay):
        priced = charge.price_continuing(events, free_units_used=state.free_units_used)
        return ChargeState(
            state.amount + priced.amount,
            state.events + len(events),
            ZERO,
            state.free_units_used + priced.free_units_used,
        )
    # Priced on the period's total: the amount is simply the price of the new total.
    return replace(
        state, amount=charge.amount_for_total(quantity_after), events=state.events + len(events)
    )


def rate(
    plan: Plan,
    metric: str,
    aggregation: str,
    state: MetricState,
    events: Sequence[Event],
    *,
    new_unique: int = 0,
) -> MetricState:
    """The state after rating `events` of `metric` under `plan` (its charges for that metric)."""
    charges = [c for c in plan.charges if c.metric == metric]
    with decimal.localcontext(PRICING_CONTEXT):
        quantity, latest_at = aggregate(aggregation, state, events, new_unique)
        previous = (
            state.charges
            if len(state.charges) == len(charges)
            else (tuple(ChargeState() for _ in charges))
        )
        rated = tuple(
            _rate_charge(charge, charge_state, events, quantity)
            for charge, charge_state in zip(charges, previous, strict=True)
        )
        return MetricState(quantity, state.events + len(events), latest_at, rated)


def units_due(amount: Decimal, scale: int) -> int:
    """Ledger units for a cumulative amount: rounded half-up once, at the ledger's scale."""
    with decimal.localcontext(PRICING_CONTEXT) as context:
        context.traps[decimal.Inexact] = False
        return int(amount.scaleb(scale).to_integral_value(decimal.ROUND_HALF_UP))


def check_charge_fits_metric(charge: Charge, aggregation: str) -> str | None:
    """Why a charge cannot price a metric with this aggregation, or None if it can."""
    if charge.model in EVENT_PRICED_MODELS and aggregation not in ("count", "sum"):
        return (
            f"a {charge.model} charge prices events one by one, so its metric must "
            f"count or sum them (this one is {aggregation})"
        )
    return None
