"""Subscriptions: subscribe, change plan, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from billfold import subscriptions
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
)
from billfold.core.schemas import ListOf
from billfold.subscriptions.schemas import (
    CancelRequest,
    PlanChange,
    SubscriptionCreate,
    SubscriptionOut,
)

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["subscriptions"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]
InvoiceStatus = Annotated[
    str | None,
    Query(
        pattern="^(draft|open|finalized|paid|void)$",
        description="Only this status (`finalized` is an older name for `open`).",
    ),
]


@router.post("/subscriptions", response_model=SubscriptionOut, status_code=201)
def create_subscription(body: SubscriptionCreate, work: Write, who: Who) -> SubscriptionOut:
    """Subscribes a user to a plan, or to a service's default plan.

    The first subscription with a provider is the user's consent: only that user or an
    admin may create it. The provider may then subscribe its customer to further plans."""
    return SubscriptionOut.of(
        subscriptions.create(
            work,
            who,
            user_ref=body.user,
            plan_code=body.plan,
            service_code=body.service,
            start=body.start.isoformat() if body.start else None,
            billing_anchor=body.billing_anchor,
        )
    )


@router.get("/subscriptions", response_model=ListOf[SubscriptionOut])
def list_subscriptions(
    work: Read,
    who: Who,
    user: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    starting_after: StartingAfter = None,
) -> ListOf[SubscriptionOut]:
    found, more = subscriptions.list_for(
        work, who, user_ref=user, limit=limit, after=starting_after
    )
    return ListOf[SubscriptionOut](data=[SubscriptionOut.of(s) for s in found], has_more=more)


@router.get("/subscriptions/{sub_id}", response_model=SubscriptionOut)
def get_subscription(sub_id: str, work: Read, who: Who) -> SubscriptionOut:
    return SubscriptionOut.of(subscriptions.get(work, who, sub_id))


@router.post("/subscriptions/{sub_id}/change-plan", response_model=SubscriptionOut)
def change_plan(sub_id: str, body: PlanChange, work: Write, who: Who) -> SubscriptionOut:
    """Upgrades (immediately, prorated, by default) or downgrades (at the period end)."""
    return SubscriptionOut.of(
        subscriptions.change_plan(work, who, sub_id, plan_code=body.plan, timing=body.timing)
    )


@router.post("/subscriptions/{sub_id}/cancel", response_model=SubscriptionOut)
def cancel_subscription(sub_id: str, body: CancelRequest, work: Write, who: Who) -> SubscriptionOut:
    """Ends a subscription now (with a prorated credit) or at the end of its period."""
    return SubscriptionOut.of(subscriptions.cancel(work, who, sub_id, timing=body.timing))
