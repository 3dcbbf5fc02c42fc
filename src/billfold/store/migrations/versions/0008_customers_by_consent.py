"""customers by consent: implied relationships become pay-as-you-go subscriptions

Before this revision a provider could meter and charge any user; a user's pay-as-you-go
usage needed no subscription. Now a provider acts only on users who subscribed to one of
its plans. So that upgrading breaks no one, every relationship the data already shows (a
user with recorded usage of a service, or one-off charges of a provider, and no live
subscription there) becomes a pay-as-you-go subscription, started when that usage or
those charges began (or when the user's last subscription to the service ended, if
later, so that no usage period changes its boundaries).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 12:30:00.000000
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import billfold.store.types
from billfold.ids import new_id

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = ("trialing", "active", "past_due", "suspended")
T = billfold.store.types.UTCDateTime

subscriptions = sa.table(
    "subscriptions",
    *(sa.column(n) for n in ("id", "user_id", "provider_id", "service_id", "plan_id")),
    *(sa.column(n) for n in ("status", "interval", "billing_anchor", "currency")),
    sa.column("interval_count", sa.Integer()),
    sa.column("cancel_at_period_end", sa.Integer()),
    *(
        sa.column(n, T())
        for n in (
            "started_at",
            "trial_end",
            "billing_origin",
            "current_period_start",
            "current_period_end",
            "ended_at",
            "past_due_since",
            "next_retry_at",
            "created_at",
            "updated_at",
        )
    ),
    sa.column("pending_plan_id"),
)
phases = sa.table(
    "subscription_phases",
    sa.column("subscription_id"),
    sa.column("plan_id"),
    sa.column("starts_at", T()),
    sa.column("ends_at", T()),
)
usage = sa.table(
    "usage_periods",
    sa.column("user_id"),
    sa.column("metric_id"),
    sa.column("plan_id"),
    sa.column("period_start", T()),
)
metrics = sa.table("metrics", sa.column("id"), sa.column("service_id"))
services = sa.table(
    "services",
    sa.column("id"),
    sa.column("code"),
    sa.column("provider_id"),
    sa.column("default_plan_id"),
)
plans = sa.table("plans", sa.column("id"), sa.column("service_id"), sa.column("currency"))
versions = sa.table(
    "plan_versions", sa.column("plan_id"), sa.column("version"), sa.column("definition")
)
users = sa.table("users", sa.column("id"), sa.column("currency"))
transfers = sa.table(
    "transfers",
    sa.column("kind"),
    sa.column("user_id"),
    sa.column("provider_id"),
    sa.column("posted_at", T()),
)


def _payg_plans(conn: Any) -> dict[str, tuple[str, str]]:
    """plan id -> (service id, currency) of every plan whose latest version is
    pay-as-you-go (interval none)."""
    latest: dict[str, tuple[int, str]] = {}
    for row in conn.execute(
        sa.select(versions.c.plan_id, versions.c.version, versions.c.definition)
    ):
        if row.plan_id not in latest or row.version > latest[row.plan_id][0]:
            latest[row.plan_id] = (row.version, row.definition)
    owners = {r.id: (r.service_id, r.currency) for r in conn.execute(sa.select(plans))}
    found = {}
    for plan_id, (_, definition) in latest.items():
        if json.loads(definition).get("interval", "month") == "none" and plan_id in owners:
            found[plan_id] = owners[plan_id]
    return found


def upgrade() -> None:
    conn = op.get_bind()
    now = datetime.now(UTC)
    payg = _payg_plans(conn)
    service_rows = {r.id: r for r in conn.execute(sa.select(services))}
    currency_of = {r.id: r.currency for r in conn.execute(sa.select(users))}
    live: set[tuple[str, str]] = set()
    live_providers: set[tuple[str, str]] = set()
    ended: dict[tuple[str, str], datetime] = {}
    for row in conn.execute(sa.select(subscriptions)):
        if row.status in LIVE:
            live.add((row.user_id, row.service_id))
            live_providers.add((row.user_id, row.provider_id))
        elif row.ended_at is not None:
            key = (row.user_id, row.service_id)
            ended[key] = max(ended.get(key, row.ended_at), row.ended_at)

    def usable(plan_id: str | None, user_id: str) -> bool:
        return plan_id in payg and payg[plan_id][1] == currency_of.get(user_id)

    # (user, service) -> (first usage, the plan that priced the latest usage)
    pairs: dict[tuple[str, str], tuple[datetime, str]] = {}
    query = (
        sa.select(usage.c.user_id, metrics.c.service_id, usage.c.plan_id, usage.c.period_start)
        .join(metrics, metrics.c.id == usage.c.metric_id)
        .order_by(usage.c.period_start)
    )
    for row in conn.execute(query):
        key = (row.user_id, row.service_id)
        first, priced_by = pairs.get(key, (row.period_start, ""))
        if usable(row.plan_id, row.user_id):
            priced_by = row.plan_id  # Rows come oldest first: the latest such plan wins.
        pairs[key] = (first, priced_by)
    created: list[dict[str, Any]] = []
    for (user_id, service_id), (first, priced_by) in sorted(pairs.items()):
        service = service_rows.get(service_id)
        if (user_id, service_id) in live or service is None:
            continue
        plan_id = service.default_plan_id if usable(service.default_plan_id, user_id) else priced_by
        if not plan_id:
            continue
        start = max(first, ended.get((user_id, service_id), first))
        created.append(_subscription(user_id, service, plan_id, currency_of[user_id], start, now))
        live_providers.add((user_id, service.provider_id))
    created += _from_charges(conn, service_rows, currency_of, live_providers, usable, now)
    for values in created:
        conn.execute(subscriptions.insert().values(**values))
        conn.execute(
            phases.insert().values(
                subscription_id=values["id"],
                plan_id=values["plan_id"],
                starts_at=values["started_at"],
                ends_at=None,
            )
        )


def _from_charges(
    conn: Any,
    service_rows: dict[str, Any],
    currency_of: dict[str, str],
    live_providers: set[tuple[str, str]],
    usable: Any,
    now: datetime,
) -> list[dict[str, Any]]:
    """Users with one-off charges of a provider and no subscription with it: subscribed
    to the default plan of the provider's first service that has a pay-as-you-go one."""
    created: list[dict[str, Any]] = []
    charged: dict[tuple[str, str], datetime] = {}
    for row in conn.execute(
        sa.select(transfers.c.user_id, transfers.c.provider_id, sa.func.min(transfers.c.posted_at))
        .where(
            transfers.c.kind == "charge",
            transfers.c.user_id.is_not(None),
            transfers.c.provider_id.is_not(None),
        )
        .group_by(transfers.c.user_id, transfers.c.provider_id)
    ):
        charged[(row[0], row[1])] = row[2]
    for (user_id, provider_id), first in sorted(charged.items()):
        if (user_id, provider_id) in live_providers:
            continue
        choices = sorted(
            (s for s in service_rows.values() if s.provider_id == provider_id),
            key=lambda s: s.code,
        )
        service = next((s for s in choices if usable(s.default_plan_id, user_id)), None)
        if service is None:
            continue
        created.append(
            _subscription(
                user_id, service, service.default_plan_id, currency_of[user_id], first, now
            )
        )
        live_providers.add((user_id, provider_id))
    return created


def _subscription(
    user_id: str, service: Any, plan_id: str, currency: str, start: datetime, now: datetime
) -> dict[str, Any]:
    month_end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return {
        "id": new_id("sub"),
        "user_id": user_id,
        "provider_id": service.provider_id,
        "service_id": service.id,
        "plan_id": plan_id,
        "status": "active",
        "interval": "none",
        "interval_count": 1,
        "billing_anchor": "calendar",
        "currency": currency,
        "started_at": start,
        "trial_end": None,
        "billing_origin": start,
        "current_period_start": max(start, datetime(now.year, now.month, 1, tzinfo=UTC)),
        "current_period_end": month_end,
        "pending_plan_id": None,
        "cancel_at_period_end": 0,
        "ended_at": None,
        "past_due_since": None,
        "next_retry_at": None,
        "created_at": now,
        "updated_at": now,
    }


def downgrade() -> None:
    conn = op.get_bind()
    made = sa.select(subscriptions.c.id).where(subscriptions.c.interval == "none")
    conn.execute(phases.delete().where(phases.c.subscription_id.in_(made)))
    conn.execute(subscriptions.delete().where(subscriptions.c.interval == "none"))
