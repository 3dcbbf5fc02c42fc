"""Usage to price: events and given quantities per metric, parsed and bounded."""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from billfold.domain.errors import InvalidRequest
from billfold.domain.money import parse_amount
from billfold.domain.periods import EARLIEST, LATEST
from billfold.domain.pricing.core import (
    MAX_EVENTS,
    PRICING_CONTEXT,
    ZERO,
    _allowed,
    _code,
    _fail,
    _list,
    _mapping,
)

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
    if not EARLIEST <= moment < LATEST:
        raise _fail("must be between 1970 and 9000", param, code="invalid_usage")
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
