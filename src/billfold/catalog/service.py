"""The catalog: services that providers sell, their billable metrics, versioned plans, quotes.

A plan's code names it for good; its prices live in versions. A new version takes effect
from a given time (now or later, never earlier), so usage and billing periods before it
keep the prices they had: a catalog change never re-prices the past.

Who sees what: the platform operator sees everything; a provider sees and changes only its
own services and plans; users see the active catalog (what they can buy) and nothing that
is retired.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from billfold.core import audit
from billfold.core.access import Principal, Role, acting_provider, require_role
from billfold.core.context import Work
from billfold.core.directory import load_provider
from billfold.core.text import Page, check_limit
from billfold.domain.errors import Conflict, InvalidRequest, NotFound
from billfold.domain.pricing import (
    CODE_PATTERN,
    Plan,
    Quote,
    parse_plan,
    parse_usage,
    quote,
)
from billfold.domain.rating import check_charge_fits_metric
from billfold.ids import new_id
from billfold.store.prepared import Prepared
from billfold.store.tables import metrics, plan_versions, plans, services

AGGREGATIONS: Final = ("count", "sum", "max", "unique_count", "latest")
MAX_DESCRIPTION: Final = 2000


@dataclass(frozen=True, slots=True)
class ServiceView:
    id: str
    provider_id: str
    code: str
    name: str
    description: str | None
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MetricView:
    id: str
    service: str
    code: str
    name: str
    aggregation: str
    field: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class VersionView:
    version: int
    effective_from: datetime
    created_at: datetime
    plan: Plan


@dataclass(frozen=True, slots=True)
class PlanView:
    id: str
    code: str
    service: str
    provider_id: str
    status: str
    created_at: datetime
    retired_at: datetime | None
    current: VersionView
    """The version in force at the time asked for (now by default)."""
    versions: int


def _code(value: object, param: str) -> str:
    if not isinstance(value, str) or not CODE_PATTERN.match(value):
        raise InvalidRequest(
            f"{param} must be 1 to 64 letters, digits, '_', '.', ':' or '-'", param=param
        )
    return value


def _text(value: object, param: str, limit: int, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise InvalidRequest(f"{param} must be a text of 1 to {limit} characters", param=param)
    return value.strip()


# --- services and metrics -------------------------------------------------------------


def _service_view(row: Any) -> ServiceView:
    return ServiceView(
        row.id, row.provider_id, row.code, row.name, row.description, row.status, row.created_at
    )


def _can_see_service(principal: Principal, service: ServiceView) -> bool:
    if principal.role == Role.ADMIN:
        return True
    if principal.role == Role.PROVIDER:
        return service.provider_id == principal.provider_id
    return service.status == "active"


_SERVICE_BY_CODE = Prepared(select(services).where(services.c.code == bindparam("code")))


def service_row(work: Work, code: str) -> Any:
    """The stored row of the service with this code, or None (no access checked)."""
    return _SERVICE_BY_CODE.first(work.conn, {"code": code})


def load_service(
    work: Work, principal: Principal, code: str, *, write: bool = False
) -> ServiceView:
    """The service with this code, if the principal may see it (or change it, with `write`)."""
    row = service_row(work, code)
    service = _service_view(row) if row is not None else None
    if (
        service is None
        or not _can_see_service(principal, service)
        or (write and principal.role == Role.USER)
    ):
        raise NotFound(f"no service {code}", code="service_not_found", param="service")
    return service


def create_service(
    work: Work,
    principal: Principal,
    *,
    code: str,
    name: str,
    description: str | None = None,
    provider_id: str | None = None,
) -> ServiceView:
    owner = acting_provider(principal, provider_id)
    if owner is None:
        raise InvalidRequest(
            "provider_id is required when the operator creates a service", param="provider_id"
        )
    now = work.clock.now()
    view = ServiceView(
        new_id("svc"),
        owner,
        _code(code, "code"),
        str(_text(name, "name", 200)),
        _text(description, "description", MAX_DESCRIPTION, required=False),
        "active",
        now,
    )
    load_provider(work, owner)
    try:
        work.conn.execute(
            services.insert().values(
                id=view.id,
                provider_id=owner,
                code=view.code,
                name=view.name,
                description=view.description,
                status=view.status,
                created_at=now,
            )
        )
    except IntegrityError:
        raise Conflict(
            f"a service with code {view.code} exists", code="service_exists", param="code"
        ) from None
    audit.record(
        work,
        principal,
        "service.created",
        "service",
        view.id,
        at=now,
        details={"code": view.code, "provider_id": owner},
    )
    return view


def get_service(work: Work, principal: Principal, code: str) -> ServiceView:
    return load_service(work, principal, code)


def list_services(
    work: Work, principal: Principal, *, limit: int = 100, starting_after: str | None = None
) -> Page[ServiceView]:
    check_limit(limit)
    query = select(services).order_by(services.c.code).limit(limit + 1)
    if principal.role == Role.PROVIDER:
        query = query.where(services.c.provider_id == principal.provider_id)
    elif principal.role == Role.USER:
        query = query.where(services.c.status == "active")
    if starting_after:
        query = query.where(services.c.code > starting_after)
    rows = work.conn.execute(query).all()
    return Page([_service_view(r) for r in rows[:limit]], len(rows) > limit)


def _metric_view(row: Any, service: str) -> MetricView:
    return MetricView(
        row.id, service, row.code, row.name, row.aggregation, row.field, row.created_at
    )


def create_metric(
    work: Work,
    principal: Principal,
    service_code: str,
    *,
    code: str,
    name: str,
    aggregation: str,
    field: str | None = None,
) -> MetricView:
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    metric_code = _code(code, "code")
    metric_name = str(_text(name, "name", 200))
    if aggregation not in AGGREGATIONS:
        raise InvalidRequest(
            f"aggregation must be one of {', '.join(AGGREGATIONS)}", param="aggregation"
        )
    field_name = _text(field, "field", 100, required=False)
    if aggregation != "count" and not field_name:
        raise InvalidRequest(
            f"a {aggregation} metric needs field: the event property it aggregates", param="field"
        )
    now = work.clock.now()
    service = load_service(work, principal, service_code, write=True)
    metric_id = new_id("met")
    try:
        work.conn.execute(
            metrics.insert().values(
                id=metric_id,
                service_id=service.id,
                code=metric_code,
                name=metric_name,
                aggregation=aggregation,
                field=field_name,
                created_at=now,
            )
        )
    except IntegrityError:
        raise Conflict(
            f"service {service.code} already has a metric {metric_code}",
            code="metric_exists",
            param="code",
        ) from None
    audit.record(
        work,
        principal,
        "metric.created",
        "metric",
        metric_id,
        at=now,
        details={"service": service.code, "code": metric_code, "aggregation": aggregation},
    )
    return MetricView(
        metric_id, service.code, metric_code, metric_name, aggregation, field_name, now
    )


def service_metrics(work: Work, service: ServiceView) -> list[MetricView]:
    rows = work.conn.execute(
        select(metrics).where(metrics.c.service_id == service.id).order_by(metrics.c.code)
    ).all()
    return [_metric_view(r, service.code) for r in rows]


def list_metrics(work: Work, principal: Principal, service_code: str) -> list[MetricView]:
    return service_metrics(work, load_service(work, principal, service_code))


# --- plans ----------------------------------------------------------------------------


def _check_against_catalog(work: Work, plan: Plan, service: ServiceView) -> None:
    known = {m.code: m for m in service_metrics(work, service)}
    for index, charge in enumerate(plan.charges):
        metric = known.get(charge.metric)
        if metric is None:
            raise InvalidRequest(
                f"charges[{index}].metric: service {service.code} has no metric "
                f"{charge.metric!r} (it has: {', '.join(sorted(known)) or 'none yet'})",
                code="unknown_metric",
                param=f"charges[{index}].metric",
            )
        problem = check_charge_fits_metric(charge, metric.aggregation)
        if problem:
            raise InvalidRequest(
                f"charges[{index}].model: {problem}",
                code="invalid_plan",
                param=f"charges[{index}].model",
            )


@lru_cache(maxsize=1024)
def plan_from_definition(definition: str) -> Plan:
    """A stored version's plan; versions never change, so each text is parsed once."""
    return parse_plan(json.loads(definition))


def _version_row(
    plan_id: str, version: int, effective_from: datetime, plan: Plan, now: datetime
) -> dict[str, Any]:
    return {
        "plan_id": plan_id,
        "version": version,
        "effective_from": effective_from,
        "definition": json.dumps(plan.to_dict(), sort_keys=True),
        "created_at": now,
    }


def create_plan(work: Work, principal: Principal, definition: object) -> PlanView:
    """A new plan (its version 1); the plan's code must be new."""
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    plan = parse_plan(definition)
    now = work.clock.now()
    service = load_service(work, principal, plan.service, write=True)
    _check_against_catalog(work, plan, service)
    plan_id = new_id("pln")
    try:
        work.conn.execute(
            plans.insert().values(
                id=plan_id,
                code=plan.code,
                service_id=service.id,
                provider_id=service.provider_id,
                currency=plan.currency.code,
                status="active",
                created_at=now,
                retired_at=None,
            )
        )
    except IntegrityError:
        raise Conflict(
            f"a plan with code {plan.code} exists; to change its prices, add a version "
            f"(POST /v1/plans/{plan.code}/versions)",
            code="plan_exists",
            param="code",
        ) from None
    work.conn.execute(plan_versions.insert().values(_version_row(plan_id, 1, now, plan, now)))
    if plan.interval == "none":
        # The service's first pay-as-you-go plan prices usage without a subscription.
        work.conn.execute(
            update(services)
            .where(services.c.id == service.id, services.c.default_plan_id.is_(None))
            .values(default_plan_id=plan_id)
        )
    audit.record(
        work,
        principal,
        "plan.created",
        "plan",
        plan_id,
        at=now,
        details={"code": plan.code, "service": service.code},
    )
    return get_plan(work, principal, plan.code)


def load_plan_row(work: Work, principal: Principal, code: str, *, write: bool = False) -> Any:
    row = work.conn.execute(
        select(plans, services.c.code.label("service_code"))
        .join(services, services.c.id == plans.c.service_id)
        .where(plans.c.code == code)
    ).one_or_none()
    visible = row is not None and (
        principal.role == Role.ADMIN
        or (principal.role == Role.PROVIDER and row.provider_id == principal.provider_id)
        or (principal.role == Role.USER and row.status == "active" and not write)
    )
    if not visible:
        raise NotFound(f"no plan {code}", code="plan_not_found", param="plan")
    return row


@dataclass(frozen=True, slots=True)
class PlanVersions:
    """A plan's versions in order, and the one answer to which is in force when."""

    starts: list[datetime]
    versions: list[VersionView]

    def at(self, moment: datetime) -> VersionView:
        """The version in force at `moment`: the latest to take effect by then; before the
        first took effect, the first (docs/DECISIONS.md 15)."""
        return self.versions[max(bisect.bisect_right(self.starts, moment) - 1, 0)]

    def span(self, moment: datetime) -> tuple[VersionView, datetime | None, datetime | None]:
        """`at(moment)`, and the instants between which it is the answer too: from the
        version's start (None before the first took effect) until the next's (None)."""
        index = max(bisect.bisect_right(self.starts, moment) - 1, 0)
        since = self.starts[index] if index > 0 else None
        until = self.starts[index + 1] if index + 1 < len(self.starts) else None
        return self.versions[index], since, until


_VERSIONS = (
    select(plan_versions)
    .where(plan_versions.c.plan_id.in_(bindparam("plan_ids", expanding=True)))
    .order_by(plan_versions.c.plan_id, plan_versions.c.effective_from, plan_versions.c.version)
)
_VERSIONS_OF = Prepared(
    select(plan_versions)
    .where(plan_versions.c.plan_id == bindparam("plan_id"))
    .order_by(plan_versions.c.effective_from, plan_versions.c.version)
)


def load_versions(work: Work, plan_ids: Iterable[str]) -> dict[str, PlanVersions]:
    """The versions of each plan, for asking `.at(moment)` as often as needed."""
    found: dict[str, PlanVersions] = {}
    for row in _version_rows(work, sorted(set(plan_ids))):
        versions = found.setdefault(row.plan_id, PlanVersions([], []))
        versions.starts.append(row.effective_from)
        versions.versions.append(
            VersionView(
                row.version,
                row.effective_from,
                row.created_at,
                plan_from_definition(row.definition),
            )
        )
    return found


def _version_rows(work: Work, plan_ids: list[str]) -> Iterator[Any]:
    """The plans' version rows, in `_VERSIONS`' order: one plan's (an authorization's, a
    single event's) by a statement of its own, prepared; many by lists of 500."""
    if len(plan_ids) == 1:
        yield from _VERSIONS_OF.rows(work.conn, {"plan_id": plan_ids[0]})
        return
    for offset in range(0, len(plan_ids), 500):
        yield from work.conn.execute(_VERSIONS, {"plan_ids": plan_ids[offset : offset + 500]})


def plan_in_force(work: Work, plan_id: str, at: datetime) -> Plan:
    """The prices in force for a plan at an instant (for rating usage of that instant)."""
    return load_versions(work, [plan_id])[plan_id].at(at).plan


def _plan_view(work: Work, row: Any, at: datetime) -> PlanView:
    count = work.conn.execute(
        select(func.count()).where(plan_versions.c.plan_id == row.id)
    ).scalar_one()
    return PlanView(
        row.id,
        row.code,
        row.service_code,
        row.provider_id,
        row.status,
        row.created_at,
        row.retired_at,
        load_versions(work, [row.id])[row.id].at(at),
        int(count),
    )


def get_plan(
    work: Work, principal: Principal, code: str, *, at: datetime | None = None
) -> PlanView:
    row = load_plan_row(work, principal, code)
    return _plan_view(work, row, at or work.clock.now())


def list_plan_versions(work: Work, principal: Principal, code: str) -> list[VersionView]:
    row = load_plan_row(work, principal, code)
    rows = work.conn.execute(
        select(plan_versions)
        .where(plan_versions.c.plan_id == row.id)
        .order_by(plan_versions.c.version)
    ).all()
    return [
        VersionView(r.version, r.effective_from, r.created_at, plan_from_definition(r.definition))
        for r in rows
    ]


def list_plans(
    work: Work,
    principal: Principal,
    *,
    service: str | None = None,
    status: str | None = None,
    limit: int = 100,
    starting_after: str | None = None,
) -> Page[PlanView]:
    check_limit(limit)
    if status is not None and status not in ("active", "retired"):
        raise InvalidRequest("status must be active or retired", param="status")
    query = (
        select(plans, services.c.code.label("service_code"))
        .join(services, services.c.id == plans.c.service_id)
        .order_by(plans.c.code)
        .limit(limit + 1)
    )
    if principal.role == Role.PROVIDER:
        query = query.where(plans.c.provider_id == principal.provider_id)
    elif principal.role == Role.USER:
        if status == "retired":
            return Page([], False)
        query = query.where(plans.c.status == "active")
    if service:
        query = query.where(services.c.code == service)
    if status:
        query = query.where(plans.c.status == status)
    if starting_after:
        query = query.where(plans.c.code > starting_after)
    now = work.clock.now()
    rows = work.conn.execute(query).all()
    views = [_plan_view(work, r, now) for r in rows[:limit]]
    return Page(views, len(rows) > limit)


def add_plan_version(
    work: Work,
    principal: Principal,
    code: str,
    definition: object,
    *,
    effective_from: datetime | None = None,
) -> PlanView:
    """New prices for a plan, in force from `effective_from` (default now; never the past)."""
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    body = dict(definition) if isinstance(definition, dict) else definition
    if isinstance(body, dict):
        body.setdefault("code", code)
    plan = parse_plan(body)
    now = work.clock.now()
    starts = effective_from or now
    if starts.tzinfo is None:
        raise InvalidRequest("effective_from needs a UTC offset", param="effective_from")
    if starts < now:
        raise InvalidRequest(
            "effective_from must not be in the past: a price change never re-prices usage "
            "that already happened",
            code="effective_in_past",
            param="effective_from",
        )
    row = load_plan_row(work, principal, code, write=True)
    if plan.code != code:
        raise InvalidRequest("code must stay the plan's code", param="code")
    if plan.service != row.service_code:
        raise InvalidRequest(f"service must stay {row.service_code}", param="service")
    if plan.currency.code != row.currency:
        raise InvalidRequest(f"currency must stay {row.currency}", param="currency")
    if row.status != "active":
        raise Conflict("the plan is retired", code="plan_retired")
    service = load_service(work, principal, row.service_code, write=True)
    _check_against_catalog(work, plan, service)
    # Lock the plan row so that two new versions are numbered one after the other.
    work.conn.execute(select(plans.c.id).where(plans.c.id == row.id).with_for_update()).one()
    latest = work.conn.execute(
        select(plan_versions.c.version, plan_versions.c.effective_from)
        .where(plan_versions.c.plan_id == row.id)
        .order_by(plan_versions.c.version.desc())
        .limit(1)
    ).one()
    if starts <= latest.effective_from:
        raise InvalidRequest(
            f"effective_from must be after the latest version's "
            f"({latest.effective_from.isoformat()})",
            code="effective_in_past",
            param="effective_from",
        )
    version = latest.version + 1
    work.conn.execute(
        plan_versions.insert().values(_version_row(row.id, version, starts, plan, now))
    )
    audit.record(
        work,
        principal,
        "plan.versioned",
        "plan",
        row.id,
        at=now,
        details={"version": version, "effective_from": starts.isoformat()},
    )
    return get_plan(work, principal, code, at=starts)


def retire_plan(work: Work, principal: Principal, code: str) -> PlanView:
    """Stops new subscriptions to the plan; what already uses it goes on."""
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    now = work.clock.now()
    row = load_plan_row(work, principal, code, write=True)
    if row.status != "retired":
        work.conn.execute(
            update(plans).where(plans.c.id == row.id).values(status="retired", retired_at=now)
        )
        audit.record(work, principal, "plan.retired", "plan", row.id, at=now)
    return get_plan(work, principal, code)


def quote_for(
    work: Work, principal: Principal, plan: object, usage: object, *, at: datetime | None = None
) -> Quote:
    """The quote for usage under a plan given in full or by code (the version in force at `at`)."""
    parsed_usage = parse_usage(usage)
    if isinstance(plan, str):
        row = load_plan_row(work, principal, plan)
        resolved = plan_in_force(work, row.id, at or work.clock.now())
    elif isinstance(plan, dict):
        resolved = parse_plan(plan)
    else:
        raise InvalidRequest("plan must be a PLAN object or a plan code", param="plan")
    return quote(resolved, parsed_usage)
