"""Subscriptions: creating, changing and cancelling plans, with proration."""

from billfold.subscriptions.service import (
    MAX_BACKDATE,
    TIMINGS,
    SubscriptionView,
    cancel,
    change_plan,
    create,
    get,
    list_for,
)

__all__ = [
    "MAX_BACKDATE",
    "TIMINGS",
    "SubscriptionView",
    "cancel",
    "change_plan",
    "create",
    "get",
    "list_for",
]
