"""Analytics, settlement, alerts, webhooks, the plan simulator and exports."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from billfold.api.auth import get_context, get_principal
from billfold.api.exact_json import ExactJSONRoute
from billfold.api.routers.common import transfer_id_for
from billfold.api.schemas import AmountIn, ListOf
from billfold.api.schemas import Request as Body
from billfold.domain.money import currency, format_decimal, from_units
from billfold.services import alerts, analytics, exports, settlement, simulator
from billfold.services.access import Principal
from billfold.services.context import Context

router = APIRouter(prefix="/v1", route_class=ExactJSONRoute, tags=["analytics and settlement"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]
From = Annotated[datetime, Query(alias="from", description="Start, ISO 8601 with an offset.")]
To = Annotated[datetime, Query(description="End (excluded).")]
Window = Annotated[str, Query(pattern="^(hour|day|month)$")]
Tz = Annotated[str | None, Query(max_length=64, description="IANA time zone, default UTC.")]
Ref = Annotated[str | None, Query(max_length=255)]
Period = Annotated[str, Query(pattern=r"^\d{4}-\d{2}$", description="A month, YYYY-MM.")]


def _money(units: int, code: str) -> str:
    return format_decimal(from_units(units, currency(code)))


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        from billfold.domain.errors import InvalidRequest

        raise InvalidRequest(f"{name} needs an offset, such as 2026-11-01T00:00:00Z", param=name)
    return moment


@router.get("/analytics/usage")
def usage_series(
    ctx: Ctx,
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
        _aware(start, "from"),
        _aware(to, "to"),
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
                        "amount": _money(p.amount, s.currency),
                    }
                    for p in s.points
                ],
            }
            for s in analytics.usage_series(ctx, who, q)
        ],
    }


@router.get("/analytics/revenue")
def revenue_series(
    ctx: Ctx,
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
        _aware(start, "from"),
        _aware(to, "to"),
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
                        "gross": _money(p.revenue.gross, s.currency),
                        "refunds": _money(p.revenue.refunds, s.currency),
                        "commission": _money(p.revenue.commission, s.currency),
                        "net": _money(p.revenue.net, s.currency),
                        "transfers": p.revenue.transfers,
                    }
                    for p in s.points
                ],
            }
            for s in analytics.revenue_series(ctx, who, q)
        ],
    }


@router.get("/analytics/subscriptions")
def subscription_metrics(ctx: Ctx, who: Who, start: From, to: To) -> dict[str, Any]:
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
                ctx, who, _aware(start, "from"), _aware(to, "to")
            )
        ],
    }


@router.get("/analytics/top")
def top(
    ctx: Ctx,
    who: Who,
    start: From,
    to: To,
    by: Annotated[str, Query(pattern="^(user|service)$")] = "user",
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> dict[str, Any]:
    """The users or services charged most for usage in the range (admin, provider own)."""
    q = analytics.Query(_aware(start, "from"), _aware(to, "to"))
    return {
        "object": "list",
        "data": [
            {
                by: name,
                "currency": code,
                "amount": _money(units, code),
                "quantity": format_decimal(qty),
            }
            for name, code, units, qty in analytics.top(ctx, who, q, by, limit)
        ],
    }


# --- settlement -----------------------------------------------------------------------


def _statement(st: settlement.Statement) -> dict[str, Any]:
    m = st.money
    return {
        "object": "statement",
        "provider": st.provider_id,
        "period": st.period,
        "currency": st.currency.code,
        "gross": format_decimal(m(st.gross)),
        "commission": format_decimal(m(st.commission)),
        "refunds": format_decimal(m(st.refunds)),
        "net": format_decimal(m(st.net)),
        "payouts": format_decimal(m(st.payouts)),
        "opening_balance": format_decimal(m(st.opening)),
        "closing_balance": format_decimal(m(st.closing)),
        "transfers": st.transfers,
        "services": [
            {
                "service": service or None,
                "gross": format_decimal(m(g)),
                "refunds": format_decimal(m(r)),
                "commission": format_decimal(m(c)),
                "net": format_decimal(m(g - r - c)),
            }
            for service, (g, r, c) in sorted(st.by_service.items())
        ],
    }


@router.get("/providers/{provider_id}/statements")
def statements(ctx: Ctx, who: Who, provider_id: str, period: Period) -> dict[str, Any]:
    """The provider's statement for a month, per currency (admin, that provider). The
    first statement's fields are repeated at the top level, as API.md shows them."""
    found = [_statement(st) for st in settlement.statements(ctx, who, provider_id, period)]
    head = found[0] if found else {"gross": "0", "commission": "0", "refunds": "0", "net": "0"}
    return {**head, "object": "statements", "period": period, "data": found}


class PayoutCreate(Body):
    provider: str = Field(max_length=64)
    amount: AmountIn
    currency: str | None = Field(default=None, pattern="^[A-Z]{3}$")
    reference: str | None = Field(default=None, max_length=255)


@router.post("/payouts", status_code=201)
def create_payout(body: PayoutCreate, request: Request, ctx: Ctx, who: Who) -> dict[str, Any]:
    """Pays out part of a provider's earned balance; never more than it holds (admin)."""
    paid = settlement.payout(
        ctx,
        who,
        provider_id=body.provider,
        amount=body.amount,
        currency_code=body.currency,
        reference=body.reference,
        transfer_id=transfer_id_for(request, who),
    )
    return {
        "object": "payout",
        "id": paid.id,
        "provider": paid.provider_id,
        "currency": paid.currency.code,
        "amount": format_decimal(from_units(paid.amount, paid.currency)),
        "balance_after": format_decimal(from_units(paid.balance_after, paid.currency)),
        "reference": paid.reference,
        "created_at": paid.created_at.isoformat(),
    }


@router.get("/reports/commission")
def commission_report(ctx: Ctx, who: Who, period: Period) -> dict[str, Any]:
    """The platform's commission per provider for a month (admin)."""
    rows = settlement.commission_report(ctx, who, period)
    return {
        "object": "list",
        "period": period,
        "data": [
            {k: format_decimal(v) if isinstance(v, Decimal) else v for k, v in row.items()}
            for row in rows
        ],
    }


# --- insight: forecasts, budgets, alerts, webhooks --------------------------------------


@router.get("/users/{user_id}/forecast")
def forecast(
    ctx: Ctx, who: Who, user_id: str, days: Annotated[int, Query(ge=1, le=365)] = 14
) -> dict[str, Any]:
    """Days until the balance runs out at the mean daily spend of the last `days` days."""
    code, available, fc = alerts.balance_forecast(ctx, who, user_id, days=days)
    return {
        "object": "forecast",
        "user": user_id,
        "currency": code,
        "available": format_decimal(available),
        "days": fc.days,
        "burn_per_day": format_decimal(fc.burn_per_day.quantize(Decimal("0.000001"))),
        "days_left": None if fc.days_left is None else format_decimal(fc.days_left),
        "runs_out_at": None if fc.runs_out_at is None else fc.runs_out_at.isoformat(),
    }


class AlertSettingsIn(Body):
    monthly_budget: AmountIn | None = None
    thresholds: list[int] | None = Field(default=None, max_length=10)
    low_balance: AmountIn | None = None


@router.post("/users/{user_id}/alert-settings")
def set_alert_settings(ctx: Ctx, who: Who, user_id: str, body: AlertSettingsIn) -> dict[str, Any]:
    """A monthly budget with alerts at thresholds (percent), and a low-balance level."""
    s = alerts.set_settings(
        ctx,
        who,
        user_id,
        monthly_budget=body.monthly_budget,
        thresholds=body.thresholds,
        low_balance=body.low_balance,
    )
    return {
        "object": "alert_settings",
        "user": s.user_id,
        "currency": s.currency,
        "monthly_budget": None if s.monthly_budget is None else format_decimal(s.monthly_budget),
        "thresholds": list(s.thresholds),
        "low_balance": None if s.low_balance is None else format_decimal(s.low_balance),
    }


@router.get("/alerts")
def list_alerts(
    ctx: Ctx, who: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """Alerts raised about the asker's users (admin: all; provider: its own; user: itself)."""
    return {
        "object": "list",
        "has_more": False,
        "data": [
            {
                "id": a.id,
                "type": a.type,
                "user": a.user_id,
                "provider": a.provider_id,
                "data": a.data,
                "created_at": a.created_at.isoformat(),
            }
            for a in alerts.list_alerts(ctx, who, limit=limit)
        ],
    }


class EndpointCreate(Body):
    url: str = Field(max_length=2000)
    event_types: list[str] | None = Field(default=None, max_length=10)


class EndpointOut(BaseModel):
    object: str = "webhook_endpoint"
    id: str
    url: str
    event_types: list[str]
    created_at: datetime
    secret: str | None = Field(default=None, description="Shown only when created.")


@router.post("/webhook-endpoints", status_code=201, response_model=EndpointOut)
def create_endpoint(ctx: Ctx, who: Who, body: EndpointCreate) -> EndpointOut:
    """An endpoint for the asker's alerts, signed per Standard Webhooks."""
    e = alerts.create_endpoint(ctx, who, url=body.url, event_types=body.event_types)
    return EndpointOut(
        id=e.id,
        url=e.url,
        event_types=list(e.event_types),
        created_at=e.created_at,
        secret=e.secret,
    )


@router.get("/webhook-endpoints", response_model=ListOf[EndpointOut])
def list_endpoints(ctx: Ctx, who: Who) -> ListOf[EndpointOut]:
    return ListOf[EndpointOut](
        data=[
            EndpointOut(
                id=e.id, url=e.url, event_types=list(e.event_types), created_at=e.created_at
            )
            for e in alerts.list_endpoints(ctx, who)
        ],
        has_more=False,
    )


@router.get("/webhook-endpoints/{endpoint_id}/messages")
def list_messages(
    ctx: Ctx, who: Who, endpoint_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """The outbox of one of the asker's endpoints: each message, its state and attempts."""
    return {
        "object": "list",
        "has_more": False,
        "data": [
            {
                "id": m.id,
                "event_type": m.event_type,
                "status": m.status,
                "attempts": m.attempts,
                "next_attempt_at": m.next_attempt_at.isoformat() if m.next_attempt_at else None,
                "last_status": m.last_status,
                "last_error": m.last_error,
                "created_at": m.created_at.isoformat(),
                "delivered_at": m.delivered_at.isoformat() if m.delivered_at else None,
            }
            for m in alerts.list_messages(ctx, who, endpoint_id, limit=limit)
        ],
    }


# --- the plan simulator and exports ---------------------------------------------------


class SimulateRequest(Body):
    plan: dict[str, Any] = Field(description="The draft PLAN.")
    period: str = Field(pattern=r"^\d{4}-\d{2}$", description="The month to re-price, YYYY-MM.")


@router.post("/plans/{code}/simulate")
def simulate(ctx: Ctx, who: Who, code: str, body: SimulateRequest) -> dict[str, Any]:
    """Re-prices a past month's recorded usage under a draft plan (provider own, admin)."""
    sim = simulator.simulate(ctx, who, code, body.plan, body.period)
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


@router.get("/exports/{kind}.csv")
def export(ctx: Ctx, who: Who, kind: str, period: Period) -> StreamingResponse:
    """CSV of usage, charges, invoices or statements for a month, the asker's own."""
    rows = exports.export_csv(ctx, who, kind, period)
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{kind}-{period}.csv"'},
    )
