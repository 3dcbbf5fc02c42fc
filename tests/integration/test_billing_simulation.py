"""Two years of 1,000 subscriptions on the test clock, and a bill run killed midway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from billfold import catalog, parties, subscriptions
from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.domain.billing import Schedule
from billfold.invoicing import billing
from billfold.ledger.verify import verify
from billfold.parties.profile import set_profile
from billfold.store.tables import invoice_lines, invoices
from billfold.store.tables import subscriptions as subscription_table
from tests.conftest import TEST_SECRET, make_context

# (interval, interval_count, anchors) the simulation mixes.
KINDS = [
    ("day", 7, ("calendar", "anniversary")),
    ("week", 1, ("calendar", "anniversary")),
    ("week", 2, ("calendar", "anniversary")),
    ("month", 1, ("calendar", "anniversary", "31", "15")),
    ("quarter", 1, ("calendar", "anniversary", "30")),
    ("year", 1, ("calendar", "anniversary", "29")),
]


def _provider(ctx: Context) -> Principal:
    provider = ctx.run(
        parties.create_provider, SYSTEM, name="P", email="p@p.io", commission_rate="0.3"
    )
    me = Principal("k", Role.PROVIDER, provider_id=provider.id)
    ctx.run(catalog.create_service, me, code="maps", name="Maps")
    ctx.run(catalog.create_metric, me, "maps", code="calls", name="Calls", aggregation="count")
    for interval, count, _ in KINDS:
        for timing in ("advance", "arrears"):
            ctx.run(
                catalog.create_plan,
                me,
                {
                    "code": f"{interval}-{count}-{timing}",
                    "name": f"{interval} x{count}",
                    "service": "maps",
                    "currency": "USD",
                    "interval": interval,
                    "interval_count": count,
                    "fixed_fee": "9.99",
                    "fee_timing": timing,
                    "minimum": "12" if timing == "arrears" else "0",
                    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.01"}],
                },
            )
    return me


def expected_periods(sub: subscriptions.SubscriptionView, until: datetime) -> list[datetime]:
    """Period starts, computed independently of the engine from the schedule."""
    schedule = Schedule(sub.interval, sub.interval_count, sub.billing_anchor, sub.started_at)
    starts = [sub.started_at]
    while True:
        end = schedule.billing_period(starts[-1])[1]
        if end > until:
            return starts
        starts.append(end)


# About 3 minutes on a slow 2-core machine: room beyond the suite's 300 s per test.
@pytest.mark.timeout(900)
@pytest.mark.slow
def test_two_years_of_a_thousand_subscriptions(sqlite_ctx: Context, clock: TestClock) -> None:
    # On SQLite only, to keep `make test` short; tests/integration/test_subscriptions.py
    # runs the same engine on PostgreSQL.
    ctx = sqlite_ctx
    _provider(ctx)
    subs = []
    for n in range(1000):
        interval, count, anchors = KINDS[n % len(KINDS)]
        anchor = anchors[(n // len(KINDS)) % len(anchors)]
        mode = "postpaid" if n % 3 == 0 else "prepaid"
        user = ctx.run(
            parties.create_user,
            SYSTEM,
            name=f"U{n}",
            email=f"u{n}@u.io",
            currency_code="USD",
            billing_mode=mode,
        )
        if mode == "postpaid":  # These customers pay their invoices from their cash.
            ctx.run(set_profile, SYSTEM, user.id, {"autopay_invoices": True})
        ctx.run(parties.top_up, SYSTEM, user.id, amount="5000")
        timing = "arrears" if n % 2 else "advance"
        subs.append(
            ctx.run(
                subscriptions.create,
                SYSTEM,
                user_ref=user.id,
                plan_code=f"{interval}-{count}-{timing}",
                billing_anchor=anchor,
            )
        )
        if n % 97 == 0:
            clock.advance(hours=7)  # Starts spread over the first days.
    end = datetime(2028, 11, 1, tzinfo=UTC)
    while clock.now() < end:
        clock.set(min(clock.now() + timedelta(days=9), end))
        billing.bill_run(ctx)
    assert billing.bill_run(ctx).get("subscriptions_processed", 0) == 0
    with ctx.db.unit_of_work(read_only=True) as uow:
        starts: dict[str, list[datetime]] = {}
        for row in uow.conn.execute(
            select(invoices.c.subscription_id, invoices.c.period_start).order_by(
                invoices.c.subscription_id, invoices.c.period_start
            )
        ):
            starts.setdefault(row.subscription_id, []).append(row.period_start)
        # Every invoice's lines add up to its subtotal and tax, and total = subtotal + tax.
        mismatched = uow.conn.execute(
            select(func.count()).select_from(
                select(invoices.c.id)
                .join(invoice_lines, invoice_lines.c.invoice_id == invoices.c.id, isouter=True)
                .group_by(invoices.c.id, invoices.c.subtotal, invoices.c.tax, invoices.c.total)
                .having(
                    (func.coalesce(func.sum(invoice_lines.c.amount), 0) != invoices.c.subtotal)
                    | (func.coalesce(func.sum(invoice_lines.c.tax), 0) != invoices.c.tax)
                    | (invoices.c.total != invoices.c.subtotal + invoices.c.tax)
                )
                .subquery()
            )
        ).scalar_one()
        numbers = uow.conn.execute(
            select(func.count(invoices.c.number), func.count(func.distinct(invoices.c.number)))
        ).one()
    assert mismatched == 0
    assert numbers[0] == numbers[1]  # Numbers are unique.
    total = 0
    for sub in subs:
        # Every period from the start to now is billed exactly once.
        assert starts[sub.id] == expected_periods(sub, end), sub
        total += len(starts[sub.id])
    assert total > 20_000
    assert ctx.run(verify, SYSTEM).ok


def _due_subscriptions(url: str, home: Path, count: int) -> None:
    """`count` daily subscriptions started 40 days ago, none billed since."""
    past = TestClock(datetime.now(UTC) - timedelta(days=40))
    ctx = make_context(url, home, past)
    try:
        me = _provider(ctx)
        del me
        for n in range(count):
            user = ctx.run(
                parties.create_user,
                SYSTEM,
                name=f"K{n}",
                email=f"k{n}@u.io",
                currency_code="USD",
                billing_mode="postpaid",
            )
            ctx.run(
                subscriptions.create,
                SYSTEM,
                user_ref=user.id,
                plan_code="day-7-advance",
                billing_anchor="anniversary",
            )
    finally:
        ctx.db.dispose()


def _count(url: str, home: Path) -> tuple[int, int]:
    ctx = make_context(url, home)
    try:
        with ctx.db.unit_of_work(read_only=True) as uow:
            billed = uow.conn.execute(select(func.count()).select_from(invoices)).scalar_one()
            subs = uow.conn.execute(
                select(func.count()).select_from(subscription_table)
            ).scalar_one()
        return int(billed), int(subs)
    finally:
        ctx.db.dispose()


@pytest.mark.slow
def test_a_killed_bill_run_is_completed_by_the_next(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    _due_subscriptions(sqlite_database_url, tmp_path, 1500)
    env = os.environ | {
        "BILLFOLD_DATABASE_URL": sqlite_database_url,
        "BILLFOLD_HOME": str(tmp_path),
        "BILLFOLD_SECRET_KEY": TEST_SECRET,
        "BILLFOLD_LOG_JSON": "1",
    }
    command = [sys.executable, "-m", "billfold.cli", "bill-run"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    before = _count(sqlite_database_url, tmp_path)[0]
    deadline = time.monotonic() + 120
    while _count(sqlite_database_url, tmp_path)[0] <= before + 300:
        assert first.poll() is None, "the bill run finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    midway = _count(sqlite_database_url, tmp_path)[0]
    second = subprocess.run(command, env=env, capture_output=True, timeout=300, check=True)
    assert b"subscriptions_processed" in second.stdout
    ctx = make_context(sqlite_database_url, tmp_path)
    try:
        views = ctx.run(subscriptions.list_for, SYSTEM, user_ref=None, limit=1000, after=None)[0]
        views += ctx.run(
            subscriptions.list_for, SYSTEM, user_ref=None, limit=1000, after=views[-1].id
        )[0]
        assert len(views) == 1500
        with ctx.db.unit_of_work(read_only=True) as uow:
            starts: dict[str, list[datetime]] = {}
            for row in uow.conn.execute(
                select(invoices.c.subscription_id, invoices.c.period_start).order_by(
                    invoices.c.period_start
                )
            ):
                starts.setdefault(row.subscription_id, []).append(row.period_start)
        now = datetime.now(UTC)
        for view in views:
            assert starts[view.id] == expected_periods(view, now)  # None missing, none twice.
        assert before < midway < sum(len(v) for v in starts.values())
        assert ctx.run(verify, SYSTEM).ok
    finally:
        ctx.db.dispose()
