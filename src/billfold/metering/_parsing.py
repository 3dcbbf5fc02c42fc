"""Usage events as sent: native and CloudEvents, each parsed and bounded on its own."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from billfold.core.exact_json import MAX_JSON_DEPTH, nested_deeper
from billfold.domain.errors import InvalidRequest
from billfold.domain.pricing import Plan, parse_time

MAX_EVENTS_PER_REQUEST: Final = 10_000
MAX_FUTURE: Final = timedelta(minutes=5)
MAX_AGE: Final = timedelta(days=400)
MAX_PROPERTIES_BYTES: Final = 8192
MAX_ID_LENGTH: Final = 255
INSERT_CHUNK: Final = 1000
PERIOD_COLUMNS: Final = (
    "user_id",
    "metric_id",
    "period_start",
    "period_end",
    "plan_id",
    "plan_version",
    "quantity",
    "events",
    "latest_at",
    "state",
    "amount",
    "charged_units",
    "updated_at",
)
EVENT_COLUMNS: Final = (
    "provider_id",
    "event_id",
    "user_id",
    "service_id",
    "metric_id",
    "occurred_at",
    "value",
    "properties",
    "period_start",
    "ingested_at",
)
NATIVE_FIELDS: Final = frozenset(
    {"id", "user", "service", "metric", "timestamp", "value", "properties"}
)


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    code: str
    message: str
    param: str | None


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[Rejection]
    charges: list[str] = field(default_factory=list)
    """The ids of the ledger transfers that charged for this batch."""


# The per-event records below are plain slotted dataclasses, not frozen ones: a frozen
# dataclass sets each field through object.__setattr__, which costs microseconds per event
# on the ingestion hot path. They never leave this module.
@dataclass(slots=True)
class _Raw:
    """An event as sent, in either format, before it is checked against the catalog."""

    index: int
    event_id: str
    user: str
    service: str
    metric: str
    timestamp: datetime
    value: object
    properties: Mapping[str, Any] | None


@dataclass(slots=True)
class _Valid:
    index: int
    event_id: str
    provider_id: str
    user_id: str
    service_id: str
    service_code: str
    metric_id: str
    metric_code: str
    aggregation: str
    plan_id: str
    plan_version: int
    plan: Plan
    """The plan's version in force at the event's time, as validation found it."""
    timestamp: datetime
    value: Decimal
    unique_key: str | None
    properties: str | None
    period: tuple[datetime, datetime] | None
    """The usage period, when a subscription (not the plan's calendar) sets it."""


class _Reject(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


# --- parsing --------------------------------------------------------------------------


def _text(value: object, name: str, limit: int = MAX_ID_LENGTH) -> str:
    if value.__class__ is not str or not 0 < len(value) <= limit:
        raise _Reject("invalid_event", f"{name} must be a text of 1 to {limit} characters", name)
    return value


def _properties(value: object, name: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _Reject("invalid_event", f"{name} must be an object", name)
    if nested_deeper(value):
        raise _Reject("invalid_event", f"{name} may nest at most {MAX_JSON_DEPTH} levels", name)
    if len(json.dumps(value, default=str)) > MAX_PROPERTIES_BYTES:
        raise _Reject("invalid_event", f"{name} may be at most {MAX_PROPERTIES_BYTES} bytes", name)
    return value


_TIMES: dict[str, datetime] = {}


def _time(value: object, name: str, now: datetime) -> datetime:
    if value is None:
        return now
    # A batch's events often share a timestamp text; parse each text once (bounded).
    cached = _TIMES.get(value) if isinstance(value, str) else None
    if cached is not None:
        return cached
    try:
        moment = parse_time(value, name)
        if len(_TIMES) >= 4096:
            _TIMES.clear()
        _TIMES[value] = moment  # type: ignore[index]
        return moment
    except InvalidRequest:
        raise _Reject(
            "invalid_timestamp",
            f"{name} must be an ISO 8601 time with an offset, such as 2026-11-01T00:00:00Z",
            name,
        ) from None


def _parse_native(index: int, item: object, now: datetime) -> _Raw:
    if not isinstance(item, Mapping):
        raise _Reject("invalid_event", "an event must be an object")
    if not NATIVE_FIELDS.issuperset(item):
        unknown = sorted(set(item) - NATIVE_FIELDS)[0]
        raise _Reject("invalid_event", f"{unknown} is not a field of an event", unknown)
    get = item.get
    properties = get("properties")
    return _Raw(
        index,
        _text(get("id"), "id"),
        _text(get("user"), "user"),
        _text(get("service"), "service", 64),
        _text(get("metric"), "metric", 64),
        _time(get("timestamp"), "timestamp", now),
        get("value"),
        None if properties is None else _properties(properties, "properties"),
    )


def _parse_cloudevent(index: int, item: object, now: datetime) -> _Raw:
    """CloudEvents 1.0: type is the metric, subject the user, data the properties (with
    `service` and `value` among them). Extension attributes are allowed and ignored."""
    if not isinstance(item, Mapping):
        raise _Reject("invalid_event", "an event must be an object")
    if item.get("specversion") != "1.0":
        raise _Reject("invalid_event", 'specversion must be "1.0"', "specversion")
    _text(item.get("source"), "source", 1024)
    data = item.get("data") or {}
    if not isinstance(data, Mapping):
        raise _Reject("invalid_event", "data must be an object", "data")
    properties = {k: v for k, v in data.items() if k not in ("service", "value")}
    return _Raw(
        index,
        _text(item.get("id"), "id"),
        _text(item.get("subject"), "subject"),
        _text(data.get("service"), "data.service", 64),
        _text(item.get("type"), "type", 64),
        _time(item.get("time"), "time", now),
        data.get("value"),
        _properties(properties or None, "data"),
    )
