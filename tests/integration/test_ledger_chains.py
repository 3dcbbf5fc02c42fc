"""The journal as one hash chain per shard of users, and hot accounts parted by chain
(docs/DECISIONS.md, 114): chains commit side by side on PostgreSQL, `verify` proves every
chain and every part, and readers that keep a mark per chain miss nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import OperationalError

from billfold import analytics, ledger
from billfold.core.context import Context
from billfold.core.group_commit import GroupCommitter, _Job
from billfold.domain.errors import InsufficientFunds
from billfold.domain.ledger import (
    GENESIS_HASH,
    PLATFORM_OWNER_ID,
    AccountKind,
    OwnerType,
    Posting,
    TransferKind,
    TransferSpec,
    chain_genesis,
    chain_of,
    shard_of,
)
from billfold.ids import new_id
from billfold.ledger.verify import verify_in
from billfold.store.db import UnitOfWork
from billfold.store.ledger_tables import account_parts, ledger_chains, transfers
from billfold.store.tables import revenue_rollup

CHAINS = 16


def users_in_chains(count: int) -> list[str]:
    """User ids whose chains are all different."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        found.setdefault(shard_of(f"usr_{n}", CHAINS), f"usr_{n}")
        n += 1
    return list(found.values())


def same_chain_as(user: str) -> str:
    n = 0
    while True:
        other = f"usr_same_{n}"
        if shard_of(other, CHAINS) == shard_of(user, CHAINS):
            return other
        n += 1


class Ledger:
    """The platform's accounts, one provider's earnings and any number of wallets."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.wallets: dict[str, int] = {}
        with ctx.db.unit_of_work() as uow:
            now = ctx.clock.now()
            self.cash = ledger.ensure_account(
                uow,
                OwnerType.PLATFORM,
                PLATFORM_OWNER_ID,
                AccountKind.EXTERNAL_CASH,
                "USD",
                now=now,
            )
            self.revenue = ledger.ensure_account(
                uow,
                OwnerType.PLATFORM,
                PLATFORM_OWNER_ID,
                AccountKind.PLATFORM_REVENUE,
                "USD",
                now=now,
            )
            self.earnings = ledger.ensure_account(
                uow, OwnerType.PROVIDER, "prv_1", AccountKind.PROVIDER_EARNINGS, "USD", now=now
            )
            uow.commit()

    def wallet(self, user: str) -> int:
        if user not in self.wallets:
            with self.ctx.db.unit_of_work() as uow:
                self.wallets[user] = ledger.ensure_account(
                    uow,
                    OwnerType.USER,
                    user,
                    AccountKind.WALLET,
                    "USD",
                    now=self.ctx.clock.now(),
                    floor=0,
                )
                uow.commit()
        return self.wallets[user]

    def top_up(self, user: str, units: int) -> TransferSpec:
        return TransferSpec(
            id=new_id("tr"),
            kind=TransferKind.TOP_UP,
            postings=(Posting(self.cash, "USD", -units), Posting(self.wallet(user), "USD", units)),
            user_id=user,
        )

    def charge(self, user: str, units: int) -> TransferSpec:
        commission = units // 5
        return TransferSpec(
            id=new_id("tr"),
            kind=TransferKind.CHARGE,
            postings=(
                Posting(self.wallet(user), "USD", -units),
                Posting(self.earnings, "USD", units - commission),
                Posting(self.revenue, "USD", commission),
            ),
            user_id=user,
            provider_id="prv_1",
        )

    def payout(self, units: int) -> TransferSpec:
        return TransferSpec(
            id=new_id("po"),
            kind=TransferKind.PAYOUT,
            postings=(Posting(self.earnings, "USD", -units), Posting(self.cash, "USD", units)),
            provider_id="prv_1",
            covered_accounts=frozenset({self.earnings}),
        )

    def post(self, *specs: TransferSpec) -> list[object]:
        with self.ctx.db.unit_of_work() as uow:
            results = ledger.post_many(uow, list(specs), now=self.ctx.clock.now())
            uow.commit()
        return results

    def balance(self, account_id: int) -> int:
        with self.ctx.db.unit_of_work(read_only=True) as uow:
            return ledger.balance(uow, account_id).posted

    def verify(self) -> set[str]:
        with self.ctx.db.unit_of_work(read_only=True) as uow:
            return {check.name for check in verify_in(uow).checks if not check.ok}


def test_a_chain_is_a_users_shard_and_each_chain_has_its_own_genesis() -> None:
    assert chain_of("usr_1", "prv_1", CHAINS) == shard_of("usr_1", CHAINS)
    assert chain_of(None, "prv_1", CHAINS) == shard_of("prv_1", CHAINS)
    assert chain_of(None, None, CHAINS) == 0
    assert chain_genesis(0) == GENESIS_HASH  # A ledger from before the chains verifies.
    assert len({chain_genesis(n) for n in range(CHAINS)}) == CHAINS


def test_each_users_transfers_are_one_chain_in_order_and_verify_proves_every_chain(
    ctx: Context,
) -> None:
    books = Ledger(ctx)
    users = users_in_chains(4)
    books.post(*(books.top_up(u, 1_000) for u in users))
    books.post(*(books.charge(u, 100) for u in users), *(books.charge(u, 50) for u in users))
    with ctx.db.unit_of_work(read_only=True) as uow:
        rows = uow.conn.execute(
            select(transfers.c.user_id, transfers.c.chain, transfers.c.chain_seq).order_by(
                transfers.c.seq
            )
        ).all()
    for user in users:
        mine = [r for r in rows if r.user_id == user]
        assert {r.chain for r in mine} == {shard_of(user, CHAINS)}
        assert [r.chain_seq for r in mine] == [1, 2, 3]
    assert len({r.chain for r in rows}) == 4
    # The hot accounts' balances are the sums of their parts, one part per chain moved.
    assert books.balance(books.revenue) == 4 * 30
    assert books.balance(books.earnings) == 4 * 120
    assert books.balance(books.cash) == -4_000
    with ctx.db.unit_of_work(read_only=True) as uow:
        parts = uow.conn.execute(
            select(account_parts.c.part, account_parts.c.posted).where(
                account_parts.c.account_id == books.revenue
            )
        ).all()
    assert sorted(p.part for p in parts) == sorted(shard_of(u, CHAINS) for u in users)
    assert all(p.posted == 30 for p in parts)
    assert books.verify() == set()


def test_a_transfer_moved_to_another_chain_or_a_part_edited_does_not_verify(ctx: Context) -> None:
    books = Ledger(ctx)
    first, second = users_in_chains(2)
    books.post(books.top_up(first, 500), books.top_up(second, 500))
    books.post(books.charge(first, 100), books.charge(second, 100))
    assert books.verify() == set()
    with ctx.db.unit_of_work() as uow:
        # Renumbered into the other chain, after its last entry: the hash says no.
        other, last = uow.conn.execute(
            select(ledger_chains.c.chain, ledger_chains.c.seq).where(
                ledger_chains.c.chain == shard_of(second, CHAINS)
            )
        ).one()
        uow.conn.execute(
            update(transfers)
            .where(transfers.c.user_id == first, transfers.c.kind == "charge")
            .values(chain=other, chain_seq=last + 1)
        )
        uow.commit()
    assert "hash_chain" in books.verify()


def test_an_edited_part_of_a_hot_account_does_not_verify(ctx: Context) -> None:
    books = Ledger(ctx)
    (user,) = users_in_chains(1)
    books.post(books.top_up(user, 500), books.charge(user, 100))
    with ctx.db.unit_of_work() as uow:
        uow.conn.execute(
            update(account_parts)
            .where(account_parts.c.account_id == books.revenue)
            .values(posted=account_parts.c.posted + 1)
        )
        uow.commit()
    assert books.verify() == {"cached_balances"}


def test_a_payout_may_take_all_the_parts_together_and_never_more(ctx: Context) -> None:
    books = Ledger(ctx)
    users = users_in_chains(3)
    books.post(*(books.top_up(u, 1_000) for u in users))
    books.post(*(books.charge(u, 500) for u in users))  # 400 earned in each of 3 parts.
    assert books.balance(books.earnings) == 1_200
    (refused,) = books.post(books.payout(1_201))
    assert isinstance(refused, InsufficientFunds)
    (paid,) = books.post(books.payout(1_000))  # More than any one part holds.
    assert isinstance(paid, ledger.PostedTransfer)
    assert books.balance(books.earnings) == 200
    (refused,) = books.post(books.payout(201))
    assert isinstance(refused, InsufficientFunds)
    assert books.verify() == set()


@contextmanager
def open_transaction(ctx: Context) -> Iterator[UnitOfWork]:
    """A unit of work left open (its locks held) while the block runs; committed after."""
    with ctx.db.unit_of_work() as uow:
        yield uow
        uow.commit()


@pytest.mark.postgres
def test_chains_commit_side_by_side_and_one_chain_waits_for_itself(pg_ctx: Context) -> None:
    """Two users in different chains, charged for the same provider and platform: neither
    waits for the other's uncommitted transfer. Two users of one chain do wait."""
    books = Ledger(pg_ctx)
    first, second = users_in_chains(2)
    neighbour = same_chain_as(first)
    books.post(*(books.top_up(u, 1_000) for u in (first, second, neighbour)))
    now = pg_ctx.clock.now()
    with open_transaction(pg_ctx) as holding:
        ledger.post(holding, books.charge(first, 100), now=now)  # Chain locked, not committed.
        with pg_ctx.db.unit_of_work() as other:
            other.conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            started = time.monotonic()
            ledger.post(other, books.charge(second, 100), now=now)
            other.commit()
            assert time.monotonic() - started < 1.5
        with pg_ctx.db.unit_of_work() as same:
            same.conn.execute(text("SET LOCAL lock_timeout = '300ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                ledger.post(same, books.charge(neighbour, 100), now=now)
    assert books.balance(books.revenue) == 40
    assert books.verify() == set()


@pytest.mark.postgres
def test_the_revenue_folder_misses_no_transfer_that_commits_late(pg_ctx: Context) -> None:
    """A transfer numbered first but committed last, in another chain, is folded once: the
    folder's marks are per chain, where places follow the commit order."""
    books = Ledger(pg_ctx)
    first, second = users_in_chains(2)
    books.post(books.top_up(first, 1_000), books.top_up(second, 1_000))
    analytics.fold(pg_ctx)
    now = pg_ctx.clock.now()
    with open_transaction(pg_ctx) as late:
        ledger.post(late, books.charge(first, 100), now=now)
        books.post(books.charge(second, 200))  # Commits first, numbered after.
        analytics.fold(pg_ctx)
        with pg_ctx.db.unit_of_work(read_only=True) as uow:
            seqs = dict(
                uow.conn.execute(
                    select(transfers.c.user_id, transfers.c.seq).where(transfers.c.kind == "charge")
                ).all()
            )
        assert seqs == {second: seqs[second]}  # The late one is not committed yet.
    analytics.fold(pg_ctx)
    with pg_ctx.db.unit_of_work(read_only=True) as uow:
        seqs = dict(
            uow.conn.execute(
                select(transfers.c.user_id, transfers.c.seq).where(transfers.c.kind == "charge")
            ).all()
        )
        folded = uow.conn.execute(
            select(revenue_rollup.c.gross, revenue_rollup.c.commission, revenue_rollup.c.transfers)
        ).all()
    assert seqs[first] < seqs[second]  # Numbered first, committed last.
    assert sum(r.gross for r in folded) == 300
    assert sum(r.commission for r in folded) == 60
    assert sum(r.transfers for r in folded) == 2


@pytest.mark.postgres
def test_concurrent_charges_across_chains_keep_every_balance_exact(pg_ctx: Context) -> None:
    books = Ledger(pg_ctx)
    users = users_in_chains(8)
    books.post(*(books.top_up(u, 1_000) for u in users))
    errors: list[BaseException] = []

    def charge(user: str) -> None:
        try:
            for _ in range(12):  # 12 x 100 asked, 10 x 100 fit in the wallet.
                books.post(books.charge(user, 100))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=charge, args=(u,)) for u in users for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(books.balance(books.wallet(u)) == 0 for u in users)
    assert books.balance(books.earnings) == 8 * 800
    assert books.balance(books.revenue) == 8 * 200
    assert books.verify() == set()


@pytest.mark.postgres
def test_a_group_does_not_wait_for_a_chain_it_locks_late(pg_ctx: Context) -> None:
    """In one group commit, a request whose chain another process holds is not waited
    for while the group holds other locks: it runs again alone once the group is done."""
    books = Ledger(pg_ctx)
    first, second = users_in_chains(2)
    books.post(books.top_up(first, 1_000), books.top_up(second, 1_000))
    committer = GroupCommitter(pg_ctx)
    now = pg_ctx.clock.now()
    answers: dict[str, object] = {}

    def run(user: str):  # type: ignore[no-untyped-def]
        return lambda work: ledger.post(work, books.charge(user, 100), now=now)

    with open_transaction(pg_ctx) as holding:
        ledger.post(holding, books.top_up(second, 1), now=now)  # Holds the second's chain.
        group: list[_Job[object]] = [_Job(run(first)), _Job(run(second))]
        writer = threading.Thread(target=committer._write, args=(group,))
        writer.start()
        time.sleep(0.5)
        # The first request committed with its group; the second waits alone, in order.
        assert books.balance(books.wallet(first)) == 900
        assert writer.is_alive()
    writer.join(10)
    for job, user in zip(group, (first, second), strict=True):
        assert job.error is None, job.error
        answers[user] = job.result
    assert books.balance(books.wallet(second)) == 901
    assert books.verify() == set()


@pytest.mark.postgres
def test_concurrent_payouts_never_take_more_than_every_part_holds(pg_ctx: Context) -> None:
    """Payouts lock every part of the provider's earnings while charges in many chains
    add to their own parts: the payouts together never exceed what was earned."""
    books = Ledger(pg_ctx)
    users = users_in_chains(6)
    books.post(*(books.top_up(u, 10_000) for u in users))
    paid: list[int] = []
    errors: list[BaseException] = []

    def charge(user: str) -> None:
        try:
            for _ in range(20):
                books.post(books.charge(user, 100))  # 80 earned each.
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    def pay_out() -> None:
        try:
            for _ in range(15):
                (result,) = books.post(books.payout(500))
                if isinstance(result, ledger.PostedTransfer):
                    paid.append(500)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=charge, args=(u,)) for u in users]
    threads += [threading.Thread(target=pay_out) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    earned = 6 * 20 * 80
    assert books.balance(books.earnings) == earned - sum(paid) >= 0
    assert sum(paid) > 0
    assert books.verify() == set()
