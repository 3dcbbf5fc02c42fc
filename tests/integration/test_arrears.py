"""Graded arrears on SQLite and PostgreSQL: a prepaid debt has a grace period in which
usage goes on, then a suspension, then a termination; each step is an audit entry, a
webhook and a mail, once; paying the debt restores access at once; a plan can carry its
own periods."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from billfold import alerts, arrears, authorizations, catalog, metering, parties, prepaid
from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Principal
from billfold.core.context import Context
from billfold.domain.errors import InvalidRequest
from tests.integration.helpers import funded_user, metered_catalog, subscribe

PLAN = {
    "code": "maps-payg",
    "name": "Maps",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "1"}],
}


def _use(ctx: Context, me: Principal, user: str, n: int, tag: str, service: str = "maps") -> None:
    now = ctx.clock.now().isoformat()
    events = [
        {"id": f"{tag}{i}", "user": user, "service": service, "metric": "calls",
         "timestamp": now, "value": "1"}
        for i in range(n)
    ]  # fmt: skip
    assert metering.ingest(ctx, me, events).accepted == n


def _access(ctx: Context, user: str, service: str = "maps") -> tuple[bool, str]:
    found = ctx.run(authorizations.entitlements, SYSTEM, user, service)
    return found.has_access, found.reason


def _steps(ctx: Context, user: str) -> list[str]:
    found = ctx.run(alerts.list_alerts, SYSTEM)
    return sorted(a.type for a in found if a.type.startswith("arrears") and a.user_id == user)


def _mails(home: Path) -> int:
    folder = home / "mail"
    return len(list(folder.glob("*.eml"))) if folder.exists() else 0


def test_with_no_grace_a_debt_suspends_at_once_and_a_top_up_restores_it(
    ctx: Context, tmp_path: Path
) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "2")
    _use(ctx, me, user, 5, "a")  # 5 due, 2 paid: 3 owed.
    assert _access(ctx, user) == (False, "suspended")
    before = _mails(ctx.settings.home)
    assert arrears.review(ctx)["suspended"] == 1
    assert _steps(ctx, user) == ["arrears.grace", "arrears.suspended"]
    assert _mails(ctx.settings.home) == before + 2
    assert arrears.review(ctx) == dict.fromkeys(("grace", "suspended", "terminated", "cleared"), 0)
    ctx.run(parties.top_up, SYSTEM, user, amount="10")  # Pays the 3 first.
    assert _access(ctx, user) == (True, "ok")  # At once, before any review.
    assert arrears.review(ctx)["cleared"] == 1
    assert "arrears.cleared" in _steps(ctx, user)
    del tmp_path


def test_a_grace_period_lets_usage_go_on_then_suspends_then_terminates(
    ctx: Context, clock: TestClock
) -> None:
    ctx.settings.arrears_grace_hours = 24
    ctx.settings.arrears_terminate_days = 3
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "2")
    package = ctx.run(
        prepaid.create_package, me, code="p", name="P", service="maps", currency_code="USD",
        price="1", quantities={"calls": "5"}, validity_days=30,
    ).id  # fmt: skip
    _use(ctx, me, user, 5, "a")
    assert _access(ctx, user) == (True, "arrears_grace")
    assert arrears.review(ctx)["grace"] == 1
    _use(ctx, me, user, 2, "b")  # Usage goes on, and is charged (to the debt).
    assert ctx.run(parties.get_balance, SYSTEM, user).receivable == Decimal(5)
    clock.advance(hours=25)
    assert _access(ctx, user) == (False, "suspended")
    declined = ctx.run(
        authorizations.authorize, me, user_ref=user, service_code="maps", metric_code="calls",
        quantity="1",
    )  # fmt: skip
    assert declined.status == "declined" and declined.reason == "suspended"
    with pytest.raises(InvalidRequest) as refused:
        ctx.run(prepaid.buy_package, SYSTEM, user, package)
    assert refused.value.code == "account_suspended"
    assert arrears.review(ctx)["suspended"] == 1
    clock.advance(days=3)
    assert arrears.review(ctx)["terminated"] == 1
    assert _steps(ctx, user) == ["arrears.grace", "arrears.suspended", "arrears.terminated"]
    subs = ctx.run(_subscription_states, user)
    assert subs == ["canceled"]
    # The history stays: the usage records are still there.
    from billfold.metering.records import list_records

    assert ctx.read(list_records, SYSTEM, user_id=user)


def _subscription_states(work: object, user: str) -> list[str]:
    from sqlalchemy import select

    from billfold.store.tables import subscriptions

    return list(
        work.conn.execute(  # type: ignore[attr-defined]
            select(subscriptions.c.status).where(subscriptions.c.user_id == user)
        ).scalars()
    )


def test_a_plan_can_carry_its_own_grace(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    ctx.run(catalog.create_service, me, code="geo", name="Geo")
    ctx.run(catalog.create_metric, me, "geo", code="calls", name="Calls", aggregation="count")
    ctx.run(
        catalog.create_plan, me,
        {**PLAN, "code": "geo-payg", "service": "geo", "arrears": {"grace_hours": 48}},
    )  # fmt: skip
    user = funded_user(ctx, 1, "1")
    subscribe(ctx, user, "geo")
    _use(ctx, me, user, 3, "a")
    assert _access(ctx, user, "maps") == (False, "suspended")  # The platform's: no grace.
    assert _access(ctx, user, "geo") == (True, "arrears_grace")  # Its own: 48 hours.
    with pytest.raises(InvalidRequest):
        ctx.run(
            catalog.create_plan, me,
            {**PLAN, "code": "bad", "service": "geo", "arrears": {"grace_hours": -1}},
        )  # fmt: skip
