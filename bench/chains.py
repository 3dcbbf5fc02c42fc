"""Shards committing side by side: the journal's chains and the parted hot accounts.

On a fresh PostgreSQL database, W writer threads each post batches of charges for the
users of one shard, every charge moving the same provider's earnings and the platform's
revenue, each batch in a transaction of its own that holds its locks for HOLD_MS more
before it commits (the part of a stream worker's transaction that is not the ledger:
usage rows, the analytics journal, a round trip to a database on another machine). Two
cases, in the same run:

- every writer's users in a shard of its own (as `billfold worker`s holding different
  shards are): with one journal head they would take turns; with a chain per shard
  and parted hot accounts they do not;
- every writer's users in one shard (the same chain): they must take turns.

It prints batches/s for each and their ratio, which with W writers and chains that never
wait for each other approaches W (the machine's 2 cores are not the limit here: the
transactions mostly wait). Run it with the tree before the chains on PYTHONPATH for the
"before" figure: there both cases take turns.

Usage: python bench/chains.py [--writers 4] [--batches 40] [--hold-ms 20]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from billfold import ledger
from billfold.domain.ledger import (
    PLATFORM_OWNER_ID,
    AccountKind,
    OwnerType,
    Posting,
    TransferKind,
    TransferSpec,
)
from billfold.ids import new_id
from billfold.store.db import Database
from billfold.store.migrate import upgrade
from common import database

console = Console()
SHARDS = 16
CHARGES_PER_BATCH = 50


def shard(key: str) -> int:
    """The shard of billfold.domain.ledger.shard_of (written out: the tree before the
    chains, which this also runs against, does not have it there)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % SHARDS


def users(count: int, *, spread: bool) -> list[list[str]]:
    """`count` writers' users (5 each): in shards of their own, or all in shard 0's."""
    found: dict[int, list[str]] = {}
    n = 0
    while sum(len(v) for k, v in found.items() if (k < count if spread else k == 0)) < (5 * count):
        user = f"usr_{n}"
        found.setdefault(shard(user), []).append(user)
        n += 1
    if spread:
        return [found[k][:5] for k in range(count)]
    pool = found[0]
    return [pool[5 * w : 5 * w + 5] for w in range(count)]


def run_case(url: str, groups: list[list[str]], batches: int, hold_ms: float) -> float:
    db = Database(url)
    now = datetime.now(UTC)
    with db.unit_of_work() as uow:
        cash = ledger.ensure_account(
            uow, OwnerType.PLATFORM, PLATFORM_OWNER_ID, AccountKind.EXTERNAL_CASH, "USD", now=now
        )
        revenue = ledger.ensure_account(
            uow, OwnerType.PLATFORM, PLATFORM_OWNER_ID, AccountKind.PLATFORM_REVENUE, "USD", now=now
        )
        earnings = ledger.ensure_account(
            uow, OwnerType.PROVIDER, "prv_hot", AccountKind.PROVIDER_EARNINGS, "USD", now=now
        )
        wallets = {
            u: ledger.ensure_account(
                uow, OwnerType.USER, u, AccountKind.WALLET, "USD", now=now, floor=0
            )
            for group in groups
            for u in group
        }
        uow.commit()
    with db.unit_of_work() as uow:
        ledger.post_many(
            uow,
            [
                TransferSpec(
                    id=new_id("tr"),
                    kind=TransferKind.TOP_UP,
                    postings=(Posting(cash, "USD", -(10**9)), Posting(w, "USD", 10**9)),
                    user_id=u,
                )
                for u, w in wallets.items()
            ],
            now=now,
        )
        uow.commit()

    def charges(group: list[str]) -> list[TransferSpec]:
        return [
            TransferSpec(
                id=new_id("tr"),
                kind=TransferKind.CHARGE,
                postings=(
                    Posting(wallets[u], "USD", -100),
                    Posting(earnings, "USD", 80),
                    Posting(revenue, "USD", 20),
                ),
                user_id=u,
                provider_id="prv_hot",
            )
            for n in range(CHARGES_PER_BATCH)
            for u in (group[n % len(group)],)
        ]

    def writer(group: list[str]) -> None:
        for _ in range(batches):
            with db.unit_of_work() as uow:
                ledger.post_many(uow, charges(group), now=datetime.now(UTC))
                uow.conn.execute(text("SELECT pg_sleep(:s)"), {"s": hold_ms / 1000})
                uow.commit()

    threads = [threading.Thread(target=writer, args=(g,)) for g in groups]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    with db.unit_of_work(read_only=True) as uow:
        assert ledger.balance(uow, revenue).posted == 20 * CHARGES_PER_BATCH * batches * len(
            groups
        ), "every charge is in the platform's revenue"
    db.dispose()
    return len(groups) * batches / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--hold-ms", type=float, default=20.0)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, spread in (("own shard each", True), ("one shard for all", False)):
            with database("postgres", Path(folder)) as url:
                upgrade(Database(url).engine)
                figures[name] = run_case(
                    url, users(args.writers, spread=spread), args.batches, args.hold_ms
                )
    table = Table(
        title=f"{args.writers} writers, batches of {CHARGES_PER_BATCH} charges to one "
        f"provider, locks held {args.hold_ms:.0f} ms more (PostgreSQL)"
    )
    for column in ("writers' users", "batches/s", "charges/s"):
        table.add_column(column, justify="right")
    for name, rate in figures.items():
        table.add_row(name, f"{rate:,.1f}", f"{rate * CHARGES_PER_BATCH:,.0f}")
    console.print(table)
    ratio = figures["own shard each"] / figures["one shard for all"]
    console.print(f"own shards / one shard: {ratio:.2f}x (at most {args.writers}x)")
    print(json.dumps({**figures, "ratio": ratio}))


if __name__ == "__main__":
    main()
