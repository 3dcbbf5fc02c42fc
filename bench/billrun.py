"""Bill run cost per subscription, at two sizes, against the raw insert of invoice rows.

Each size gets a new database holding N postpaid monthly subscriptions whose November
period has just ended (rows inserted in bulk; only the bill run is timed). The bill run
then, for every subscription: locks it, finalizes and numbers November's invoice (gap-free
counter), opens December's invoice with its fee line, and posts the fee to the user's
receivable, split between the provider and the platform, with the ledger's locks,
hash chain and balance checks. The baseline, measured in the same run and database, is a
plain executemany INSERT of the same number of invoice rows (one transaction per 1,000),
the floor for writing one row per subscription.

Cost should grow linearly: the time per subscription at 100,000 should be close to the
time at 10,000.

Usage: python bench/billrun.py [--sizes 10000,100000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from sqlalchemy import delete

from billfold import catalog, parties
from billfold.clock import TestClock
from billfold.config import Settings
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.crypto import Cipher
from billfold.invoicing import billing, billing_key
from billfold.store.bulk import db_datetime, insert_rows
from billfold.store.db import Database
from billfold.store.ledger_tables import accounts
from billfold.store.migrate import upgrade
from billfold.store.tables import (
    invoice_lines,
    invoices,
    plans,
    subscription_phases,
    subscriptions,
    users,
)
from common import database

SECRET = base64.urlsafe_b64encode(b"b" * 32).decode()
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
CHUNK = 1000
console = Console()


def context(url: str, home: Path, clock: TestClock) -> Context:
    db = Database(url)
    upgrade(db.engine)
    settings = Settings(home=home, database_url=url, secret_key=SECRET)
    return Context(
        db=db, cipher=Cipher(base64.urlsafe_b64decode(SECRET)), settings=settings, clock=clock
    )


def populate(ctx: Context, count: int) -> None:
    """N postpaid users, each on the monthly plan since Nov 1, November's draft invoice."""
    provider = ctx.run(
        parties.create_provider, SYSTEM, name="P", email="p@p.io", commission_rate="0.2"
    )
    me = Principal("k", Role.PROVIDER, provider_id=provider.id)
    service = ctx.run(catalog.create_service, me, code="maps", name="Maps")
    ctx.run(catalog.create_metric, me, "maps", code="calls", name="Calls", aggregation="count")
    plan = ctx.run(
        catalog.create_plan,
        me,
        {
            "code": "monthly",
            "name": "Monthly",
            "service": "maps",
            "currency": "USD",
            "interval": "month",
            "fixed_fee": "30",
            "fee_timing": "advance",
            "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.01"}],
        },
    )
    name = ctx.cipher.encrypt("Bench user", context="users.name")
    with ctx.db.unit_of_work() as uow:
        conn = uow.conn
        plan_id = conn.execute(plans.select().where(plans.c.code == plan.code)).one().id
        start, end, now = (db_datetime(conn, t) for t in (START, END, START))
        for offset in range(0, count, CHUNK):
            ids = range(offset, min(offset + CHUNK, count))
            insert_rows(
                conn,
                users,
                (
                    "id",
                    "name_enc",
                    "email_enc",
                    "email_index",
                    "currency",
                    "billing_mode",
                    "credit_limit",
                    "status",
                    "created_at",
                ),
                [
                    (f"usr_{n:08d}", name, name, f"ix{n}", "USD", "postpaid", 0, "active", now)
                    for n in ids
                ],
            )
            # Every user has a wallet and a receivable from sign-up (parties.create_user).
            insert_rows(
                conn,
                accounts,
                (
                    "owner_type",
                    "owner_id",
                    "kind",
                    "currency",
                    "posted",
                    "held",
                    "floor",
                    "created_at",
                ),
                [
                    ("user", f"usr_{n:08d}", kind, "USD", 0, 0, floor, now)
                    for n in ids
                    for kind, floor in (("wallet", 0), ("receivable", None))
                ],
            )
            insert_rows(
                conn,
                subscriptions,
                (
                    "id",
                    "user_id",
                    "provider_id",
                    "service_id",
                    "plan_id",
                    "status",
                    "interval",
                    "interval_count",
                    "billing_anchor",
                    "currency",
                    "started_at",
                    "billing_origin",
                    "current_period_start",
                    "current_period_end",
                    "cancel_at_period_end",
                    "created_at",
                    "updated_at",
                ),
                [
                    (
                        f"sub_{n:08d}",
                        f"usr_{n:08d}",
                        provider.id,
                        service.id,
                        plan_id,
                        "active",
                        "month",
                        1,
                        "calendar",
                        "USD",
                        start,
                        start,
                        start,
                        end,
                        0,
                        now,
                        now,
                    )
                    for n in ids
                ],
            )
            insert_rows(
                conn,
                subscription_phases,
                ("subscription_id", "plan_id", "starts_at"),
                [(f"sub_{n:08d}", plan_id, start) for n in ids],
            )
            insert_rows(
                conn,
                invoices,
                (
                    "id",
                    "billing_key",
                    "user_id",
                    "subscription_id",
                    "provider_id",
                    "currency",
                    "billing_mode",
                    "period_start",
                    "period_end",
                    "status",
                    "subtotal",
                    "tax",
                    "total",
                    "amount_paid",
                    "amount_credited",
                    "tax_rate",
                    "commission_rate",
                    "created_at",
                ),
                [
                    (
                        f"in_{n:08d}",
                        billing_key(f"sub_{n:08d}", START),
                        f"usr_{n:08d}",
                        f"sub_{n:08d}",
                        provider.id,
                        "USD",
                        "postpaid",
                        start,
                        end,
                        "draft",
                        0,
                        0,
                        0,
                        0,
                        0,
                        "0",
                        "0.2",
                        now,
                    )
                    for n in ids
                ],
            )
        uow.commit()


def analyze(ctx: Context) -> None:
    """Planner statistics, as a live database has them (autovacuum would take a while to
    notice a bulk load, and without them PostgreSQL scans whole tables for IN lists)."""
    with ctx.db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def raw_insert(ctx: Context, count: int) -> float:
    """Seconds to INSERT `count` invoice rows with executemany, 1,000 per transaction."""
    began = time.perf_counter()
    for offset in range(0, count, CHUNK):
        with ctx.db.unit_of_work() as uow:
            conn = uow.conn
            now = db_datetime(conn, END)
            insert_rows(
                conn,
                invoices,
                (
                    "id",
                    "billing_key",
                    "user_id",
                    "currency",
                    "billing_mode",
                    "period_start",
                    "period_end",
                    "status",
                    "subtotal",
                    "tax",
                    "total",
                    "amount_paid",
                    "amount_credited",
                    "tax_rate",
                    "commission_rate",
                    "created_at",
                ),
                [
                    (
                        f"raw_{n:08d}",
                        f"raw:{n}",
                        f"usr_{n:08d}",
                        "USD",
                        "postpaid",
                        now,
                        now,
                        "finalized",
                        3000000000,
                        0,
                        3000000000,
                        0,
                        0,
                        "0",
                        "0.2",
                        now,
                    )
                    for n in range(offset, min(offset + CHUNK, count))
                ],
            )
            uow.commit()
    elapsed = time.perf_counter() - began
    with ctx.db.unit_of_work() as uow:
        uow.conn.execute(delete(invoices).where(invoices.c.id.like("raw_%")))
        uow.commit()
    return elapsed


def run(backend: str, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder, database(backend, Path(folder)) as url:
        clock = TestClock(START)
        ctx = context(url, Path(folder), clock)
        populate(ctx, count)
        analyze(ctx)
        raw = raw_insert(ctx, count)
        clock.set(END + timedelta(seconds=1))
        with Progress(
            TextColumn(f"{backend} {count:,}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("bill run", total=count)
            began = time.perf_counter()
            totals = billing.bill_run(
                ctx,
                progress=lambda _stage, done, total: bar.update(task, completed=done, total=total),
            )
            elapsed = time.perf_counter() - began
        assert totals["subscriptions_processed"] == count, totals
        assert totals["invoices_finalized"] == count and totals["periods_opened"] == count
        with ctx.db.unit_of_work(read_only=True) as uow:
            lines = uow.conn.execute(invoice_lines.select().limit(1)).all()
        assert lines
        ctx.db.dispose()
        return {"bill_run_s": elapsed, "raw_s": raw}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    table = Table(title="billfold bill run: renewal of N monthly subscriptions")
    for column in (
        "backend",
        "N",
        "bill run s",
        "µs / subscription",
        "raw insert µs / row",
        "bill run ÷ raw (time)",
    ):
        table.add_column(column, justify="right")
    results: dict[str, dict[str, dict[str, float]]] = {}
    for backend in args.backends.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            figures = run(backend, size)
            results.setdefault(backend, {})[str(size)] = figures
            per = figures["bill_run_s"] / size * 1e6
            raw = figures["raw_s"] / size * 1e6
            table.add_row(
                backend,
                f"{size:,}",
                f"{figures['bill_run_s']:.1f}",
                f"{per:,.0f}",
                f"{raw:,.1f}",
                f"{per / raw:.1f}",
            )
    console.print(table)
    for backend, sizes in results.items():
        per = {s: f["bill_run_s"] / int(s) for s, f in sizes.items()}
        if len(per) > 1:
            small, large = (per[s] for s in sorted(per, key=int)[:: len(per) - 1])
            console.print(
                f"{backend}: time per subscription, largest ÷ smallest size = "
                f"{large / small:.2f} (1.0 is linear)"
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
