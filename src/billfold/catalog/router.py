"""Services, metrics, plans and quotes: /v1/services, /v1/plans, /v1/quotes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Depends, Query

from billfold import catalog
from billfold.catalog.schemas import (
    MetricCreate,
    MetricList,
    MetricOut,
    PlanList,
    PlanOut,
    PlanVersionCreate,
    PlanVersionList,
    PlanVersionOut,
    QuoteCreate,
    QuoteOut,
    ServiceCreate,
    ServiceList,
    ServiceOut,
)
from billfold.core.access import Principal
from billfold.core.context import Context
from billfold.core.http import (
    Limit,
    Read,
    SegmentRouter,
    StartingAfter,
    UnitOfWorkRoute,
    Write,
    get_context,
    get_principal,
    maybe_aware,
)
from billfold.core.schemas import Moment

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["catalog and pricing"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]
PLAN_EXAMPLE = {
    "code": "maps-pro",
    "name": "Maps Pro",
    "service": "maps",
    "currency": "USD",
    "interval": "month",
    "fixed_fee": "30",
    "charges": [
        {
            "metric": "api_calls",
            "model": "graduated",
            "tiers": [{"up_to": "1000", "unit_price": "0"}, {"up_to": None, "unit_price": "0.002"}],
        }
    ],
}


@router.post("/services", status_code=201, response_model=ServiceOut)
def create_service(body: ServiceCreate, work: Write, who: Who) -> ServiceOut:
    """A service a provider sells (provider: its own; admin: names provider_id)."""
    return ServiceOut.of(
        catalog.create_service(
            work,
            who,
            code=body.code,
            name=body.name,
            description=body.description,
            provider_id=body.provider_id,
        )
    )


@router.get("/services", response_model=ServiceList)
def list_services(
    work: Read, who: Who, limit: Limit = 100, starting_after: StartingAfter = None
) -> ServiceList:
    page = catalog.list_services(work, who, limit=limit, starting_after=starting_after)
    return ServiceList(data=[ServiceOut.of(s) for s in page.data], has_more=page.has_more)


@router.get("/services/{code}", response_model=ServiceOut)
def get_service(code: str, work: Read, who: Who) -> ServiceOut:
    return ServiceOut.of(catalog.get_service(work, who, code))


@router.post("/services/{code}/metrics", status_code=201, response_model=MetricOut)
def create_metric(code: str, body: MetricCreate, work: Write, who: Who) -> MetricOut:
    """A billable metric of the service: count, sum, max, unique_count or latest."""
    return MetricOut.of(
        catalog.create_metric(
            work,
            who,
            code,
            code=body.code,
            name=body.name,
            aggregation=body.aggregation,
            field=body.field,
        )
    )


@router.get("/services/{code}/metrics", response_model=MetricList)
def list_metrics(code: str, work: Read, who: Who) -> MetricList:
    return MetricList(
        data=[MetricOut.of(m) for m in catalog.list_metrics(work, who, code)], has_more=False
    )


@router.post("/plans", status_code=201, response_model=PlanOut)
def create_plan(
    work: Write,
    who: Who,
    body: Annotated[
        dict[str, Any], Body(description="A PLAN (see docs/API.md).", examples=[PLAN_EXAMPLE])
    ],
) -> PlanOut:
    """A plan for one service; refused with the field named if it cannot be priced."""
    return PlanOut.of(catalog.create_plan(work, who, body))


@router.get("/plans", response_model=PlanList)
def list_plans(
    work: Read,
    who: Who,
    limit: Limit = 100,
    starting_after: StartingAfter = None,
    service: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(pattern="^(active|retired)$")] = None,
) -> PlanList:
    page = catalog.list_plans(
        work, who, service=service, status=status, limit=limit, starting_after=starting_after
    )
    return PlanList(data=[PlanOut.of(p) for p in page.data], has_more=page.has_more)


@router.get("/plans/{code}", response_model=PlanOut)
def get_plan(
    code: str,
    work: Read,
    who: Who,
    at: Annotated[Moment | None, Query(description="Show the version in force then.")] = None,
) -> PlanOut:
    return PlanOut.of(catalog.get_plan(work, who, code, at=maybe_aware(at, "at")))


@router.get("/plans/{code}/versions", response_model=PlanVersionList)
def list_plan_versions(code: str, work: Read, who: Who) -> PlanVersionList:
    versions = catalog.list_plan_versions(work, who, code)
    return PlanVersionList(data=[PlanVersionOut.of(v) for v in versions], has_more=False)


@router.post("/plans/{code}/versions", status_code=201, response_model=PlanOut)
def add_plan_version(code: str, body: PlanVersionCreate, work: Write, who: Who) -> PlanOut:
    """New prices from effective_from on (default now); the past keeps its prices."""
    return PlanOut.of(
        catalog.add_plan_version(
            work,
            who,
            code,
            body.plan,
            effective_from=maybe_aware(body.effective_from, "effective_from"),
        )
    )


@router.post("/plans/{code}/retire", response_model=PlanOut)
def retire_plan(code: str, work: Write, who: Who) -> PlanOut:
    return PlanOut.of(catalog.retire_plan(work, who, code))


@router.post("/quotes", response_model=QuoteOut)
def create_quote(body: QuoteCreate, work: Read, who: Who) -> QuoteOut:
    """The price of some usage under a plan, line by line, with how each amount came about."""
    return QuoteOut.of(
        catalog.quote_for(work, who, body.plan, body.usage, at=maybe_aware(body.at, "at"))
    )
