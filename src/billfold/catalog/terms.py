"""The terms a user is on: which plan prices their usage of a service at a moment, and
in which usage period.

One answer for every caller: metering rates an event in the period given here, and an
authorization or an entitlement prices the same usage in the same period, so what a
gateway is told a call will cost is what it is then charged.

Usage counts only inside a subscription phase (customers by consent,
billfold.catalog.customers): the subscription's plan prices it in its billing period
(the trial is one), cut where the phase starts or ends, so after an immediate plan change
the new plan's usage starts a period of its own. A pay-as-you-go subscription (interval
`none`) has no billing periods: its usage counts in calendar months (UTC), cut the same
way. Outside every phase there are no terms, and the usage is not the provider's to bill.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, select

from billfold.core.context import Work
from billfold.domain.billing import Schedule
from billfold.domain.periods import calendar_period
from billfold.store.prepared import Prepared
from billfold.store.tables import subscription_phases, subscriptions

Period = tuple[datetime, datetime]
Phases = Sequence[tuple[Any, Any]]


@dataclass(frozen=True, slots=True)
class PlanAt:
    """Which plan prices a user's usage of a service at an instant, and in which period."""

    plan_id: str
    period_start: datetime
    period_end: datetime
    subscription_id: str
    status: str


def subscription_period(
    sub: Any, phase_start: datetime, phase_end: datetime | None, moment: datetime
) -> tuple[datetime, datetime]:
    """The usage period of `moment` under a subscription phase: the billing period
    (the trial is one; a calendar month for pay-as-you-go), cut where the phase starts
    or ends."""
    if sub.interval == "none":
        start, end = calendar_period("none", 1, moment)
    elif sub.trial_end is not None and moment < sub.trial_end:
        start, end = sub.started_at, sub.trial_end
    else:
        schedule = Schedule(
            sub.interval, sub.interval_count, sub.billing_anchor, sub.billing_origin
        )
        start, end = schedule.billing_period(moment)
    start = max(start, phase_start)
    if phase_end is not None:
        end = min(end, phase_end)
    return start, end


# Built once: authorizations and metering ask this on every request (DECISIONS 102).
_PHASE_ROWS = (
    select(
        subscriptions.c.id,
        subscriptions.c.user_id,
        subscriptions.c.service_id,
        subscriptions.c.status,
        subscriptions.c.interval,
        subscriptions.c.interval_count,
        subscriptions.c.billing_anchor,
        subscriptions.c.billing_origin,
        subscriptions.c.started_at,
        subscriptions.c.trial_end,
        subscription_phases.c.plan_id,
        subscription_phases.c.starts_at,
        subscription_phases.c.ends_at,
    )
    .join(subscription_phases, subscription_phases.c.subscription_id == subscriptions.c.id)
    .order_by(subscription_phases.c.starts_at)
)
_PHASES = _PHASE_ROWS.where(subscriptions.c.user_id.in_(bindparam("user_ids", expanding=True)))
# One user's (an authorization's, a single event's): prepared (docs/DECISIONS.md, 118).
_PHASES_OF = Prepared(_PHASE_ROWS.where(subscriptions.c.user_id == bindparam("user_id")))


def plans_at(
    work: Work, pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], list[tuple[Any, Any]]]:
    """For (user id, service id) pairs: their subscriptions' phases, newest last."""
    found: dict[tuple[str, str], list[tuple[Any, Any]]] = {}
    if not pairs:
        return found
    user_ids = sorted({user for user, _ in pairs})
    for row in _phase_rows(work, user_ids):
        key = (row.user_id, row.service_id)
        if key in pairs:
            found.setdefault(key, []).append((row, row))
    return found


def _phase_rows(work: Work, user_ids: list[str]) -> Iterator[Any]:
    if len(user_ids) == 1:
        yield from _PHASES_OF.rows(work.conn, {"user_id": user_ids[0]})
        return
    for offset in range(0, len(user_ids), 500):
        yield from work.conn.execute(_PHASES, {"user_ids": user_ids[offset : offset + 500]})


def phase_for(phases: list[tuple[Any, Any]], moment: datetime) -> PlanAt | None:
    """The subscription phase in force at `moment`, if any."""
    for sub, phase in reversed(phases):
        if phase.starts_at <= moment and (phase.ends_at is None or moment < phase.ends_at):
            start, end = subscription_period(sub, phase.starts_at, phase.ends_at, moment)
            return PlanAt(phase.plan_id, start, end, sub.id, sub.status)
    return None


@dataclass(frozen=True, slots=True)
class Terms:
    """The plan that prices usage at a moment and the usage period it counts in."""

    plan_id: str | None
    period: Period | None
    """None outside every subscription phase: the user was not a customer then."""
    subscription: PlanAt | None


NO_TERMS: Final = Terms(None, None, None)


def terms_at(phases: Phases | None, moment: datetime) -> Terms:
    """The terms in force at `moment`, given the user's subscription phases for the
    service (oldest first)."""
    found = phase_for(list(phases), moment) if phases else None
    if found is None:
        return NO_TERMS
    return Terms(found.plan_id, (found.period_start, found.period_end), found)


class TermsFinder:
    """`terms_at` for many moments of one user and service, as a batch of events asks.

    When the phases do not overlap (the rule: one live subscription per user and
    service), every moment inside the usage period last found has that same answer, so
    it is given again without the search; overlapping phases are searched every time.
    """

    __slots__ = ("_disjoint", "_last", "_phases")

    def __init__(self, phases: Phases | None) -> None:
        self._phases = list(phases or ())
        self._disjoint = all(
            earlier.ends_at is not None and earlier.ends_at <= later.starts_at
            for (_, earlier), (_, later) in zip(self._phases, self._phases[1:], strict=False)
        )
        self._last: Terms | None = None

    @property
    def disjoint(self) -> bool:
        """Whether every moment in a found usage period has that same answer."""
        return self._disjoint

    def at(self, moment: datetime) -> Terms:
        last = self._last
        if (
            self._disjoint
            and last is not None
            and last.period is not None
            and last.period[0] <= moment < last.period[1]
        ):
            return last
        found = terms_at(self._phases, moment)
        self._last = found
        return found
