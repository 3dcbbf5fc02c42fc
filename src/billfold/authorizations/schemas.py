"""Request and response schemas of authorizations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from billfold.authorizations import Authorization, Entitlements
from billfold.core.schemas import Amount, AmountIn, Request
from billfold.domain.money import format_decimal, format_money


class AuthorizationCreate(Request):
    user: Annotated[str, Field(max_length=255)]
    service: Annotated[str | None, Field(max_length=64)] = None
    metric: Annotated[str | None, Field(max_length=64)] = None
    quantity: AmountIn | None = None
    amount: AmountIn | None = None
    expires_in: int | None = Field(
        default=None,
        ge=1,
        description="Seconds until the hold lapses; at most BILLFOLD_HOLD_MAX_TTL_S (a day).",
    )


class AuthorizationCapture(Request):
    quantity: AmountIn | None = None
    amount: AmountIn | None = None


class AuthorizationOut(BaseModel):
    object: Literal["authorization"] = "authorization"
    id: str
    status: str
    reason: str | None
    currency: str
    amount: Amount
    captured: Amount
    expires_at: datetime | None
    user: str
    service: str | None
    metric: str | None
    quantity: str | None

    @classmethod
    def of(cls, auth: Authorization) -> AuthorizationOut:
        cur = auth.currency
        return cls(
            id=auth.id,
            status=auth.status,
            reason=auth.reason,
            currency=cur.code,
            amount=format_money(auth.amount, cur),
            captured=format_money(auth.captured, cur),
            expires_at=auth.expires_at,
            user=auth.user_id,
            service=auth.service,
            metric=auth.metric,
            quantity=None if auth.quantity is None else format_decimal(auth.quantity),
        )


class EntitlementsOut(BaseModel):
    object: Literal["entitlements"] = "entitlements"
    user: str
    service: str
    has_access: bool
    reason: str
    currency: str
    available: Amount | None = Field(
        description="What the user can spend now; null when a provider asks."
    )
    debt: Amount | None = Field(description="What the user owes; null when a provider asks.")
    remaining: dict[str, str]

    @classmethod
    def of(cls, value: Entitlements) -> EntitlementsOut:
        cur = value.currency
        return cls(
            user=value.user_id,
            service=value.service,
            has_access=value.has_access,
            reason=value.reason,
            currency=cur.code,
            available=None if value.available is None else format_money(value.available, cur),
            debt=None if value.debt is None else format_money(value.debt, cur),
            remaining={k: format_decimal(v) for k, v in value.remaining.items()},
        )
