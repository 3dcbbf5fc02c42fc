"""Analytics queries over 10 million recorded usage events, against a raw scan of them.

Each backend gets a new database holding a catalog (4 providers, one service and two
metrics each, 2,000 users) and N usage events spread over 61 days (Oct 1 - Nov 30 2026),
bulk-loaded, with the rollups those events produce (per provider, service, metric and
quarter-hour, and revenue per provider, service and quarter-hour), as metering and the
folder keep them. Timed, each several times (median and p95):

- usage series: `analytics.usage_series` for one provider, 30 days, window day, by metric,
  in a non-UTC time zone (America/New_York);
- revenue report: `analytics.revenue_series` for the platform, one month, window month,
  by provider;
- raw scan: the same provider's 30 days of events grouped by day and metric straight from
  `usage_events` (what answering without rollups would take).

Target: under 200 ms at the median for both queries.

Usage: python bench/analytics.py [--events 10000000] [--backends sqlite,postgres] [--runs 15]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select, text

from billfold import analytics, catalog, parties
from billfold.clock import TestClock
from billfold.config import Settings
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.crypto import Cipher
from billfold.store.bulk import db_datetime, insert_rows
from billfold.store.db import Database
from billfold.store.migrate import upgrade
from billfold.store.tables import (
    analytics_state,
    metrics,
    revenue_rollup,
    services,
    usage_events,
    usage_rollup,
)
from common import database

SECRET = base64.urlsafe_b64encode(b"a" * 32).decode()
START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 61
USERS = 2000
PROVIDERS = 4
PRICE_UNITS = 1300  # 0.0013 USD per event, in ledger units (scale 6).
COMMISSION = 0.2
BATCH = 20_000
console = Console()


def context(url: str, home: Path) -> Context:
    db = Database(url)
    upgrade(db.engine)
    settings = Settings(home=home, database_url=url, secret_key=SECRET)
    clock = TestClock(datetime(2026, 12, 1, tzinfo=UTC))
    return Context(
        db=db, cipher=Cipher(base64.urlsafe_b64decode(SECRET)), settings=settings, clock=clock
    )


def populate(ctx: Context, count: int) -> str:
    """The catalog, `count` events and their rollups; returns the first provider's id."""
    pids = []
    for p in range(PROVIDERS):
        provider = ctx.run(
            parties.create_provider, SYSTEM, name=f"P{p}", email=f"p{p}@p.io", commission_rate="0.2"
        )
        me = Principal("k", Role.PROVIDER, provider_id=provider.id)
        ctx.run(catalog.create_service, me, code=f"svc{p}", name=f"Service {p}")
        for m in ("calls", "tokens"):
            ctx.run(catalog.create_metric, me, f"svc{p}", code=m, name=m, aggregation="count")
        pids.append(provider.id)
    user_ids = [
        ctx.run(
            parties.create_user, SYSTEM, name=f"U{n}", email=f"u{n}@u.io", currency_code="USD"
        ).id
        for n in range(USERS)
    ]
    with ctx.db.unit_of_work(read_only=True) as uow:
        service_of = {
            r.provider_id: r.id
            for r in uow.conn.execute(select(services.c.id, services.c.provider_id))
        }
        metric_rows = list(uow.conn.execute(select(metrics.c.id, metrics.c.service_id)))
    metric_ids = {
        sid: [m.id for m in metric_rows if m.service_id == sid] for sid in service_of.values()
    }
    span = DAYS * 86400
    usage: Counter[tuple[str, datetime, str, str]] = Counter()
    with Progress(
        TextColumn("loading events"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("events", total=count)
        for offset in range(0, count, BATCH):
            rows = []
            for n in range(offset, min(offset + BATCH, count)):
                provider = pids[n % PROVIDERS]
                service = service_of[provider]
                metric = metric_ids[service][(n // PROVIDERS) % 2]
                # Spread evenly over the 61 days, walking forward in time.
                moment = START + timedelta(seconds=(n * span) // count)
                bucket = moment.replace(minute=moment.minute - moment.minute % 15, second=0)
                usage[(provider, bucket, service, metric)] += 1
                rows.append(
                    (
                        provider,
                        f"e{n}",
                        user_ids[(n * 7919) % USERS],
                        service,
                        metric,
                        moment,
                        "1",
                        None,
                        START,
                        moment,
                    )
                )
            _load(ctx, rows)
            bar.update(task, advance=len(rows))
    with ctx.db.unit_of_work() as uow:
        conn = uow.conn
        rollup = [
            (p, db_datetime(conn, b), s, m, "USD", str(n), n, n * PRICE_UNITS)
            for (p, b, s, m), n in usage.items()
        ]
        for offset in range(0, len(rollup), BATCH):
            insert_rows(
                conn,
                usage_rollup,
                (
                    "provider_id",
                    "bucket",
                    "service_id",
                    "metric_id",
                    "currency",
                    "quantity",
                    "events",
                    "amount",
                ),
                rollup[offset : offset + BATCH],
            )
        revenue: Counter[tuple[str, datetime, str]] = Counter()
        for (p, b, _s, _m), n in usage.items():
            revenue[(p, b, f"svc{pids.index(p)}")] += n
        rows = [
            (
                p,
                db_datetime(conn, b),
                s,
                "USD",
                n * PRICE_UNITS,
                0,
                int(n * PRICE_UNITS * COMMISSION),
                n,
            )
            for (p, b, s), n in revenue.items()
        ]
        for offset in range(0, len(rows), BATCH):
            insert_rows(
                conn,
                revenue_rollup,
                (
                    "provider_id",
                    "bucket",
                    "service",
                    "currency",
                    "gross",
                    "refunds",
                    "commission",
                    "transfers",
                ),
                rows[offset : offset + BATCH],
            )
        # The folder is caught up with the ledger (the users' sign-ups are all it holds).
        conn.execute(analytics_state.delete())
        analytics.mark_folded(uow)
        uow.commit()
    with ctx.db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    return pids[0]


def _load(ctx: Context, rows: list[tuple[object, ...]]) -> None:
    columns = (
        "provider_id", "event_id", "user_id", "service_id", "metric_id", "occurred_at", "value",
        "properties", "period_start", "ingested_at",
    )  # fmt: skip
    with ctx.db.unit_of_work() as uow:
        conn = uow.conn
        if uow.dialect == "postgresql":
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY usage_events ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            insert_rows(
                conn,
                usage_events,
                columns,
                [
                    (
                        *r[:5],
                        db_datetime(conn, r[5]),
                        r[6],
                        r[7],
                        db_datetime(conn, r[8]),
                        db_datetime(conn, r[9]),
                    )  # type: ignore[arg-type]
                    for r in rows
                ],
            )
        uow.commit()


def raw_scan(ctx: Context, provider: str, start: datetime, end: datetime) -> int:
    """The same 30 days straight from the events: count and sum per day and metric."""
    with ctx.db.unit_of_work(read_only=True) as uow:
        day = (
            "date_trunc('day', occurred_at)"
            if uow.dialect == "postgresql"
            else "substr(occurred_at, 1, 10)"
        )
        rows = uow.conn.execute(
            text(
                f"SELECT {day} AS d, metric_id, count(*), sum(CAST(value AS NUMERIC)) "
                "FROM usage_events "
                "WHERE provider_id = :p AND occurred_at >= :s AND occurred_at < :e "
                "GROUP BY d, metric_id"
            ),
            {"p": provider, "s": db_datetime(uow.conn, start), "e": db_datetime(uow.conn, end)},
        ).all()
    return len(rows)


def timed(fn: object, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    table = Table(title=f"billfold analytics over {args.events:,} events (ms)")
    for name in ("backend", "query", "median", "p95", "raw scan median", "raw ÷ query"):
        table.add_column(name, justify="right")
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp, database(backend, Path(tmp)) as url:
            ctx = context(url, Path(tmp))
            began = time.perf_counter()
            provider = populate(ctx, args.events)
            console.print(
                f"{backend}: loaded {args.events:,} events in {time.perf_counter() - began:.0f} s"
            )
            start = datetime(2026, 10, 15, 4, tzinfo=UTC)  # Midnight in New York (EDT).
            end = start + timedelta(days=30)
            me = Principal("k", Role.PROVIDER, provider_id=provider)
            usage_q = analytics.Query(start, end, "day", "America/New_York", ("metric",))
            month = analytics.Query(
                datetime(2026, 11, 1, tzinfo=UTC),
                datetime(2026, 12, 1, tzinfo=UTC),
                "month",
                None,
                ("provider",),
            )
            series = ctx.run(analytics.usage_series, me, usage_q)
            assert sum(p.events for s in series for p in s.points) > 0
            raw = timed(partial(raw_scan, ctx, provider, start, end), max(3, args.runs // 3))
            usage_t = timed(partial(ctx.read, analytics.usage_series, me, usage_q), args.runs)
            revenue_t = timed(partial(ctx.read, analytics.revenue_series, SYSTEM, month), args.runs)
            raw_median = statistics.median(raw)
            for label, times in (
                ("usage series, 30 days", usage_t),
                ("revenue report, 1 month", revenue_t),
            ):
                median = statistics.median(times)
                p95 = sorted(times)[int(0.95 * (len(times) - 1))]
                table.add_row(
                    backend, label, f"{median * 1000:.1f}", f"{p95 * 1000:.1f}",
                    f"{raw_median * 1000:.0f}", f"{raw_median / median:.0f}",
                )  # fmt: skip
                results.setdefault(backend, {})[label] = median
            results[backend]["raw scan"] = raw_median
            ctx.db.dispose()
    console.print(table)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
