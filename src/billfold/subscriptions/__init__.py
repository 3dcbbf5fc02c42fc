"""Subscriptions: creating, changing and cancelling plans, with proration."""

from billfold.subscriptions.service import (
    MAX_BACKDATE,
    TIMINGS,
    PlanAt,
    SubscriptionView,
    cancel,
    change_plan,
    create,
    get,
    list_for,
    phase_for,
    plan_for_user,
    plans_at,
    subscription_period,
)

__all__ = [
    "MAX_BACKDATE",
    "TIMINGS",
    "PlanAt",
    "SubscriptionView",
    "cancel",
    "change_plan",
    "create",
    "get",
    "list_for",
    "phase_for",
    "plan_for_user",
    "plans_at",
    "subscription_period",
]
