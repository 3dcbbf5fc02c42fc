"""Request and response bodies of subscriptions, invoices, credit notes and the test clock."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from billfold.core.schemas import Moment, Request
from billfold.subscriptions import SubscriptionView

Timing = Literal["immediate", "period_end"]


class SubscriptionCreate(Request):
    user: Annotated[str, Field(max_length=255, description="User id or external id.")]
    plan: Annotated[
        str | None,
        Field(
            max_length=64,
            description="Plan code. Without one, `service` names the service whose default "
            "plan the user gets.",
        ),
    ] = None
    service: Annotated[
        str | None,
        Field(max_length=64, description="Service code, when no plan is named."),
    ] = None
    start: Moment | None = Field(default=None, description="Default: now.")
    billing_anchor: Annotated[
        str | int | None,
        Field(description='"calendar" (default), "anniversary", or a day of the month 1-31.'),
    ] = None


class PlanChange(Request):
    plan: Annotated[str, Field(max_length=64)]
    timing: Timing | None = Field(
        default=None, description="Default: immediate for an upgrade, period_end for a downgrade."
    )


class CancelRequest(Request):
    timing: Timing = "period_end"


class SubscriptionOut(BaseModel):
    object: Literal["subscription"] = "subscription"
    id: str
    user: str
    plan: str
    service: str
    status: str
    billing_anchor: str
    interval: str
    interval_count: int
    started_at: datetime
    trial_end: datetime | None
    current_period_start: datetime
    current_period_end: datetime
    pending_plan: str | None
    cancel_at_period_end: bool
    ended_at: datetime | None
    past_due_since: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, view: SubscriptionView) -> SubscriptionOut:
        return cls(**{name: getattr(view, name) for name in cls.model_fields if name != "object"})
