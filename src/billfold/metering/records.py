"""Consumption records: each metric's usage by one user in one period, what it cost,
and how that amount came about (the events, the plan version, its tiers or windows,
and the split between provider and platform).

Who sees what follows the rest of billfold: a user its own records, a provider those of
its own services (its customers' usage, never anyone else's), an admin all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import and_, select

from billfold.catalog import plan_from_definition
from billfold.core.access import Principal, Role
from billfold.core.context import Work
from billfold.domain.errors import NotFound
from billfold.domain.pricing.quote import Quote, quote
from billfold.domain.pricing.usage import parse_usage
from billfold.store.tables import (
    event_rejections,
    metrics,
    plan_versions,
    plans,
    providers,
    services,
    usage_events,
    usage_periods,
)

EVENT_MODELS: Final = ("time_of_day", "percentage")
"""Charge models whose price depends on each event, not only on the period's quantity."""
MAX_EXPLAINED_EVENTS: Final = 20_000


@dataclass(frozen=True, slots=True)
class Record:
    id: int
    user_id: str
    provider_id: str
    service: str
    metric: str
    metric_name: str
    period_start: datetime
    period_end: datetime
    plan: str
    plan_version: int
    quantity: str
    events: int
    amount: str
    currency: str
    latest_at: datetime | None
    covered: str = "0"
    """What resource packages covered (not in `quantity`, which the plan priced)."""


@dataclass(frozen=True, slots=True)
class Explanation:
    record: Record
    quote: Quote
    """The period's usage priced again under the plan version that rated it."""
    priced_from: str
    """"events" or "quantity": what the explanation was priced from."""
    commission_rate: Decimal
    platform_part: Decimal
    provider_part: Decimal
    recent_events: list[dict[str, Any]]


def _query() -> Any:
    return (
        select(
            usage_periods,
            metrics.c.code.label("metric_code"),
            metrics.c.name.label("metric_name"),
            services.c.code.label("service_code"),
            services.c.provider_id,
            plans.c.code.label("plan_code"),
            plans.c.currency,
        )
        .join(metrics, metrics.c.id == usage_periods.c.metric_id)
        .join(services, services.c.id == metrics.c.service_id)
        .join(plans, plans.c.id == usage_periods.c.plan_id)
    )


def _own(principal: Principal, query: Any) -> Any:
    if principal.role == Role.USER:
        return query.where(usage_periods.c.user_id == principal.user_id)
    if principal.role == Role.PROVIDER:
        return query.where(services.c.provider_id == principal.provider_id)
    return query


def _record(row: Any) -> Record:
    return Record(
        id=row.id,
        user_id=row.user_id,
        provider_id=row.provider_id,
        service=row.service_code,
        metric=row.metric_code,
        metric_name=row.metric_name,
        period_start=row.period_start,
        period_end=row.period_end,
        plan=row.plan_code,
        plan_version=row.plan_version,
        quantity=row.quantity,
        events=row.events,
        amount=row.amount,
        currency=row.currency,
        latest_at=row.latest_at,
        covered=row.covered,
    )


def list_records(
    work: Work,
    principal: Principal,
    *,
    user_id: str | None = None,
    service: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 200,
) -> list[Record]:
    """The asker's consumption records, newest period first, filtered as asked."""
    query = _own(principal, _query())
    if user_id is not None:
        query = query.where(usage_periods.c.user_id == user_id)
    if service:
        query = query.where(services.c.code == service)
    if since is not None:
        query = query.where(usage_periods.c.period_end > since)
    if until is not None:
        query = query.where(usage_periods.c.period_start < until)
    rows = work.conn.execute(
        query.order_by(usage_periods.c.period_start.desc(), services.c.code, metrics.c.code).limit(
            max(1, min(limit, 1000))
        )
    )
    return [_record(r) for r in rows]


def explain(work: Work, principal: Principal, record_id: int) -> Explanation:
    """How a record's amount came about; another party's record is not found."""
    row = work.conn.execute(
        _own(principal, _query()).where(usage_periods.c.id == record_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no consumption record {record_id}", code="route_not_found")
    record = _record(row)
    definition = work.conn.execute(
        select(plan_versions.c.definition).where(
            plan_versions.c.plan_id == row.plan_id, plan_versions.c.version == row.plan_version
        )
    ).scalar_one()
    plan = plan_from_definition(definition)
    by_events = (
        any(c.metric == record.metric and c.model in EVENT_MODELS for c in plan.charges)
        and record.events <= MAX_EXPLAINED_EVENTS
    )
    in_period = and_(
        usage_events.c.user_id == record.user_id,
        usage_events.c.metric_id == row.metric_id,
        usage_events.c.occurred_at >= record.period_start,
        usage_events.c.occurred_at < record.period_end,
    )
    if by_events:
        events = [
            {"metric": record.metric, "timestamp": e.occurred_at.isoformat(), "value": e.value}
            for e in work.conn.execute(
                select(usage_events.c.occurred_at, usage_events.c.value)
                .where(in_period)
                .order_by(usage_events.c.occurred_at)
            )
        ]
        usage = parse_usage({"events": events}, max_events=MAX_EXPLAINED_EVENTS)
    else:
        usage = parse_usage({"quantities": {record.metric: record.quantity}})
    priced = quote(plan, usage, include_fixed_fee=False)
    rate_text = plan.commission_rate if plan.commission_rate is not None else None
    if rate_text is None:
        rate_text = work.conn.execute(
            select(providers.c.commission_rate).where(providers.c.id == record.provider_id)
        ).scalar_one()
    rate = Decimal(str(rate_text))
    amount = Decimal(record.amount)
    platform = amount * rate
    recent = [
        {
            "event_id": e.event_id,
            "occurred_at": e.occurred_at,
            "value": e.value,
            "properties": json.loads(e.properties) if e.properties else None,
        }
        for e in work.conn.execute(
            select(
                usage_events.c.event_id,
                usage_events.c.occurred_at,
                usage_events.c.value,
                usage_events.c.properties,
            )
            .where(in_period)
            .order_by(usage_events.c.occurred_at.desc())
            .limit(20)
        )
    ]
    return Explanation(
        record=record,
        quote=priced,
        priced_from="events" if by_events else "quantity",
        commission_rate=rate,
        platform_part=platform,
        provider_part=amount - platform,
        recent_events=recent,
    )


@dataclass(frozen=True, slots=True)
class RecentEvent:
    event_id: str
    occurred_at: datetime
    ingested_at: datetime
    user_id: str
    service: str
    metric: str
    value: str


def recent_events(work: Work, principal: Principal, *, limit: int = 100) -> list[RecentEvent]:
    """The latest events accepted for the asker's services (a provider's debugger)."""
    query = (
        select(
            usage_events, services.c.code.label("service_code"), metrics.c.code.label("metric_code")
        )
        .join(services, services.c.id == usage_events.c.service_id)
        .join(metrics, metrics.c.id == usage_events.c.metric_id)
    )
    if principal.role == Role.PROVIDER:
        query = query.where(usage_events.c.provider_id == principal.provider_id)
    elif principal.role == Role.USER:
        query = query.where(usage_events.c.user_id == principal.user_id)
    rows = work.conn.execute(
        query.order_by(usage_events.c.seq.desc()).limit(max(1, min(limit, 1000)))
    )
    return [
        RecentEvent(
            r.event_id,
            r.occurred_at,
            r.ingested_at,
            r.user_id,
            r.service_code,
            r.metric_code,
            r.value,
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class RecentRejection:
    at: datetime
    position: int
    event_id: str | None
    code: str
    message: str
    param: str | None


def recent_rejections(
    work: Work, principal: Principal, *, limit: int = 100
) -> list[RecentRejection]:
    """The events lately refused, the asker's own (a provider's), newest first."""
    query = select(event_rejections)
    if principal.role == Role.PROVIDER:
        query = query.where(event_rejections.c.provider_id == principal.provider_id)
    elif principal.role != Role.ADMIN:
        return []
    rows = work.conn.execute(
        query.order_by(event_rejections.c.id.desc()).limit(max(1, min(limit, 1000)))
    )
    return [RecentRejection(r.at, r.position, r.event_id, r.code, r.message, r.param) for r in rows]
