"""Usage and revenue series, subscription metrics, top lists and the plan simulator."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from billfold import analytics
from billfold.analytics import simulator
from billfold.core.access import Principal
from billfold.core.context import Context
from billfold.core.http import (
    From,
    Read,
    Ref,
    To,
    Tz,
    UnitOfWorkRoute,
    Window,
    Write,
    aware,
    get_context,
    get_principal,
    money_text,
)
from billfold.core.schemas import Request as Body
from billfold.domain.money import format_decimal

router = APIRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["analytics"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]


@router.get("/analytics/usage")
def usage_series(
    work: Read,
    who: Who,
    start: From,
    to: To,
    window: Window = "day",
    tz: Tz = None,
    group_by: Annotated[str | None, Query(max_length=100)] = None,
    user: Ref = None,
    provider: Ref = None,
    service: Ref = None,
    metric: Ref = None,
) -> dict[str, Any]:
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
    return {
        "object": "series",
        "window": window,
        "tz": tz or "UTC",
        "data": [
            {
                "group": s.group,
                "currency": s.currency,
                "points": [
                    {
                        "start": p.start.isoformat(),
                        "quantity": format_decimal(p.quantity),
                        "events": p.events,
                        "amount": money_text(p.amount, s.currency),
                    }
                    for p in s.points
                ],
            }
            for s in analytics.usage_series(work, who, q)
        ],
    }


@router.get("/analytics/revenue")
def revenue_series(
    work: Read,
    who: Who,
    start: From,
    to: To,
    window: Window = "day",
    tz: Tz = None,
    group_by: Annotated[str | None, Query(max_length=100)] = None,
    provider: Ref = None,
    service: Ref = None,
) -> dict[str, Any]:
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
    return {
        "object": "series",
        "window": window,
        "tz": tz or "UTC",
        "data": [
            {
                "group": s.group,
                "currency": s.currency,
                "points": [
                    {
                        "start": p.start.isoformat(),
                        "gross": money_text(p.revenue.gross, s.currency),
                        "refunds": money_text(p.revenue.refunds, s.currency),
                        "commission": money_text(p.revenue.commission, s.currency),
                        "net": money_text(p.revenue.net, s.currency),
                        "transfers": p.revenue.transfers,
                    }
                    for p in s.points
                ],
            }
            for s in analytics.revenue_series(work, who, q)
        ],
    }


@router.get("/analytics/subscriptions")
def subscription_metrics(work: Read, who: Who, start: From, to: To) -> dict[str, Any]:
    """MRR, ARR, active and trialing subscriptions at `to`; churn and ARPU over the range."""
    return {
        "object": "list",
        "data": [
            {
                "currency": m.currency,
                "active": m.active,
                "trialing": m.trialing,
                "mrr": format_decimal(m.mrr),
                "arr": format_decimal(m.arr),
                "active_at_start": m.active_at_start,
                "churned": m.churned,
                "churn_rate": None if m.churn_rate is None else format_decimal(m.churn_rate),
                "paying_users": m.paying_users,
                "arpu": format_decimal(m.arpu.quantize(Decimal("0.01"))),
            }
            for m in analytics.subscription_metrics(
                work, who, aware(start, "from"), aware(to, "to")
            )
        ],
    }


@router.get("/analytics/top")
def top(
    work: Read,
    who: Who,
    start: From,
    to: To,
    by: Annotated[str, Query(pattern="^(user|service)$")] = "user",
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> dict[str, Any]:
    """The users or services charged most for usage in the range (admin, provider own)."""
    q = analytics.Query(aware(start, "from"), aware(to, "to"))
    return {
        "object": "list",
        "data": [
            {
                by: name,
                "currency": code,
                "amount": money_text(units, code),
                "quantity": format_decimal(qty),
            }
            for name, code, units, qty in analytics.top(work, who, q, by, limit)
        ],
    }


# --- the plan simulator and exports ---------------------------------------------------


class SimulateRequest(Body):
    plan: dict[str, Any] = Field(description="The draft PLAN.")
    period: str = Field(pattern=r"^\d{4}-\d{2}$", description="The month to re-price, YYYY-MM.")


@router.post("/plans/{code}/simulate")
def simulate(work: Write, who: Who, code: str, body: SimulateRequest) -> dict[str, Any]:
    """Re-prices a past month's recorded usage under a draft plan (provider own, admin)."""
    sim = simulator.simulate(work, who, code, body.plan, body.period)
    return {
        "object": "simulation",
        "plan": sim.plan,
        "period": sim.period,
        "currency": sim.currency.code,
        "current": format_decimal(sim.current),
        "draft": format_decimal(sim.draft),
        "difference": format_decimal(sim.draft - sim.current),
        "users": [
            {
                "user": u.user_id,
                "current": format_decimal(u.current),
                "draft": format_decimal(u.draft),
                "difference": format_decimal(u.difference),
            }
            for u in sim.users
        ],
    }
