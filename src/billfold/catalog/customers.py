"""Customers by consent: whom a provider may act on.

A user becomes a provider's customer by subscribing to one of the provider's plans
(pay-as-you-go plans included), and stays one while such a subscription is current. A
provider key acts only on its customers: everything else about a user is, to that
provider, as if the user did not exist, so the answer is the 404 an unknown user gets.

Usage is judged by its time instead (billfold.catalog.terms): an event counts only when
a subscription to a plan of its service was in force at the event's timestamp.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlalchemy import bindparam, select

from billfold.core.access import Principal, Role, require_user_access
from billfold.core.context import Work
from billfold.domain.errors import NotFound
from billfold.store.prepared import Prepared, any_of, one_of
from billfold.store.tables import subscriptions

CURRENT: Final = ("trialing", "active", "past_due", "suspended")
"""Subscription statuses that make (and keep) a user a customer."""


_CURRENT = select(subscriptions.c.id).where(
    subscriptions.c.user_id == bindparam("user_id"),
    subscriptions.c.provider_id == bindparam("provider_id"),
    one_of(subscriptions.c.status, CURRENT),
)
# Asked on every provider's charge and authorization (docs/DECISIONS.md, 118).
_CURRENT_WITH = Prepared(_CURRENT.limit(1))
_CURRENT_TO = Prepared(
    _CURRENT.where(subscriptions.c.service_id == bindparam("service_id")).limit(1)
)


def is_customer(
    work: Work, user_id: str, provider_id: str, *, service_id: str | None = None
) -> bool:
    """Whether the user holds a current subscription with the provider (to that service)."""
    values = {"user_id": user_id, "provider_id": provider_id}
    if service_id is None:
        return _CURRENT_WITH.first(work.conn, values) is not None
    values["service_id"] = service_id
    return _CURRENT_TO.first(work.conn, values) is not None


_CURRENT_OF_USERS_PG = Prepared(
    select(subscriptions.c.user_id, subscriptions.c.provider_id, subscriptions.c.service_id).where(
        any_of(subscriptions.c.user_id, "user_ids"),
        one_of(subscriptions.c.status, CURRENT),
    )
)


def current_subscriptions(work: Work, user_ids: Sequence[str]) -> set[tuple[str, str, str]]:
    """(user, provider, service) of every current subscription of these users, in one
    statement (PostgreSQL): what `is_customer` asks, for many users at once."""
    rows = _CURRENT_OF_USERS_PG.rows(work.conn, {"user_ids": list(user_ids)})
    return {(row.user_id, row.provider_id, row.service_id) for row in rows}


def was_customer(work: Work, user_id: str, provider_id: str) -> bool:
    """Whether the user ever subscribed with the provider: the provider may read its own
    records of a former customer (their invoices, their subscriptions), never act."""
    query = select(subscriptions.c.id).where(
        subscriptions.c.user_id == user_id, subscriptions.c.provider_id == provider_id
    )
    return work.conn.execute(query.limit(1)).first() is not None


def require_customer(
    work: Work,
    principal: Principal,
    user_id: str,
    *,
    asked: str | None = None,
    service_id: str | None = None,
    known: bool | None = None,
) -> None:
    """Admins act on every user, a user on itself, and a provider on its customers only
    (`known`: whether the user is, when the caller has read it already).

    Anyone else gets the 404 of an unknown user, named as asked: a provider learns
    nothing about a user who has not chosen it.
    """
    if principal.role == Role.PROVIDER:
        assert principal.provider_id is not None
        if known is None:
            known = is_customer(work, user_id, principal.provider_id, service_id=service_id)
        if known:
            return
        raise NotFound(f"no user {asked or user_id}", code="user_not_found", param="user")
    require_user_access(principal, user_id, asked=asked)


def hides_personal_data(principal: Principal) -> bool:
    """Whether answers to this principal leave out names, emails and balances."""
    return principal.role == Role.PROVIDER
