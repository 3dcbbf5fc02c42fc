"""Request and response schemas of alerts: forecasts, alert settings, alerts, webhooks."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from billfold.alerts.service import AlertSettings, AlertView, Endpoint
from billfold.core.schemas import Amount, AmountIn, Request
from billfold.domain.analytics import Forecast
from billfold.domain.money import currency, format_decimal, format_money


class ForecastOut(BaseModel):
    object: Literal["forecast"] = "forecast"
    user: str
    currency: str
    available: Amount
    days: int = Field(description="How many past days the mean daily spend is taken over.")
    burn_per_day: str = Field(description="The mean daily spend (not rounded to the cent).")
    days_left: str | None
    runs_out_at: datetime | None

    @classmethod
    def of(cls, user: str, code: str, available: Decimal, fc: Forecast) -> ForecastOut:
        return cls(
            user=user,
            currency=code,
            available=format_money(available, currency(code)),
            days=fc.days,
            burn_per_day=format_decimal(fc.burn_per_day.quantize(Decimal("0.000001"))),
            days_left=None if fc.days_left is None else format_decimal(fc.days_left),
            runs_out_at=fc.runs_out_at,
        )


class AlertSettingsIn(Request):
    monthly_budget: AmountIn | None = None
    thresholds: list[int] | None = Field(default=None, max_length=10)
    low_balance: AmountIn | None = None


class AlertSettingsOut(BaseModel):
    object: Literal["alert_settings"] = "alert_settings"
    user: str
    currency: str
    monthly_budget: Amount | None
    thresholds: list[int]
    low_balance: Amount | None

    @classmethod
    def of(cls, s: AlertSettings) -> AlertSettingsOut:
        cur = currency(s.currency)
        return cls(
            user=s.user_id,
            currency=s.currency,
            monthly_budget=None
            if s.monthly_budget is None
            else format_money(s.monthly_budget, cur),
            thresholds=list(s.thresholds),
            low_balance=None if s.low_balance is None else format_money(s.low_balance, cur),
        )


class AlertOut(BaseModel):
    id: str
    type: str
    user: str | None
    provider: str | None
    data: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, a: AlertView) -> AlertOut:
        return cls(
            id=a.id,
            type=a.type,
            user=a.user_id,
            provider=a.provider_id,
            data=a.data,
            created_at=a.created_at,
        )


class EndpointCreate(Request):
    url: str = Field(max_length=2000)
    event_types: list[str] | None = Field(default=None, max_length=10)


class EndpointOut(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    url: str
    event_types: list[str]
    created_at: datetime
    secret: str | None = Field(default=None, description="Shown only when created.")

    @classmethod
    def of(cls, e: Endpoint) -> EndpointOut:
        return cls(
            id=e.id,
            url=e.url,
            event_types=list(e.event_types),
            created_at=e.created_at,
            secret=e.secret,
        )


class MessageOut(BaseModel):
    id: str
    event_type: str
    status: str = Field(description="pending, delivered or failed.")
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, m: Any) -> MessageOut:
        return cls(
            id=m.id,
            event_type=m.event_type,
            status=m.status,
            attempts=m.attempts,
            next_attempt_at=m.next_attempt_at,
            last_status=m.last_status,
            last_error=m.last_error,
            created_at=m.created_at,
            delivered_at=m.delivered_at,
        )
