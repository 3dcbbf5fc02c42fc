"""The plan simulator: a past month's recorded usage re-priced under a draft plan.

For every user whose usage in the month was rated under the plan, the same usage (its
events, in time order) is quoted under the plan as it was in force and under the draft,
with the same pricing code that rates live usage, so a provider sees what a price change
would do before making it. Nothing is written.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import and_, select

from billfold.catalog import load_plan_row, plan_in_force
from billfold.core.access import Principal, Role, require_role
from billfold.core.context import Work
from billfold.domain.errors import InvalidRequest
from billfold.domain.money import Currency
from billfold.domain.periods import parse_period
from billfold.domain.pricing import Event, MetricUsage, Usage, parse_plan, quote
from billfold.store.tables import metrics, usage_events, usage_periods

EVENT_AGGREGATIONS = ("count", "sum")


@dataclass
class UserImpact:
    user_id: str
    current: Decimal
    draft: Decimal

    @property
    def difference(self) -> Decimal:
        return self.draft - self.current


@dataclass
class Simulation:
    plan: str
    period: str
    currency: Currency
    users: list[UserImpact]

    @property
    def current(self) -> Decimal:
        return sum((u.current for u in self.users), Decimal(0))

    @property
    def draft(self) -> Decimal:
        return sum((u.draft for u in self.users), Decimal(0))


def simulate(
    work: Work, principal: Principal, plan_code: str, draft: object, period: str
) -> Simulation:
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    start, end = parse_period(period)
    proposed = parse_plan(draft)
    row = load_plan_row(work, principal, plan_code)
    current = plan_in_force(work, row.id, start)
    if proposed.service != current.service or proposed.currency != current.currency:
        raise InvalidRequest(
            "the draft must price the same service in the same currency",
            code="draft_mismatch",
            param="plan",
        )
    names = {
        r.id: (r.code, r.aggregation)
        for r in work.conn.execute(
            select(metrics.c.id, metrics.c.code, metrics.c.aggregation).where(
                metrics.c.service_id == row.service_id
            )
        )
    }
    events: dict[str, dict[str, list[Event]]] = defaultdict(lambda: defaultdict(list))
    given: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    # Events rated under this plan: their usage period row names the plan.
    for ev in work.conn.execute(
        select(
            usage_events.c.user_id,
            usage_events.c.metric_id,
            usage_events.c.occurred_at,
            usage_events.c.value,
        )
        .join(
            usage_periods,
            and_(
                usage_periods.c.user_id == usage_events.c.user_id,
                usage_periods.c.metric_id == usage_events.c.metric_id,
                usage_periods.c.period_start == usage_events.c.period_start,
            ),
        )
        .where(
            usage_periods.c.plan_id == row.id,
            usage_events.c.occurred_at >= start,
            usage_events.c.occurred_at < end,
        )
        .order_by(usage_events.c.occurred_at, usage_events.c.seq)
    ):
        code, aggregation = names[ev.metric_id]
        if aggregation in EVENT_AGGREGATIONS:
            events[ev.user_id][code].append(Event(code, Decimal(ev.value), ev.occurred_at))
        else:
            events[ev.user_id].setdefault(code, [])
    # Metrics that are not sums of events (max, latest, unique) are priced on the
    # quantity metering kept for each period.
    for period_row in work.conn.execute(
        select(usage_periods.c.user_id, usage_periods.c.metric_id, usage_periods.c.quantity).where(
            usage_periods.c.plan_id == row.id,
            usage_periods.c.period_start >= start,
            usage_periods.c.period_start < end,
        )
    ):
        code, aggregation = names[period_row.metric_id]
        if aggregation not in EVENT_AGGREGATIONS:
            given[period_row.user_id][code] += Decimal(period_row.quantity)
    impacts = []
    for user_id in sorted(set(events) | set(given)):
        codes = set(events[user_id]) | set(given[user_id])
        usage = Usage(
            {
                code: MetricUsage(
                    tuple(events[user_id].get(code, ())), given[user_id].get(code, Decimal(0))
                )
                for code in codes
            }
        )
        impacts.append(
            UserImpact(user_id, quote(current, usage).total, quote(proposed, usage).total)
        )
    return Simulation(plan_code, period, current.currency, impacts)
