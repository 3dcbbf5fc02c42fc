"""Ingestion's entry points: `ingest` (group-committed), `ingest_in` (inside the caller's
unit of work, for captures) and default plans; the steps are the package's `_` modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

import structlog
from sqlalchemy import delete, select, update

from billfold.catalog import load_service
from billfold.core import audit, metrics
from billfold.core.access import Principal, Role, require_role
from billfold.core.context import Context, Work
from billfold.domain.errors import InvalidRequest, LimitExceeded
from billfold.metering._group_commit import (
    Keyed,
    _committer,
)
from billfold.metering._parsing import (
    MAX_EVENTS_PER_REQUEST,
    IngestResult,
    Rejection,
)
from billfold.metering._rating import (
    _apply,
)
from billfold.metering._validation import (
    _prepare,
    _Prepared,
)
from billfold.store.tables import (
    event_rejections,
    plans,
    services,
)

log = structlog.get_logger("billfold.metering")

# --- the batch ------------------------------------------------------------------------


def _checked(
    ctx: Context, principal: Principal, items: Sequence[object], cloudevents: bool, now: datetime
) -> _Prepared:
    """Who may send events, how many at once, and each event checked: read only."""
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise LimitExceeded(
            f"at most {MAX_EVENTS_PER_REQUEST} events per request",
            code="too_many_events",
            param="events",
        )
    with ctx.work(read_only=True) as work:
        return _prepare(work, principal, items, cloudevents, now)


def ingest(
    ctx: Context,
    principal: Principal,
    items: Sequence[object],
    *,
    cloudevents: bool = False,
    keyed: Keyed | None = None,
) -> IngestResult:
    """Validates, stores, rates and charges a batch; each event stands on its own.

    Parsing, catalog lookups and validation read only, before the write transaction, so
    that several server processes can do that work at once while writes take turns.
    With `keyed`, the request's Idempotency-Key is claimed, and its answer recorded, in
    the transaction that stores the events (see `Keyed` for what the caller learns);
    a batch with nothing to store claims its key all the same, so that its answer too is
    replayed.
    """
    now = ctx.clock.now()
    prepared = _checked(ctx, principal, items, cloudevents, now)
    if not prepared.valid and keyed is None:
        result = IngestResult(0, prepared.duplicates, prepared.rejected)
    else:
        result = _committer(ctx).submit(prepared, keyed)
    metrics.observe_ingest(
        result.accepted, result.duplicates, len(result.rejected), len(result.charges)
    )
    if result.rejected:
        note_rejections(ctx, principal, items, result.rejected, now)
    return result


def for_stream(
    ctx: Context, principal: Principal, items: Sequence[object], *, cloudevents: bool = False
) -> tuple[IngestResult, list[tuple[str, dict[str, object]]]]:
    """`ingest`'s checks, without the write: the batch's result so far (its rejections and
    duplicates within it) and each valid event as (provider id, event) for the stream, in
    the native form a worker checks again: the user's billfold id, the moment fixed."""
    now = ctx.clock.now()
    prepared = _checked(ctx, principal, items, cloudevents, now)
    events = []
    for event in prepared.valid:
        value, properties = _as_sent(items[event.index], cloudevents)
        native: dict[str, object] = {
            "id": event.event_id,
            "user": event.user_id,
            "service": event.service_code,
            "metric": event.metric_code,
            "timestamp": event.timestamp.isoformat(),
        }
        if value is not None:
            native["value"] = value
        if properties:
            native["properties"] = properties
        events.append((event.provider_id, native))
    if prepared.rejected:
        note_rejections(ctx, principal, items, prepared.rejected, now)
    return IngestResult(0, prepared.duplicates, prepared.rejected), events


STREAM_KEY: Final = "stream-worker"
"""The key id a worker's usage is recorded under in the audit trail."""


def apply_streamed(ctx: Context, batch: Sequence[tuple[str, dict[str, object]]]) -> IngestResult:
    """Charges a batch taken from the stream, in one transaction, as `ingest` would have:
    each provider's events checked again against the catalog as it is now, then stored,
    rated and charged together (one pass, so that usage rows are locked before the ledger,
    as always). An event already stored is a duplicate: a redelivery after a crash."""
    now = ctx.clock.now()
    by_provider: dict[str, list[object]] = {}
    for provider_id, event in batch:
        by_provider.setdefault(provider_id, []).append(event)
    jobs = []
    with ctx.work(read_only=True) as work:
        for provider_id, events in sorted(by_provider.items()):
            principal = Principal(STREAM_KEY, Role.PROVIDER, provider_id=provider_id)
            jobs.append((principal, events, _prepare(work, principal, events, False, now)))
    results = _committer(ctx).apply_now([prepared for *_, prepared in jobs])
    for (principal, events, _prepared), result in zip(jobs, results, strict=True):
        if result.rejected:
            # Refused now though accepted at the edge (the catalog changed in between):
            # kept for the provider's debugger and logged, never retried forever.
            log.warning("streamed_events_refused", count=len(result.rejected))
            note_rejections(ctx, principal, events, result.rejected, now)
    total = IngestResult(
        sum(r.accepted for r in results),
        sum(r.duplicates for r in results),
        [rejection for r in results for rejection in r.rejected],
        [charge for r in results for charge in r.charges],
    )
    metrics.observe_ingest(
        total.accepted, total.duplicates, len(total.rejected), len(total.charges)
    )
    return total


def _as_sent(item: object, cloudevents: bool) -> tuple[object, object]:
    """The value and properties of an event as its sender gave them."""
    assert isinstance(item, dict)
    if not cloudevents:
        return item.get("value"), item.get("properties")
    data = item.get("data") or {}
    properties = {k: v for k, v in data.items() if k not in ("service", "value")}
    return data.get("value"), properties or None


REJECTIONS_KEPT: Final = timedelta(days=7)
MAX_NOTED: Final = 100
"""At most this many of one request's rejections are kept: enough to see what is wrong."""
KEEP_PER_SENDER = 1000
"""And at most this many per provider: a client that floods billfold with bad events
cannot fill the database with notes of them."""


def note_rejections(
    ctx: Context,
    principal: Principal,
    items: Sequence[object],
    rejected: Sequence[Rejection],
    now: datetime,
) -> None:
    """Keeps a request's refused events, with their reasons, for the provider's debugger:
    in a unit of work of its own, after the accepted events are stored. Losing a note
    loses no usage, so a failure here is logged, never answered."""

    def event_id(index: int) -> str | None:
        item = items[index] if 0 <= index < len(items) else None
        found = item.get("id") if isinstance(item, dict) else None
        return str(found)[:255] if found is not None else None

    rows = [
        {
            "provider_id": principal.provider_id,
            "key_id": principal.key_id[:64],
            "at": now,
            "position": r.index,
            "event_id": event_id(r.index),
            "code": r.code[:64],
            "message": r.message[:500],
            "param": None if r.param is None else r.param[:200],
        }
        for r in rejected[:MAX_NOTED]
    ]
    table = event_rejections
    mine = (
        table.c.provider_id.is_(None)
        if principal.provider_id is None
        else table.c.provider_id == principal.provider_id
    )
    try:
        with ctx.work() as work:
            work.conn.execute(delete(table).where(table.c.at < now - REJECTIONS_KEPT))
            work.conn.execute(table.insert(), rows)
            oldest_kept = work.conn.execute(
                select(table.c.id)
                .where(mine)
                .order_by(table.c.id.desc())
                .offset(KEEP_PER_SENDER - 1)
                .limit(1)
            ).scalar()
            if oldest_kept is not None:
                work.conn.execute(delete(table).where(mine, table.c.id < oldest_kept))
            work.commit()
    except Exception:  # A note must never fail the request it is about, already answered.
        log.warning("rejections_not_noted", count=len(rows), exc_info=True)


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
    audit.record(
        work, principal, "service.default_plan_set", "service", service.id,
        at=work.clock.now(), details={"plan": plan_code},
    )  # fmt: skip
