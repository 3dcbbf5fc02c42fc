"""Forecasts, alert settings, alerts and webhook endpoints."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from billfold import alerts
from billfold.core.access import Principal
from billfold.core.context import Context
from billfold.core.http import (
    Read,
    UnitOfWorkRoute,
    Write,
    get_context,
    get_principal,
)
from billfold.core.schemas import AmountIn, ListOf
from billfold.core.schemas import Request as Body
from billfold.domain.money import format_decimal

router = APIRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["alerts"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]


# --- insight: forecasts, budgets, alerts, webhooks --------------------------------------


@router.get("/users/{user_id}/forecast")
def forecast(
    work: Read, who: Who, user_id: str, days: Annotated[int, Query(ge=1, le=365)] = 14
) -> dict[str, Any]:
    """Days until the balance runs out at the mean daily spend of the last `days` days."""
    code, available, fc = alerts.balance_forecast(work, who, user_id, days=days)
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
def set_alert_settings(
    work: Write, who: Who, user_id: str, body: AlertSettingsIn
) -> dict[str, Any]:
    """A monthly budget with alerts at thresholds (percent), and a low-balance level."""
    s = alerts.set_settings(
        work,
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
    work: Read, who: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 100
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
            for a in alerts.list_alerts(work, who, limit=limit)
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
def create_endpoint(work: Write, who: Who, body: EndpointCreate) -> EndpointOut:
    """An endpoint for the asker's alerts, signed per Standard Webhooks."""
    e = alerts.create_endpoint(work, who, url=body.url, event_types=body.event_types)
    return EndpointOut(
        id=e.id,
        url=e.url,
        event_types=list(e.event_types),
        created_at=e.created_at,
        secret=e.secret,
    )


@router.get("/webhook-endpoints", response_model=ListOf[EndpointOut])
def list_endpoints(work: Read, who: Who) -> ListOf[EndpointOut]:
    return ListOf[EndpointOut](
        data=[
            EndpointOut(
                id=e.id, url=e.url, event_types=list(e.event_types), created_at=e.created_at
            )
            for e in alerts.list_endpoints(work, who)
        ],
        has_more=False,
    )


@router.get("/webhook-endpoints/{endpoint_id}/messages")
def list_messages(
    work: Read, who: Who, endpoint_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 100
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
            for m in alerts.list_messages(work, who, endpoint_id, limit=limit)
        ],
    }
