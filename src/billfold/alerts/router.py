"""Forecasts, alert settings, alerts and webhook endpoints."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Query

from billfold import alerts
from billfold.alerts.schemas import (
    AlertOut,
    AlertSettingsIn,
    AlertSettingsOut,
    EndpointCreate,
    EndpointOut,
    ForecastOut,
    MessageOut,
)
from billfold.core.access import Principal
from billfold.core.context import Context
from billfold.core.http import (
    Read,
    SegmentRouter,
    UnitOfWorkRoute,
    Write,
    get_context,
    get_principal,
)
from billfold.core.schemas import ListOf

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["alerts"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]


@router.get("/users/{user_id}/forecast", response_model=ForecastOut)
def forecast(
    work: Read, who: Who, user_id: str, days: Annotated[int, Query(ge=1, le=365)] = 14
) -> ForecastOut:
    """Days until the balance runs out at the mean daily spend of the last `days` days."""
    code, available, fc = alerts.balance_forecast(work, who, user_id, days=days)
    return ForecastOut.of(user_id, code, available, fc)


@router.get("/users/{user_id}/alert-settings", response_model=AlertSettingsOut)
def get_alert_settings(work: Read, who: Who, user_id: str) -> AlertSettingsOut:
    """The user's budget, thresholds and low-balance level (defaults until set)."""
    return AlertSettingsOut.of(alerts.get_settings(work, who, user_id))


@router.post("/users/{user_id}/alert-settings", response_model=AlertSettingsOut)
def set_alert_settings(
    work: Write, who: Who, user_id: str, body: AlertSettingsIn
) -> AlertSettingsOut:
    """A monthly budget with alerts at thresholds (percent), and a low-balance level."""
    settings = alerts.set_settings(
        work,
        who,
        user_id,
        monthly_budget=body.monthly_budget,
        thresholds=body.thresholds,
        low_balance=body.low_balance,
    )
    return AlertSettingsOut.of(settings)


@router.get("/alerts", response_model=ListOf[AlertOut])
def list_alerts(
    work: Read, who: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> ListOf[AlertOut]:
    """Alerts raised about the asker's users (admin: all; provider: its own; user: itself)."""
    found = alerts.list_alerts(work, who, limit=limit)
    return ListOf[AlertOut](data=[AlertOut.of(a) for a in found], has_more=False)


@router.post("/webhook-endpoints", status_code=201, response_model=EndpointOut)
def create_endpoint(work: Write, who: Who, body: EndpointCreate) -> EndpointOut:
    """An endpoint for the asker's alerts, signed per Standard Webhooks."""
    return EndpointOut.of(
        alerts.create_endpoint(work, who, url=body.url, event_types=body.event_types)
    )


@router.get("/webhook-endpoints", response_model=ListOf[EndpointOut])
def list_endpoints(work: Read, who: Who) -> ListOf[EndpointOut]:
    """The asker's webhook endpoints (never their secrets)."""
    found = alerts.list_endpoints(work, who)
    return ListOf[EndpointOut](
        data=[EndpointOut.of(replace(e, secret=None)) for e in found], has_more=False
    )


@router.get("/webhook-endpoints/{endpoint_id}/messages", response_model=ListOf[MessageOut])
def list_messages(
    work: Read, who: Who, endpoint_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> ListOf[MessageOut]:
    """The outbox of one of the asker's endpoints: each message, its state and attempts."""
    found = alerts.list_messages(work, who, endpoint_id, limit=limit)
    return ListOf[MessageOut](data=[MessageOut.of(m) for m in found], has_more=False)
