"""Usage and revenue series, subscription metrics, top lists and the plan simulator."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from billfold import analytics
from billfold.analytics import simulator
from billfold.analytics.schemas import (
    RevenueSeriesList,
    SimulateRequest,
    SimulationOut,
    SubscriptionMetricsList,
    SubscriptionMetricsOut,
    TopList,
    UsageSeriesList,
)
from billfold.core.access import Principal
from billfold.core.context import Context
from billfold.core.http import (
    From,
    Read,
    Ref,
    SegmentRouter,
    To,
    Tz,
    UnitOfWorkRoute,
    Window,
    aware,
    get_context,
    get_principal,
)

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["analytics"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]


@router.get("/analytics/usage", response_model=UsageSeriesList)
def usage_series(
    work: Read,
    who: Who,
    start: From,
    to: To,
    window: Window = "day",
    tz: Tz = None,
    group_by: Annotated[
        str | None,
        Query(pattern=r"^(user|provider|service|metric)(,(user|provider|service|metric))*$"),
    ] = None,
    user: Ref = None,
    provider: Ref = None,
    service: Ref = None,
    metric: Ref = None,
) -> UsageSeriesList:
    """Usage and its charges as a time series (admin; a provider its own; a user itself)."""
    q = analytics.Query(
        aware(start, "from"),
        aware(to, "to"),
        window,
        tz,
        analytics.parse_group_by(group_by, analytics.USAGE_GROUPS),
        user,
        provider,
        service,
        metric,
    )
    return UsageSeriesList.of(window, tz, analytics.usage_series(work, who, q))


@router.get("/analytics/revenue", response_model=RevenueSeriesList)
def revenue_series(
    work: Read,
    who: Who,
    start: From,
    to: To,
    window: Window = "day",
    tz: Tz = None,
    group_by: Annotated[
        str | None, Query(pattern=r"^(provider|service)(,(provider|service))*$")
    ] = None,
    provider: Ref = None,
    service: Ref = None,
) -> RevenueSeriesList:
    """Gross revenue, refunds, platform commission and provider net (admin, provider own)."""
    q = analytics.Query(
        aware(start, "from"),
        aware(to, "to"),
        window,
        tz,
        analytics.parse_group_by(group_by, analytics.REVENUE_GROUPS),
        provider=provider,
        service=service,
    )
    return RevenueSeriesList.of(window, tz, analytics.revenue_series(work, who, q))


@router.get("/analytics/subscriptions", response_model=SubscriptionMetricsList)
def subscription_metrics(work: Read, who: Who, start: From, to: To) -> SubscriptionMetricsList:
    """MRR, ARR, active and trialing subscriptions at `to`; churn and ARPU over the range."""
    found = analytics.subscription_metrics(work, who, aware(start, "from"), aware(to, "to"))
    return SubscriptionMetricsList(data=[SubscriptionMetricsOut.of(m) for m in found])


@router.get("/analytics/top", response_model=TopList, response_model_exclude_none=True)
def top(
    work: Read,
    who: Who,
    start: From,
    to: To,
    by: Annotated[str, Query(pattern="^(user|service)$")] = "user",
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> TopList:
    """The users or services charged most for usage in the range (admin, provider own)."""
    q = analytics.Query(aware(start, "from"), aware(to, "to"))
    return TopList.of(by, analytics.top(work, who, q, by, limit))


@router.post("/plans/{code}/simulate", response_model=SimulationOut)
def simulate(work: Read, who: Who, code: str, body: SimulateRequest) -> SimulationOut:
    """Re-prices a past month's recorded usage under a draft plan (provider own, admin).

    Nothing is written."""
    return SimulationOut.of(simulator.simulate(work, who, code, body.plan, body.period))
