"""Ledger throughput: charge transfers per second against the raw insert rate of the same rows.

A charge transfer is three postings (wallet debit, provider credit, platform credit). Each
backend is measured in the same run in four ways:

- raw insert: the same transfer and posting rows, INSERTed with executemany in batches of
  1,000 per database transaction, with no checks, locks, hashing or balance updates (the
  floor any ledger on this database could reach);
- ledger, batched: `ledger.post_many` with 1,000 transfers per database transaction;
- ledger, one per transaction: `ledger.post` and a commit per transfer;
- service charge: `parties.charge`, the full service path of POST /v1/charges (user and
  provider lookup, split, audit entry), one per transaction.

Usage: python bench/ledger.py [--transfers 50000] [--single 2000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from billfold import catalog, ledger, parties
from billfold.clock import SystemClock
from billfold.config import Settings
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.crypto import Cipher
from billfold.domain.ledger import (
    PLATFORM_OWNER_ID,
    AccountKind,
    OwnerType,
    Posting,
    TransferKind,
    TransferSpec,
)
from billfold.store.bulk import db_datetime, insert_rows
from billfold.store.db import Database
from billfold.store.ledger_tables import postings, transfers
from billfold.store.migrate import upgrade
from common import database

BATCH = 1000
console = Console()


def context(url: str, home: Path) -> Context:
    db = Database(url)
    upgrade(db.engine)
    return Context(
        db=db,
        cipher=Cipher(b"b" * 32),
        settings=Settings(home=home, database_url=url),
        clock=SystemClock(),
    )


def accounts(ctx: Context) -> tuple[int, int, int, int]:
    now = ctx.clock.now()
    with ctx.db.unit_of_work() as uow:
        ensure = ledger.ensure_account
        ids = (
            ensure(uow, OwnerType.USER, "bench-user", AccountKind.WALLET, "USD", now=now, floor=0),
            ensure(
                uow,
                OwnerType.PLATFORM,
                PLATFORM_OWNER_ID,
                AccountKind.EXTERNAL_CASH,
                "USD",
                now=now,
            ),
            ensure(
                uow,
                OwnerType.PROVIDER,
                "bench-provider",
                AccountKind.PROVIDER_EARNINGS,
                "USD",
                now=now,
            ),
            ensure(
                uow,
                OwnerType.PLATFORM,
                PLATFORM_OWNER_ID,
                AccountKind.PLATFORM_REVENUE,
                "USD",
                now=now,
            ),
        )
        ledger.post(
            uow,
            TransferSpec(
                id=f"fund-{uuid.uuid4().hex}",
                kind=TransferKind.TOP_UP,
                postings=(Posting(ids[1], "USD", -(10**15)), Posting(ids[0], "USD", 10**15)),
            ),
            now=now,
        )
        uow.commit()
    return ids


def charge(ids: tuple[int, int, int, int], transfer_id: str) -> TransferSpec:
    wallet, _, provider, revenue = ids
    return TransferSpec(
        id=transfer_id,
        kind=TransferKind.CHARGE,
        postings=(
            Posting(wallet, "USD", -1_000),
            Posting(provider, "USD", 800),
            Posting(revenue, "USD", 200),
        ),
        user_id="bench-user",
        provider_id="bench-provider",
        service="maps",
        metric="calls",
        quantity="1",
        description="call",
    )


def timed(label: str, count: int, work: Callable[[Callable[[int], None]], None]) -> float:
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(label, total=count)
        started = time.perf_counter()
        work(lambda n: bar.advance(task, n))
        elapsed = time.perf_counter() - started
    return count / elapsed


def raw_insert(ctx: Context, count: int, advance: Callable[[int], None]) -> None:
    """The same rows a charge writes, inserted with nothing else done."""
    seq_base = 10**12  # Clear of the ledger's own sequence numbers.
    chained = "chain" in ledger.TRANSFER_COLUMNS
    parted = "part" in ledger.POSTING_COLUMNS
    now = datetime.now(UTC)
    for start in range(0, count, BATCH):
        with ctx.db.unit_of_work() as uow:
            conn = uow.conn
            at = db_datetime(conn, now)
            rows_t, rows_p = [], []
            for n in range(start, min(start + BATCH, count)):
                seq = seq_base + n
                rows_t.append(
                    (
                        seq,
                        f"raw-{seq}",
                        "charge",
                        at,
                        "bench-user",
                        "bench-provider",
                        "maps",
                        "calls",
                        "1",
                        "call",
                        None,
                        None,
                        None,
                        "d" * 64,
                        "p" * 64,
                        "h" * 64,
                        # Its chain and place (columns a tree before the chains lacks).
                        *((0, seq) if chained else ()),
                    )
                )
                rows_p.extend(
                    (seq, account, "USD", amount, 0, *((0,) if parted else ()))
                    for account, amount in ((1, -1000), (3, 800), (4, 200))
                )
            insert_rows(conn, transfers, ledger.TRANSFER_COLUMNS, rows_t)
            insert_rows(conn, postings, ledger.POSTING_COLUMNS, rows_p)
            uow.commit()
        advance(min(BATCH, count - start))


def batched(
    ctx: Context, ids: tuple[int, int, int, int], count: int, advance: Callable[[int], None]
) -> None:
    tag = uuid.uuid4().hex[:8]
    for start in range(0, count, BATCH):
        specs = [charge(ids, f"b-{tag}-{n}") for n in range(start, min(start + BATCH, count))]
        with ctx.db.unit_of_work() as uow:
            results = ledger.post_many(uow, specs, now=ctx.clock.now())
            uow.commit()
        assert not any(isinstance(r, Exception) for r in results)
        advance(len(specs))


def single(
    ctx: Context, ids: tuple[int, int, int, int], count: int, advance: Callable[[int], None]
) -> None:
    tag = uuid.uuid4().hex[:8]
    for n in range(count):
        with ctx.db.unit_of_work() as uow:
            ledger.post(uow, charge(ids, f"s-{tag}-{n}"), now=ctx.clock.now())
            uow.commit()
        advance(1)


def service(ctx: Context, count: int, advance: Callable[[int], None]) -> None:
    provider = ctx.run(
        parties.create_provider,
        SYSTEM,
        name="Bench",
        email=f"{uuid.uuid4().hex}@b.io",
        commission_rate="0.2",
    )
    me = Principal("bench", Role.PROVIDER, provider_id=provider.id)
    ctx.run(catalog.create_service, me, code="maps", name="Maps")
    user = ctx.run(parties.create_user, SYSTEM, name="Bench", email="u@b.io", currency_code="USD")
    ctx.run(parties.top_up, SYSTEM, user.id, amount="1000000")
    for _ in range(count):
        ctx.run(
            parties.charge,
            SYSTEM,
            user_ref=user.id,
            amount="0.01",
            description="call",
            provider_id=provider.id,
            service="maps",
        )
        advance(1)


def run(backend: str, count: int, single_count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as home, database(backend, Path(home)) as url:
        ctx = context(url, Path(home))
        ids = accounts(ctx)
        figures = {
            "raw_insert": timed(
                f"{backend}: raw insert", count, lambda a: raw_insert(ctx, count, a)
            ),
            "batched": timed(
                f"{backend}: ledger batched", count, lambda a: batched(ctx, ids, count, a)
            ),
            "single": timed(
                f"{backend}: ledger single",
                single_count,
                lambda a: single(ctx, ids, single_count, a),
            ),
            "service": timed(
                f"{backend}: service charge",
                single_count // 2,
                lambda a: service(ctx, single_count // 2, a),
            ),
        }
        ctx.db.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=50_000)
    parser.add_argument("--single", type=int, default=2_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    table = Table(title="billfold ledger: charge transfers per second (3 postings each)")
    for column in (
        "backend",
        "raw insert/s",
        "batched/s",
        "batched ÷ raw",
        "one per tx/s",
        "one per tx ÷ raw",
        "service charge/s",
    ):
        table.add_column(column, justify="right")
    results = {}
    for backend in args.backends.split(","):
        figures = run(backend, args.transfers, args.single)
        results[backend] = figures
        raw = figures["raw_insert"]
        table.add_row(
            backend,
            f"{raw:,.0f}",
            f"{figures['batched']:,.0f}",
            f"{figures['batched'] / raw:.2f}",
            f"{figures['single']:,.0f}",
            f"{figures['single'] / raw:.3f}",
            f"{figures['service']:,.0f}",
        )
    console.print(table)
    console.print("target: batched ÷ raw >= 0.25")
    print(json.dumps({b: {k: round(v, 1) for k, v in f.items()} for b, f in results.items()}))


if __name__ == "__main__":
    main()
