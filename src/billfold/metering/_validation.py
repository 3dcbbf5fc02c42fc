"""Validation against the catalog, looked up once per batch: each event's user, service,
metric, plan and usage period (billfold.catalog.terms), or why it has none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select

from billfold.catalog import PlanVersions, load_versions, service_row, terms
from billfold.core.access import Principal, Role
from billfold.core.context import Work
from billfold.domain.errors import BillfoldError
from billfold.domain.money import parse_amount
from billfold.domain.periods import calendar_period
from billfold.domain.pricing import Plan
from billfold.metering._parsing import (
    MAX_AGE,
    MAX_FUTURE,
    MAX_ID_LENGTH,
    Rejection,
    _parse_cloudevent,
    _parse_native,
    _Raw,
    _Reject,
    _Valid,
)
from billfold.store.prepared import Prepared
from billfold.store.tables import (
    metrics,
    providers,
    services,
    users,
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

    def period_of(self, plan: Plan, moment: datetime) -> tuple[datetime, datetime]:
        """The calendar period of `moment`, memoised per day: a batch spans few days."""
        key = (plan.interval, plan.interval_count, moment.date())
        period = self.periods.get(key)
        if period is None:
            period = calendar_period(plan.interval, plan.interval_count, moment)
            self.periods[key] = period
        return period


_USER_COLUMNS = (
    users.c.id,
    users.c.external_id,
    users.c.currency,
    users.c.billing_mode,
    users.c.status,
)
# One user's, one service's, one provider's: what a single event (or a batch of one user's
# events of one service) asks, prepared (docs/DECISIONS.md, 118). Many: lists, in chunks.
_USER_BY_REF = Prepared(
    select(*_USER_COLUMNS).where(
        (users.c.id == bindparam("ref")) | (users.c.external_id == bindparam("ref"))
    )
)
_METRICS_OF = Prepared(select(metrics).where(metrics.c.service_id == bindparam("service_id")))
_RATE_OF = Prepared(
    select(providers.c.id, providers.c.commission_rate).where(providers.c.id == bindparam("id"))
)


def _user_rows(work: Work, refs: list[str]) -> Iterator[Any]:
    if len(refs) == 1:
        yield from _USER_BY_REF.rows(work.conn, {"ref": refs[0]})
        return
    for start in range(0, len(refs), 1000):
        chunk = refs[start : start + 1000]
        yield from work.conn.execute(
            select(*_USER_COLUMNS).where(users.c.id.in_(chunk) | users.c.external_id.in_(chunk))
        )


def _load_catalog(work: Work, raws: Sequence[_Raw], now: datetime) -> _Catalog:
    conn = work.conn
    refs = sorted({r.user for r in raws})
    user_rows: dict[str, Any] = {}
    rows = list(_user_rows(work, refs))
    for row in rows:
        if row.external_id:
            user_rows[row.external_id] = row
    for row in rows:  # A user's own id wins over another's external id that spells it.
        user_rows[row.id] = row
    codes = sorted({r.service for r in raws})
    if len(codes) == 1:
        one = service_row(work, codes[0])
        found = [] if one is None else [one]
    else:
        found = list(conn.execute(select(services).where(services.c.code.in_(codes))))
    service_rows = {row.code: row for row in found}
    metric_rows = {}
    if service_rows:
        ids = {row.id: row.code for row in service_rows.values()}
        listed = (
            _METRICS_OF.rows(conn, {"service_id": next(iter(ids))})
            if len(ids) == 1
            else conn.execute(select(metrics).where(metrics.c.service_id.in_(list(ids))))
        )
        for row in listed:
            metric_rows[(ids[row.service_id], row.code)] = row
    pairs = {
        (user.id, service.id) for user in user_rows.values() for service in service_rows.values()
    }
    subscribed = terms.plans_at(work, pairs) if pairs else {}
    plan_ids = sorted({phase.plan_id for phases in subscribed.values() for _, phase in phases})
    versions = load_versions(work, plan_ids)
    provider_ids = sorted({row.provider_id for row in service_rows.values()})
    owners = (
        _RATE_OF.rows(conn, {"id": provider_ids[0]})
        if len(provider_ids) == 1
        else conn.execute(
            select(providers.c.id, providers.c.commission_rate).where(
                providers.c.id.in_(provider_ids)
            )
        )
    )
    rates = {row.id: Decimal(row.commission_rate) for row in owners}
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
    terms: terms.TermsFinder
    memo: _Found | None = None
    """What the last event found, and the instants between which any event finds it."""


@dataclass(slots=True)
class _Found:
    since: datetime
    until: datetime
    plan_id: str
    period: tuple[datetime, datetime]
    version: int
    plan: Plan


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
        terms.TermsFinder(catalog.subscribed.get((user.id, service.id))),
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
    memo = target.memo
    if memo is None or not memo.since <= raw.timestamp < memo.until:
        memo = _terms(raw, target, catalog)
    plan_id, period, version, plan = memo.plan_id, memo.period, memo.version, memo.plan
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
        version,
        plan,
        raw.timestamp,
        value,
        unique_key,
        properties,
        period,
    )


def _terms(raw: _Raw, target: _Target, catalog: _Catalog) -> _Found:
    """The plan, version and usage period of the event's moment, checked; remembered on
    the target with the span of moments that have the same answer (the usage period and
    the version's time in force), so that the batch's other events in it skip the search.
    """
    found = target.terms.at(raw.timestamp)
    if found.plan_id is None or found.period is None:
        raise _Reject(
            "not_subscribed",
            f"user {raw.user} held no subscription to service {raw.service} at the event's time",
            "user",
        )
    view, since, until = catalog.versions[found.plan_id].span(raw.timestamp)
    plan = view.plan
    if plan.currency.code != target.currency:
        raise _Reject(
            "currency_mismatch",
            f"the plan is priced in {plan.currency.code}, the user pays in {target.currency}",
            "user",
        )
    start, end = found.period
    if target.terms.disjoint:
        # Phases that overlap are searched for every moment: nothing is remembered.
        memo = _Found(
            start if since is None else max(start, since),
            end if until is None else min(end, until),
            found.plan_id,
            found.period,
            view.version,
            plan,
        )
        target.memo = memo
        return memo
    return _Found(raw.timestamp, raw.timestamp, found.plan_id, found.period, view.version, plan)


ONE = Decimal(1)


def _quantity(raw: _Raw, metric: Any) -> tuple[Decimal, str | None]:
    """What the event adds to its metric, and the distinct value for unique_count."""
    source = raw.properties.get(metric.field) if (raw.properties and metric.field) else None
    if metric.aggregation == "count":
        # As in a quote (API.md), an event's value defaults to 1 and a count metric adds
        # up its events' values: one event may report several calls.
        if raw.value is None:
            return ONE, None
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
        return ONE, text
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


@dataclass(slots=True)
class _Prepared:
    now: datetime
    valid: list[_Valid]
    rejected: list[Rejection]
    duplicates: int
    catalog: _Catalog | None
    principal: Principal | None = None
    """Who sent the batch, for its audit entry."""


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
    return _Prepared(now, valid, rejected, duplicates, catalog, principal)


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
