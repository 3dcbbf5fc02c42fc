"""Metering and real-time charging: usage events in, money moved, exactly once.

`ingest` takes a batch of events (native or CloudEvents), validates each on its own, and
in one database transaction:

1. stores the valid ones, skipping any whose (provider, id) is already stored: a resent
   event changes nothing, however late it is resent;
2. rates them per user, metric, period and plan version (see `billfold.domain.rating`);
3. posts one ledger transfer per user, service, metric and period for what the batch
   added: the payer (a prepaid wallet, or a postpaid user's receivable) down, the
   provider's earnings and the platform's commission up. A prepaid wallet that cannot
   cover usage that already happened pays what it can; the rest becomes the user's debt
   (receivable), which suspends the user until a top-up pays it.

The response is sent only after the commit, so an acknowledged event is never lost.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import bindparam, select, tuple_, update

from billfold import ledger
from billfold.catalog import PlanVersions, load_service, load_versions, terms
from billfold.core.access import Principal, Role, require_role
from billfold.core.context import Context, Work
from billfold.domain.analytics import bucket_of
from billfold.domain.errors import BillfoldError, InvalidRequest, LimitExceeded
from billfold.domain.ledger import (
    HoldStatus,
    TransferKind,
    TransferSpec,
    charge_transfer,
    commission_in_force,
)
from billfold.domain.money import currency, format_decimal, parse_amount
from billfold.domain.periods import calendar_period
from billfold.domain.pricing import Event, Plan, parse_time
from billfold.domain.rating import ChargeState, MetricState, rate, units_due
from billfold.ids import new_id
from billfold.metering.journal import UsageJournal
from billfold.store.bulk import db_datetime, insert_new_returning
from billfold.store.tables import (
    metrics,
    plans,
    providers,
    services,
    usage_events,
    usage_periods,
    usage_uniques,
    users,
)

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


# --- catalog lookups, once per batch --------------------------------------------------


@dataclass
class _Catalog:
    users: dict[str, Any]
    services: dict[str, Any]
    metrics: dict[tuple[str, str], Any]
    versions: dict[str, PlanVersions]
    providers: dict[str, Decimal]
    latest_allowed: datetime
    oldest_allowed: datetime
    periods: dict[tuple[str, int, Any], tuple[datetime, datetime]] = field(default_factory=dict)
    targets: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    subscribed: dict[tuple[str, str], list[tuple[Any, Any]]] = field(default_factory=dict)

    def plan_at(self, plan_id: str, moment: datetime) -> tuple[int, Plan]:
        version = self.versions[plan_id].at(moment)
        return version.version, version.plan

    def calendar_period(self, plan_id: str, moment: datetime) -> tuple[datetime, datetime]:
        """The calendar period of `moment` under the plan version in force then."""
        return self.period_of(self.plan_at(plan_id, moment)[1], moment)

    def period_of(self, plan: Plan, moment: datetime) -> tuple[datetime, datetime]:
        """The calendar period of `moment`, memoised per day: a batch spans few days."""
        key = (plan.interval, plan.interval_count, moment.date())
        period = self.periods.get(key)
        if period is None:
            period = calendar_period(plan.interval, plan.interval_count, moment)
            self.periods[key] = period
        return period


def _load_catalog(work: Work, raws: Sequence[_Raw], now: datetime) -> _Catalog:
    conn = work.conn
    refs = sorted({r.user for r in raws})
    user_rows: dict[str, Any] = {}
    for start in range(0, len(refs), 1000):
        chunk = refs[start : start + 1000]
        for row in conn.execute(
            select(
                users.c.id,
                users.c.external_id,
                users.c.currency,
                users.c.billing_mode,
                users.c.status,
            ).where(users.c.id.in_(chunk) | users.c.external_id.in_(chunk))
        ):
            user_rows[row.id] = row
            if row.external_id:
                user_rows[row.external_id] = row
    codes = sorted({r.service for r in raws})
    service_rows = {
        row.code: row for row in conn.execute(select(services).where(services.c.code.in_(codes)))
    }
    metric_rows = {}
    if service_rows:
        ids = {row.id: row.code for row in service_rows.values()}
        for row in conn.execute(select(metrics).where(metrics.c.service_id.in_(list(ids)))):
            metric_rows[(ids[row.service_id], row.code)] = row
    pairs = {
        (user.id, service.id) for user in user_rows.values() for service in service_rows.values()
    }
    subscribed = terms.plans_at(work, pairs) if pairs else {}
    plan_ids = sorted(
        {row.default_plan_id for row in service_rows.values() if row.default_plan_id}
        | {phase.plan_id for phases in subscribed.values() for _, phase in phases}
    )
    versions = load_versions(work, plan_ids)
    provider_ids = sorted({row.provider_id for row in service_rows.values()})
    rates = {
        row.id: Decimal(row.commission_rate)
        for row in conn.execute(
            select(providers.c.id, providers.c.commission_rate).where(
                providers.c.id.in_(provider_ids)
            )
        )
    }
    return _Catalog(
        user_rows,
        service_rows,
        metric_rows,
        versions,
        rates,
        now + MAX_FUTURE,
        now - MAX_AGE,
        subscribed=subscribed,
    )


@dataclass(slots=True)
class _Target:
    """What an event's user, service and metric resolve to (the same for many events)."""

    user_id: str
    currency: str
    provider_id: str
    service_id: str
    service_code: str
    metric: Any
    plan_id: str | None
    phases: list[tuple[Any, Any]] | None


def _resolve(raw: _Raw, catalog: _Catalog, principal: Principal) -> _Target | tuple[str, str, str]:
    """The event's target, or the (code, message, param) of why it has none."""
    user = catalog.users.get(raw.user)
    if user is None:
        return ("user_not_found", f"no user {raw.user}", "user")
    service = catalog.services.get(raw.service)
    if service is None or (
        principal.role == Role.PROVIDER and service.provider_id != principal.provider_id
    ):
        return ("service_not_found", f"no service {raw.service}", "service")
    metric = catalog.metrics.get((raw.service, raw.metric))
    if metric is None:
        return ("metric_not_found", f"service {raw.service} has no metric {raw.metric}", "metric")
    return _Target(
        user.id,
        user.currency,
        service.provider_id,
        service.id,
        service.code,
        metric,
        service.default_plan_id,
        catalog.subscribed.get((user.id, service.id)),
    )


def _validate(raw: _Raw, catalog: _Catalog, principal: Principal, now: datetime) -> _Valid:
    key = (raw.user, raw.service, raw.metric)
    target = catalog.targets.get(key)
    if target is None:
        # A batch names few (user, service, metric) triples: resolve each once.
        target = catalog.targets[key] = _resolve(raw, catalog, principal)
    if isinstance(target, tuple):
        raise _Reject(*target)
    if raw.timestamp > catalog.latest_allowed:
        raise _Reject(
            "timestamp_in_future", "timestamp is more than 5 minutes in the future", "timestamp"
        )
    if raw.timestamp < catalog.oldest_allowed:
        raise _Reject("timestamp_too_old", "timestamp is more than 400 days old", "timestamp")
    found = terms.terms_at(target.phases, target.plan_id, raw.timestamp, catalog.calendar_period)
    if found.plan_id is None:
        raise _Reject(
            "no_plan",
            f"service {raw.service} has no pay-as-you-go plan for users without a subscription",
            "service",
        )
    plan_id, period = found.plan_id, found.period
    plan = catalog.plan_at(plan_id, raw.timestamp)[1]
    if plan.currency.code != target.currency:
        raise _Reject(
            "currency_mismatch",
            f"the plan is priced in {plan.currency.code}, the user pays in {target.currency}",
            "user",
        )
    metric = target.metric
    value, unique_key = _quantity(raw, metric)
    properties = json.dumps(raw.properties, sort_keys=True, default=str) if raw.properties else None
    return _Valid(
        raw.index,
        raw.event_id,
        target.provider_id,
        target.user_id,
        target.service_id,
        target.service_code,
        metric.id,
        metric.code,
        metric.aggregation,
        plan_id,
        raw.timestamp,
        value,
        unique_key,
        properties,
        period,
    )


def _quantity(raw: _Raw, metric: Any) -> tuple[Decimal, str | None]:
    """What the event adds to its metric, and the distinct value for unique_count."""
    source = raw.properties.get(metric.field) if (raw.properties and metric.field) else None
    if metric.aggregation == "count":
        # As in a quote (API.md), an event's value defaults to 1 and a count metric adds
        # up its events' values: one event may report several calls.
        if raw.value is None:
            return Decimal(1), None
        try:
            return parse_amount(raw.value, param="value"), None
        except BillfoldError as error:
            raise _Reject("invalid_value", error.message, "value") from None
    if metric.aggregation == "unique_count":
        key = source if source is not None else raw.value
        if isinstance(key, bool) or not isinstance(key, str | int | Decimal) or str(key) == "":
            raise _Reject(
                "missing_value",
                f"a unique_count metric needs properties.{metric.field}",
                "properties",
            )
        text = str(key)
        if len(text) > MAX_ID_LENGTH:
            raise _Reject("invalid_value", "the counted value is too long", "properties")
        return Decimal(1), text
    given = source if source is not None else raw.value
    if given is None:
        where = f"properties.{metric.field}" if metric.field else "value"
        raise _Reject(
            "missing_value", f"a {metric.aggregation} metric needs {where} or value", "value"
        )
    try:
        return parse_amount(given, param="value"), None
    except BillfoldError as error:
        raise _Reject("invalid_value", error.message, "value") from None


# --- the batch ------------------------------------------------------------------------


def ingest(
    ctx: Context, principal: Principal, items: Sequence[object], *, cloudevents: bool = False
) -> IngestResult:
    """Validates, stores, rates and charges a batch; each event stands on its own.

    Parsing, catalog lookups and validation read only, before the write transaction, so
    that several server processes can do that work at once while writes take turns.
    """
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise LimitExceeded(
            f"at most {MAX_EVENTS_PER_REQUEST} events per request",
            code="too_many_events",
            param="events",
        )
    now = ctx.clock.now()
    with ctx.work(read_only=True) as work:
        prepared = _prepare(work, principal, items, cloudevents, now)
    if not prepared.valid:
        return IngestResult(0, prepared.duplicates, prepared.rejected)
    return _committer(ctx).submit(prepared)


def ingest_in(
    work: Work,
    principal: Principal,
    items: Sequence[object],
    *,
    cloudevents: bool = False,
    capture_hold: str | None = None,
) -> IngestResult:
    """`ingest` inside the caller's unit of work (which commits).

    With `capture_hold`, the batch is the usage of that authorization: its charge
    releases the hold (see `billfold.authorizations.capture`).
    """
    prepared = _prepare(work, principal, items, cloudevents, work.clock.now())
    return _apply(work, prepared, capture_hold)


@dataclass(slots=True)
class _Prepared:
    now: datetime
    valid: list[_Valid]
    rejected: list[Rejection]
    duplicates: int
    catalog: _Catalog | None


def _prepare(
    work: Work,
    principal: Principal,
    items: Sequence[object],
    cloudevents: bool,
    now: datetime,
) -> _Prepared:
    """Parses and checks every event against the catalog; writes nothing."""
    parse = _parse_cloudevent if cloudevents else _parse_native
    rejected: list[Rejection] = []
    raws: list[_Raw] = []
    for index, item in enumerate(items):
        try:
            raws.append(parse(index, item, now))
        except _Reject as error:
            rejected.append(Rejection(index, error.code, error.message, error.param))
    catalog = _load_catalog(work, raws, now) if raws else None
    valid: list[_Valid] = []
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    for raw in raws:
        assert catalog is not None
        try:
            event = _validate(raw, catalog, principal, now)
        except _Reject as error:
            rejected.append(Rejection(raw.index, error.code, error.message, error.param))
            continue
        key = (event.provider_id, event.event_id)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        valid.append(event)
    rejected.sort(key=lambda r: r.index)
    return _Prepared(now, valid, rejected, duplicates, catalog)


def _apply(work: Work, prepared: _Prepared, capture_hold: str | None) -> IngestResult:
    """Stores the prepared events that are new, rates them and charges for them."""
    if not prepared.valid:
        return IngestResult(0, prepared.duplicates, prepared.rejected)
    catalog, now = prepared.catalog, prepared.now
    assert catalog is not None
    stored = _store(work, prepared.valid, catalog, now)
    duplicates = prepared.duplicates + len(prepared.valid) - len(stored)
    charges = _rate_and_charge(work, stored, catalog, now, capture_hold) if stored else []
    return IngestResult(len(stored), duplicates, prepared.rejected, [t for _, t in charges])


def _store(
    work: Work, events: list[_Valid], catalog: _Catalog, now: datetime
) -> list[tuple[_Valid, datetime, datetime, int, Plan]]:
    """Inserts the events not stored yet; returns them with their period and plan version."""
    enriched = []
    for event in events:
        version, plan = catalog.plan_at(event.plan_id, event.timestamp)
        start, end = event.period or catalog.period_of(plan, event.timestamp)
        enriched.append((event, start, end, version, plan))
    # Inserted in one global order (by provider and id), so that concurrent batches that
    # share event ids wait for each other on the unique index instead of deadlocking.
    enriched.sort(key=lambda item: (item[0].provider_id, item[0].event_id))
    fresh: set[tuple[str, str]] = set()
    conn = work.conn
    stamp = db_datetime(conn, now)
    starts: dict[datetime, Any] = {}
    moments: dict[datetime, Any] = {}
    for offset in range(0, len(enriched), INSERT_CHUNK):
        chunk = enriched[offset : offset + INSERT_CHUNK]
        rows = [
            (
                e.provider_id,
                e.event_id,
                e.user_id,
                e.service_id,
                e.metric_id,
                moments.get(e.timestamp)
                or moments.setdefault(e.timestamp, db_datetime(conn, e.timestamp)),
                _plain(e.value),
                e.properties,
                starts.get(start) or starts.setdefault(start, db_datetime(conn, start)),
                stamp,
            )
            for e, start, _end, _v, _p in chunk
        ]
        fresh.update(
            (provider_id, event_id)
            for provider_id, event_id in insert_new_returning(
                conn,
                usage_events,
                EVENT_COLUMNS,
                rows,
                conflict=("provider_id", "event_id"),
                returning=("provider_id", "event_id"),
            )
        )
    return [item for item in enriched if (item[0].provider_id, item[0].event_id) in fresh]


def _plain(value: Decimal) -> str:
    """Exact decimal text; str() already is, unless it would use an exponent."""
    text = str(value)
    return format_decimal(value) if "E" in text else text


def _state_of(row: Any) -> MetricState:
    return MetricState(
        Decimal(row.quantity),
        int(row.events),
        row.latest_at,
        tuple(ChargeState.from_json(c) for c in json.loads(row.state)),
    )


def _rate_and_charge(
    work: Work,
    stored: list[tuple[_Valid, datetime, datetime, int, Plan]],
    catalog: _Catalog,
    now: datetime,
    capture_hold: str | None = None,
) -> list[tuple[str, str]]:
    conn = work.conn
    groups: dict[tuple[str, str, datetime], list[tuple[_Valid, datetime, int, Plan]]] = defaultdict(
        list
    )
    for event, start, end, version, plan in stored:
        groups[(event.user_id, event.metric_id, start)].append((event, end, version, plan))
    # Rows are created (if missing) and then locked in key order, so that concurrent
    # batches for the same user, metric and period wait for each other instead of
    # failing on the unique key or deadlocking. Metering takes these locks before the
    # ledger's (journal head, then accounts), always.
    keys = sorted(groups)
    placeholders = [
        (
            user_id,
            metric_id,
            db_datetime(conn, start),
            db_datetime(conn, groups[key][0][1]),
            groups[key][0][0].plan_id,
            groups[key][0][2],
            "0",
            0,
            None,
            "[]",
            "0",
            0,
            db_datetime(conn, now),
        )
        for key in keys
        for user_id, metric_id, start in [key]
    ]
    for offset in range(0, len(placeholders), 500):
        insert_new_returning(
            conn,
            usage_periods,
            PERIOD_COLUMNS,
            placeholders[offset : offset + 500],
            conflict=("user_id", "metric_id", "period_start"),
            returning=("id",),
        )
    existing: dict[tuple[str, str, datetime], Any] = {}
    for offset in range(0, len(keys), 500):
        chunk = keys[offset : offset + 500]
        for row in conn.execute(
            select(usage_periods)
            .where(
                tuple_(
                    usage_periods.c.user_id, usage_periods.c.metric_id, usage_periods.c.period_start
                ).in_(chunk)
            )
            .order_by(
                usage_periods.c.user_id, usage_periods.c.metric_id, usage_periods.c.period_start
            )
            .with_for_update()
        ):
            existing[(row.user_id, row.metric_id, row.period_start)] = row
    new_counts = _new_uniques(work, groups)
    journal = UsageJournal()
    updates: list[dict[str, Any]] = []
    deltas: dict[tuple[str, str, str, datetime], tuple[int, Plan, Decimal]] = {}
    for key, items in groups.items():
        current = existing[key]
        first = items[0][0]
        # Events of one period under a newer plan version are rated with that version.
        items.sort(key=lambda item: (item[2], item[0].timestamp))
        state = _state_of(current)
        if current.plan_version != items[-1][2] or current.plan_id != first.plan_id:
            state = MetricState(state.quantity, state.events, state.latest_at, ())
        charged = int(current.charged_units)
        version, plan = items[-1][2], items[-1][3]
        scale = plan.currency.ledger_scale
        # Rated one quarter-hour at a time (rating is incremental), so that analytics know
        # what each quarter-hour's usage cost; the parts add up to the charge exactly.
        runs = _bucket_runs(items, first.aggregation)
        before = charged
        for bucket, run in runs:
            state = rate(
                plan,
                first.metric_code,
                first.aggregation,
                state,
                [Event(first.metric_code, e.value, e.timestamp) for e, *_ in run],
                new_unique=new_counts.get(key, 0),
            )
            after = units_due(state.amount, scale)
            journal.add(
                bucket,
                first,
                catalog.users[first.user_id].currency,
                sum((e.value for e, *_ in run), Decimal(0)),
                len(run),
                after - before,
            )
            before = after
        due = before
        values = {
            "plan_id": first.plan_id,
            "plan_version": version,
            "quantity": format_decimal(state.quantity),
            "events": state.events,
            "latest_at": state.latest_at,
            "state": json.dumps([c.to_json() for c in state.charges]),
            "amount": format_decimal(state.amount),
            "charged_units": due,
            "updated_at": now,
        }
        updates.append({"b_id": current.id, **{f"b_{k}": v for k, v in values.items()}})
        quantity = sum((e.value for e, *_ in items), Decimal(0))
        charge_key = (first.user_id, first.service_code, first.metric_code, key[2])
        previous = deltas.get(charge_key)
        total = due - charged + (previous[0] if previous else 0)
        deltas[charge_key] = (total, plan, quantity + (previous[2] if previous else 0))
    if updates:
        conn.execute(
            update(usage_periods)
            .where(usage_periods.c.id == bindparam("b_id"))
            # Bound names differ from the column names, which SQLAlchemy keeps for itself.
            .values(**{name[2:]: bindparam(name) for name in updates[0] if name != "b_id"}),
            updates,
        )
    journal.write(work)
    return _charge(work, deltas, catalog, now, capture_hold)


def _bucket_runs(
    items: list[tuple[_Valid, datetime, int, Plan]], aggregation: str
) -> list[tuple[datetime, list[tuple[_Valid, datetime, int, Plan]]]]:
    """The events (sorted for rating) cut into runs that fall in one quarter-hour each.

    A unique_count metric's new values are counted for the whole batch, so its batch is
    rated once and attributed to the quarter-hour of its last event.
    """
    if aggregation == "unique_count":
        return [(bucket_of(items[-1][0].timestamp), items)]
    runs: list[tuple[datetime, list[tuple[_Valid, datetime, int, Plan]]]] = []
    for item in items:
        bucket = bucket_of(item[0].timestamp)
        if runs and runs[-1][0] == bucket:
            runs[-1][1].append(item)
        else:
            runs.append((bucket, [item]))
    return runs


def _new_uniques(
    work: Work,
    groups: Mapping[tuple[str, str, datetime], list[tuple[_Valid, datetime, int, Plan]]],
) -> dict[tuple[str, str, datetime], int]:
    """Stores the distinct values of unique_count metrics; how many are new per group."""
    counts: dict[tuple[str, str, datetime], int] = {}
    for key, items in sorted(groups.items()):
        values = sorted({e.unique_key for e, *_ in items if e.unique_key is not None})
        if not values:
            continue
        start = db_datetime(work.conn, key[2])
        added = insert_new_returning(
            work.conn,
            usage_uniques,
            ("user_id", "metric_id", "period_start", "value"),
            [(key[0], key[1], start, v) for v in values],
            conflict=("user_id", "metric_id", "period_start", "value"),
            returning=("value",),
        )
        counts[key] = len(added)
    return counts


def _charge(
    work: Work,
    deltas: Mapping[tuple[str, str, str, datetime], tuple[int, Plan, Decimal]],
    catalog: _Catalog,
    now: datetime,
    capture_hold: str | None = None,
) -> list[tuple[str, str]]:
    specs: list[TransferSpec] = []
    for (user_id, service_code, metric_code, period_start), (
        units,
        plan,
        quantity,
    ) in deltas.items():
        if units == 0:
            continue
        user = catalog.users[user_id]
        cur = currency(user.currency)
        provider_id = catalog.services[service_code].provider_id
        accounts = ledger.charge_accounts(
            work,
            user_id,
            cur.code,
            prepaid=user.billing_mode == "prepaid",
            provider_id=provider_id,
            now=now,
            overflow=True,
        )
        specs.append(
            charge_transfer(
                accounts,
                transfer_id=new_id("tr"),
                kind=TransferKind.CHARGE if units > 0 else TransferKind.ADJUSTMENT,
                currency=cur.code,
                amount=units,
                commission_rate=commission_in_force(
                    plan.commission_rate, catalog.providers[provider_id]
                ),
                user_id=user_id,
                provider_id=provider_id,
                service=service_code,
                metric=metric_code,
                quantity=format_decimal(quantity),
                description=f"Usage of {service_code} {metric_code} "
                f"({period_start:%Y-%m-%d} period)",
                # A captured authorization's usage releases its hold in the same transfer,
                # inside the ledger's lock order (journal head, accounts, holds).
                hold_id=capture_hold,
            )
        )
    results = ledger.post_many(work, specs, now=now)
    failed = [r for r in results if isinstance(r, BillfoldError)]
    # Every charge here is payable by construction (debts overflow to the receivable);
    # a failure is a bug, and the whole batch rolls back rather than lose a charge.
    assert not failed, failed
    if capture_hold is not None and not specs:
        # The usage cost nothing more (free units): the hold is captured for nothing.
        ledger.release_hold(work, capture_hold, now=now, status=HoldStatus.CAPTURED)
    return [(str(r.user_id), r.id) for r in results if not isinstance(r, BillfoldError)]


def set_default_plan(
    work: Work, principal: Principal, service_code: str, plan_code: str | None
) -> None:
    """Which plan prices the service's usage by users without a subscription."""
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    service = load_service(work, principal, service_code, write=True)
    plan_id = None
    if plan_code is not None:
        row = work.conn.execute(
            select(plans.c.id, plans.c.service_id, plans.c.status).where(plans.c.code == plan_code)
        ).one_or_none()
        if row is None or row.service_id != service.id:
            raise InvalidRequest(f"service {service_code} has no plan {plan_code}", param="plan")
        plan_id = row.id
    work.conn.execute(
        update(services).where(services.c.id == service.id).values(default_plan_id=plan_id)
    )


# --- group commit ---------------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    prepared: _Prepared
    done: threading.Event = field(default_factory=threading.Event)
    result: IngestResult | None = None
    error: BaseException | None = None


class _GroupCommitter:
    """Applies the batches of concurrent requests together, in one transaction.

    The first request to arrive becomes the leader: it applies every batch that is
    waiting (its own included) in one unit of work, then the batches that queued up
    meanwhile, until none is left. The others wait for their result. Work per user, metric
    and period (usage rows, rating, one ledger transfer) and the commit are shared by all
    the batches of a group. If a group fails, each batch is applied alone, so one bad
    batch fails only its own request.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._pending: list[_Job] = []
        self._leading = False

    def submit(self, prepared: _Prepared) -> IngestResult:
        job = _Job(prepared)
        with self._lock:
            self._pending.append(job)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _lead(self) -> None:
        while True:
            with self._lock:
                group: list[_Job] = []
                size = 0
                while self._pending and (not group or size < MAX_GROUP_EVENTS):
                    job = self._pending.pop(0)
                    group.append(job)
                    size += len(job.prepared.valid)
                if not group:
                    self._leading = False
                    return
            self._apply(group)

    def _apply(self, group: list[_Job]) -> None:
        try:
            results = self._apply_together(group)
        except BaseException:
            if len(group) == 1:
                group[0].error = sys.exc_info()[1]
                group[0].done.set()
                return
            for job in group:
                self._apply([job])
            return
        for job, result in zip(group, results, strict=True):
            job.result = result
            job.done.set()

    def _apply_together(self, group: list[_Job]) -> list[IngestResult]:
        ctx = self._ctx
        if len(group) == 1:
            with ctx.work() as work:
                result = _apply(work, group[0].prepared, None)
                work.commit()
            return [result]
        # The first batch to carry an event id owns it; the same id in a later batch of
        # the group is that batch's duplicate, as it would be one request later.
        owner: dict[tuple[str, str], int] = {}
        merged: list[_Valid] = []
        for index, job in enumerate(group):
            for event in job.prepared.valid:
                key = (event.provider_id, event.event_id)
                if key not in owner:
                    owner[key] = index
                    merged.append(event)
        catalog = _merge_catalogs([job.prepared.catalog for job in group])
        now = max(job.prepared.now for job in group)
        with ctx.work() as work:
            stored = _store(work, merged, catalog, now)
            pairs = _rate_and_charge(work, stored, catalog, now) if stored else []
            work.commit()
        accepted = [0] * len(group)
        for event, *_ in stored:
            accepted[owner[(event.provider_id, event.event_id)]] += 1
        results = []
        for index, job in enumerate(group):
            users = {event.user_id for event in job.prepared.valid}
            results.append(
                IngestResult(
                    accepted[index],
                    job.prepared.duplicates + len(job.prepared.valid) - accepted[index],
                    job.prepared.rejected,
                    [transfer for user, transfer in pairs if user in users],
                )
            )
        return results


MAX_GROUP_EVENTS: Final = 20_000
_COMMITTERS_LOCK = threading.Lock()


def _committer(ctx: Context) -> _GroupCommitter:
    """The context's group committer (one per process and database)."""
    with _COMMITTERS_LOCK:
        committer = ctx.ingest_committer
        if not isinstance(committer, _GroupCommitter):
            committer = ctx.ingest_committer = _GroupCommitter(ctx)
        return committer


def _merge_catalogs(catalogs: Sequence[_Catalog | None]) -> _Catalog:
    present = [c for c in catalogs if c is not None]
    first = present[0]
    merged = _Catalog({}, {}, {}, {}, {}, first.latest_allowed, first.oldest_allowed)
    for catalog in present:
        merged.users.update(catalog.users)
        merged.services.update(catalog.services)
        merged.metrics.update(catalog.metrics)
        merged.versions.update(catalog.versions)
        merged.providers.update(catalog.providers)
        merged.subscribed.update(catalog.subscribed)
    return merged
