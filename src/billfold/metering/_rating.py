"""Storing, rating and charging a batch: usage rows per user, metric and period, rated
incrementally, and one ledger transfer per user, service, metric and period.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import bindparam, select, tuple_

from billfold import ledger, prepaid
from billfold.core import audit
from billfold.core.context import Work
from billfold.domain.analytics import BUCKET, bucket_of
from billfold.domain.errors import BillfoldError
from billfold.domain.ledger import (
    HoldStatus,
    TransferKind,
    TransferSpec,
    charge_transfer,
    commission_in_force,
)
from billfold.domain.money import MAX_UNITS, currency, format_decimal
from billfold.domain.pricing import Event, Plan
from billfold.domain.rating import ChargeState, MetricState, rate, units_due
from billfold.ids import new_id
from billfold.metering._parsing import (
    EVENT_COLUMNS,
    INSERT_CHUNK,
    PERIOD_COLUMNS,
    IngestResult,
    Rejection,
    _Valid,
)
from billfold.metering._validation import (
    _Catalog,
    _Prepared,
)
from billfold.metering.journal import UsageJournal
from billfold.store.bulk import db_datetime, insert_new_returning, update_rows
from billfold.store.prepared import Prepared
from billfold.store.tables import (
    usage_events,
    usage_periods,
    usage_uniques,
)


def _apply(work: Work, prepared: _Prepared, capture_hold: str | None) -> IngestResult:
    """Stores the prepared events that are new, rates them and charges for them."""
    if not prepared.valid:
        return IngestResult(0, prepared.duplicates, prepared.rejected)
    catalog, now = prepared.catalog, prepared.now
    assert catalog is not None
    applied = apply_isolating(work, prepared.valid, catalog, now, capture_hold)
    refused = [too_large(event) for event in applied.refused]
    duplicates = (
        prepared.duplicates + len(prepared.valid) - len(applied.stored) - len(applied.refused)
    )
    result = IngestResult(
        len(applied.stored),
        duplicates,
        sorted(prepared.rejected + refused, key=lambda r: r.index),
        [t for *_, t in applied.charges],
    )
    audit_batch(work, prepared, result, [event for event, *_ in applied.stored])
    return result


def audit_batch(
    work: Work, prepared: _Prepared, result: IngestResult, stored: Sequence[_Valid]
) -> None:
    """One audit entry per request that recorded usage: who sent it, for which services,
    and what came of it (each event is in `usage_events`; the entry says who put it there).
    A request that recorded nothing changed nothing, and is not entered."""
    if not stored or prepared.principal is None:
        return
    services = sorted({event.service_code for event in stored})
    audit.record(
        work,
        prepared.principal,
        "usage.recorded",
        "service",
        services[0] if len(services) == 1 else "*",
        at=prepared.now,
        details={
            "services": services,
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": len(result.rejected),
            "users": len({event.user_id for event in stored}),
            "first_event": stored[0].event_id,
            "transfers": len(result.charges),
        },
    )


class TooLarge(Exception):
    """Charging these events would take an amount or a balance past the ledger's cap."""


@dataclass(slots=True)
class Applied:
    stored: Stored
    charges: list[tuple[str, str, str]]
    refused: list[_Valid]


def apply_isolating(
    work: Work,
    events: list[_Valid],
    catalog: _Catalog,
    now: datetime,
    capture_hold: str | None = None,
) -> Applied:
    """Stores, rates and charges the events; if that would take a balance (or a usage
    row) past the ledger's 2^62-unit cap, finds the events that do by halving the batch,
    each half in a savepoint, and refuses only those. The common case costs one savepoint."""
    try:
        with work.conn.begin_nested():
            stored = _store(work, events, catalog, now)
            charges = _rate_and_charge(work, stored, catalog, now, capture_hold) if stored else []
        return Applied(stored, charges, [])
    except TooLarge:
        if len(events) == 1:
            return Applied([], [], list(events))
    middle = len(events) // 2
    first = apply_isolating(work, events[:middle], catalog, now, capture_hold)
    second = apply_isolating(work, events[middle:], catalog, now, capture_hold)
    return Applied(
        first.stored + second.stored,
        first.charges + second.charges,
        first.refused + second.refused,
    )


def too_large(event: _Valid) -> Rejection:
    return Rejection(
        event.index,
        "amount_too_large",
        "charging this event would take a balance past the ledger's limit (2^62 units)",
        "value",
    )


def _store(
    work: Work, events: list[_Valid], catalog: _Catalog, now: datetime
) -> list[tuple[_Valid, datetime, datetime, int, Plan]]:
    """Inserts the events not stored yet; returns them with their period and plan version."""
    enriched = []
    for event in events:
        plan = event.plan
        start, end = event.period or catalog.period_of(plan, event.timestamp)
        enriched.append((event, start, end, event.plan_version, plan))
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


def stored_state(row: Any, plan_id: str, version: int) -> tuple[MetricState, int]:
    """A usage row as the state its period's next events are rated from, and the ledger
    units already charged for it: all of it under the same plan version; under another
    plan or version only the running totals, which the new version prices afresh."""
    state = MetricState(
        Decimal(row.quantity),
        int(row.events),
        row.latest_at,
        tuple(ChargeState.from_json(c) for c in json.loads(row.state)),
    )
    if row.plan_version != version or row.plan_id != plan_id:
        state = MetricState(state.quantity, state.events, state.latest_at, ())
    return state, int(row.charged_units)


def period_state(
    work: Work, user_id: str, metric_id: str, start: datetime, plan_id: str, version: int
) -> tuple[MetricState, int]:
    """`stored_state` of the user's usage row of a metric and period (empty if none yet):
    what an authorization prices more usage on top of, as metering will."""
    values = {"user_id": user_id, "metric_id": metric_id, "start": start}
    row = _PERIOD_ROW.first(work.conn, values)
    return (MetricState(), 0) if row is None else stored_state(row, plan_id, version)


_PERIOD_ROW = Prepared(
    select(usage_periods).where(
        usage_periods.c.user_id == bindparam("user_id"),
        usage_periods.c.metric_id == bindparam("metric_id"),
        usage_periods.c.period_start == bindparam("start"),
    )
)


Stored = list[tuple[_Valid, datetime, datetime, int, Plan]]
Group = list[tuple[_Valid, datetime, int, Plan]]
GroupKey = tuple[str, str, datetime]
Deltas = dict[tuple[str, str, str, datetime], tuple[int, Plan, Decimal]]


def _rate_and_charge(
    work: Work,
    stored: Stored,
    catalog: _Catalog,
    now: datetime,
    capture_hold: str | None = None,
) -> list[tuple[str, str, str]]:
    """Rates the stored events per user, metric and period, and charges what they added."""
    groups: dict[GroupKey, Group] = defaultdict(list)
    for event, start, end, version, plan in stored:
        groups[(event.user_id, event.metric_id, start)].append((event, end, version, plan))
    existing = _lock_usage_rows(work, groups, now)
    new_counts = _new_uniques(work, groups)
    # Resource packages cover usage before the plan prices it; their cycles are locked
    # after the usage rows and before the ledger, always in that order.
    draws = prepaid.load_draws(work, _moments(groups), now)
    journal = UsageJournal()
    updates: list[tuple[Any, ...]] = []
    deltas: Deltas = {}
    for key, items in groups.items():
        _rate_group(
            key,
            items,
            existing[key],
            new_counts.get(key, 0),
            catalog,
            now,
            journal,
            updates,
            deltas,
            draws,
        )
    draws.write(work, now)
    _write_periods(work, updates, now)
    journal.write(work)
    return _charge(work, deltas, catalog, now, capture_hold)


_UPDATED: Final = (
    "plan_id",
    "plan_version",
    "quantity",
    "events",
    "state",
    "amount",
    "charged_units",
    "covered",
    "latest_at",
    "updated_at",
)


def _write_periods(work: Work, updates: list[tuple[Any, ...]], now: datetime) -> None:
    """The rated usage rows written: straight to the driver, and in one statement on
    PostgreSQL (bulk.update_rows), where SQLAlchemy's executemany spent more on each
    row's parameters than the database on its update."""
    if not updates:
        return
    conn = work.conn
    written = db_datetime(conn, now)
    rows = [
        (*values, None if latest is None else db_datetime(conn, latest), written, row_id)
        for *values, latest, row_id in updates
    ]
    update_rows(conn, usage_periods, _UPDATED, "id", rows)


# Built once, the keys one expanding parameter: building `tuple_(...).in_(keys)` for
# every group cost more than running it (docs/DECISIONS.md, 118).
_LOCK_PERIODS = (
    select(usage_periods)
    .where(
        tuple_(
            usage_periods.c.user_id, usage_periods.c.metric_id, usage_periods.c.period_start
        ).in_(bindparam("keys", expanding=True))
    )
    .order_by(usage_periods.c.user_id, usage_periods.c.metric_id, usage_periods.c.period_start)
    .with_for_update()
)


def _lock_usage_rows(
    work: Work, groups: dict[GroupKey, Group], now: datetime
) -> dict[GroupKey, Any]:
    """The usage row of every group, created if missing, locked.

    Rows are created and then locked in key order, so that concurrent batches for the
    same user, metric and period wait for each other instead of failing on the unique key
    or deadlocking. Metering takes these locks before the ledger's (journal head, then
    accounts), always.
    """
    conn = work.conn
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
    existing: dict[GroupKey, Any] = {}
    for offset in range(0, len(keys), 500):
        chunk = keys[offset : offset + 500]
        for row in conn.execute(_LOCK_PERIODS, {"keys": chunk}):
            existing[(row.user_id, row.metric_id, row.period_start)] = row
    return existing


def _rate_group(
    key: GroupKey,
    items: Group,
    current: Any,
    new_unique: int,
    catalog: _Catalog,
    now: datetime,
    journal: UsageJournal,
    updates: list[tuple[Any, ...]],
    deltas: Deltas,
    draws: prepaid.Draws,
) -> None:
    """Rates one user's, metric's and period's new events on top of its usage row; adds
    the row's update and what the group now owes (its delta) to the batch's. What the
    user's packages cover of each event is taken off it before the plan prices the rest."""
    first = items[0][0]
    # Events of one period under a newer plan version are rated with that version.
    items.sort(key=lambda item: (item[2], item[0].timestamp))
    version, plan = items[-1][2], items[-1][3]
    state, charged = stored_state(current, first.plan_id, version)
    scale = plan.currency.ledger_scale
    # Rated one quarter-hour at a time (rating is incremental), so that analytics know
    # what each quarter-hour's usage cost; the parts add up to the charge exactly.
    before = charged
    covered = Decimal(0)
    drawing = bool(draws) and first.aggregation in ("count", "sum")
    for bucket, run in _bucket_runs(items, first.aggregation):
        priced = []
        for e, *_ in run:
            value = e.value
            if drawing:
                part = draws.take(first.user_id, first.metric_id, e.timestamp, value)
                covered += part
                value -= part
            priced.append(Event(first.metric_code, value, e.timestamp))
        state = rate(
            plan,
            first.metric_code,
            first.aggregation,
            state,
            priced,
            new_unique=new_unique,
        )
        after = units_due(state.amount, scale)
        currency_code = catalog.users[first.user_id].currency
        value = sum((e.value for e, *_ in run), Decimal(0))
        journal.add(bucket, first, currency_code, value, len(run), after - before)
        before = after
    if abs(before) >= MAX_UNITS:
        raise TooLarge
    updates.append(
        (  # _UPDATED's values up to `covered`, then latest_at and the row's id.
            first.plan_id,
            version,
            format_decimal(state.quantity),
            state.events,
            json.dumps([c.to_json() for c in state.charges]),
            format_decimal(state.amount),
            before,
            format_decimal(Decimal(current.covered) + covered),
            state.latest_at,
            current.id,
        )
    )
    quantity = sum((e.value for e, *_ in items), Decimal(0)) - covered
    charge_key = (first.user_id, first.service_code, first.metric_code, key[2])
    previous = deltas.get(charge_key)
    total = before - charged + (previous[0] if previous else 0)
    deltas[charge_key] = (total, plan, quantity + (previous[2] if previous else 0))


def _moments(groups: Mapping[GroupKey, Group]) -> dict[tuple[str, str], list[datetime]]:
    """{(user, metric): the moments of its events} of the counted and summed metrics."""
    moments: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for (user_id, metric_id, _start), items in groups.items():
        if items[0][0].aggregation in ("count", "sum"):
            moments[(user_id, metric_id)].extend(e.timestamp for e, *_ in items)
    return moments


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
    run: list[tuple[_Valid, datetime, int, Plan]] = []
    ends = None
    for item in items:
        moment = item[0].timestamp
        # Sorted by time within a version: a run goes on until a moment past its quarter.
        if ends is None or not moment < ends or moment < runs[-1][0]:
            bucket = bucket_of(moment)
            ends = bucket + BUCKET
            run = []
            runs.append((bucket, run))
        run.append(item)
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
) -> list[tuple[str, str, str]]:
    specs: list[TransferSpec] = []
    sources = prepaid.load_sources(work, sorted({key[0] for key in deltas}))
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
            sources=sources.accounts(user_id, cur.code, service_code, provider_id, now),
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
    if any(r.code == "amount_too_large" for r in failed):
        raise TooLarge
    # Every other charge here is payable by construction (debts overflow to the
    # receivable); a failure is a bug, and the batch rolls back rather than lose a charge.
    assert not failed, failed
    if capture_hold is not None and not specs:
        # The usage cost nothing more (free units): the hold is captured for nothing.
        ledger.release_hold(work, capture_hold, now=now, status=HoldStatus.CAPTURED)
    return [
        (str(r.user_id), str(r.service), r.id) for r in results if not isinstance(r, BillfoldError)
    ]
