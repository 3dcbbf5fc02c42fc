"""Checks every ledger invariant from the database (the second half of the pair assertions).

The domain asserts the rules as transfers are made; this module proves from what is
stored that they still hold: every transfer balances, cached balances equal their
postings, no account is past its floor, held amounts equal the open holds, the running
balances are consistent, and the hash chain is unbroken (so an edited or deleted row
shows). It reads in bounded chunks, so it runs over a ledger of any size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from billfold.core import audit
from billfold.core.access import Principal, require_admin
from billfold.core.context import Work
from billfold.domain.ledger import (
    HoldStatus,
    Posting,
    TransferKind,
    TransferSpec,
    chain_genesis,
    chain_hash,
)
from billfold.store.db import UnitOfWork
from billfold.store.ledger_tables import (
    account_parts,
    accounts,
    holds,
    ledger_chains,
    postings,
    transfers,
)

CHUNK = 5_000
MAX_PROBLEMS_SHOWN = 20


@dataclass
class Check:
    name: str
    description: str
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def fail(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_SHOWN:
            self.problems.append(problem)


@dataclass
class Report:
    checks: list[Check]
    transfers: int
    postings: int
    accounts: int

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


Progress = Callable[[int, int], None]


def verify(work: Work, principal: Principal, *, progress: Progress | None = None) -> Report:
    require_admin(principal)
    return verify_in(work, progress=progress)


def verify_in(uow: UnitOfWork, *, progress: Progress | None = None) -> Report:
    conn = uow.conn
    row: Any
    balanced = Check("transfers_balance", "every transfer's postings sum to zero per currency")
    for row in conn.execute(
        select(postings.c.transfer_seq, postings.c.currency, func.sum(postings.c.amount))
        .group_by(postings.c.transfer_seq, postings.c.currency)
        .having(func.sum(postings.c.amount) != 0)
    ):
        balanced.fail(f"transfer #{row[0]} is off by {row[2]} units of {row[1]}")

    two_sided = Check("transfers_have_postings", "every transfer has at least two postings")
    counts = (
        select(transfers.c.seq, func.count(postings.c.id).label("n"))
        .select_from(transfers.outerjoin(postings, postings.c.transfer_seq == transfers.c.seq))
        .group_by(transfers.c.seq)
        .subquery()
    )
    for row in conn.execute(select(counts.c.seq, counts.c.n).where(counts.c.n < 2)):
        two_sided.fail(f"transfer #{row.seq} has {row.n} postings")

    cached = Check("cached_balances", "every cached balance equals the sum of its postings")
    for problem in _cached_balances(uow):
        cached.fail(problem)
    currency_ok = Check("posting_currencies", "every posting is in its account's currency")
    for row in conn.execute(
        select(postings.c.id, postings.c.account_id)
        .select_from(postings.join(accounts, accounts.c.id == postings.c.account_id))
        .where(postings.c.currency != accounts.c.currency)
    ):
        currency_ok.fail(f"posting {row.id} on account {row.account_id} has another currency")

    open_holds = (
        select(holds.c.account_id, func.sum(holds.c.amount).label("total"))
        .where(holds.c.status == str(HoldStatus.PENDING))
        .group_by(holds.c.account_id)
        .subquery()
    )
    held = Check("held_amounts", "every account's held amount equals its open holds")
    for row in conn.execute(
        select(accounts.c.id, accounts.c.held, func.coalesce(open_holds.c.total, 0).label("total"))
        .select_from(accounts.outerjoin(open_holds, open_holds.c.account_id == accounts.c.id))
        .where(accounts.c.held != func.coalesce(open_holds.c.total, 0))
    ):
        held.fail(f"account {row.id} holds {row.held} but its open holds total {row.total}")

    floors = Check("within_floor", "no account is below its floor")
    for row in conn.execute(
        select(accounts.c.id, accounts.c.posted, accounts.c.held, accounts.c.floor).where(
            accounts.c.floor.is_not(None),
            accounts.c.posted - accounts.c.held < accounts.c.floor,
        )
    ):
        floors.fail(f"account {row.id} is at {row.posted - row.held}, below its floor {row.floor}")

    chain, running = _walk_journal(uow, progress)
    trail = Check("audit_chain", "the audit trail's hash chain is unbroken")
    for problem in audit.broken_links(uow):
        trail.fail(problem)
    total_transfers = conn.execute(select(func.count()).select_from(transfers)).scalar_one()
    total_postings = conn.execute(select(func.count()).select_from(postings)).scalar_one()
    total_accounts = conn.execute(select(func.count()).select_from(accounts)).scalar_one()
    return Report(
        checks=[balanced, two_sided, cached, currency_ok, held, floors, running, chain, trail],
        transfers=int(total_transfers),
        postings=int(total_postings),
        accounts=int(total_accounts),
    )


def _cached_balances(uow: UnitOfWork) -> list[str]:
    """Each cached balance against its postings: an ordinary account's row, and each part
    of a parted account (whose own row stays at 0)."""
    conn = uow.conn
    found: list[str] = []
    row: Any
    sums = (
        select(
            postings.c.account_id,
            postings.c.part,
            func.sum(postings.c.amount).label("total"),
        )
        .group_by(postings.c.account_id, postings.c.part)
        .subquery()
    )
    plain = (
        select(accounts.c.id, accounts.c.posted, func.coalesce(sums.c.total, 0).label("total"))
        .select_from(
            accounts.outerjoin(sums, (sums.c.account_id == accounts.c.id) & (sums.c.part == 0))
        )
        .where(accounts.c.parted == 0, accounts.c.posted != func.coalesce(sums.c.total, 0))
    )
    for row in conn.execute(plain):
        found.append(f"account {row.id} caches {row.posted} but its postings sum to {row.total}")
    for row in conn.execute(
        select(postings.c.account_id, postings.c.part)
        .select_from(postings.join(accounts, accounts.c.id == postings.c.account_id))
        .where(accounts.c.parted == 0, postings.c.part != 0)
        .distinct()
    ):
        found.append(f"account {row.account_id} is not parted but has postings in part {row.part}")
    for row in conn.execute(
        select(accounts.c.id, accounts.c.posted, accounts.c.held).where(
            accounts.c.parted != 0, (accounts.c.posted != 0) | (accounts.c.held != 0)
        )
    ):
        found.append(f"parted account {row.id} caches {row.posted} on its own row, not in parts")
    for row in conn.execute(
        select(
            account_parts.c.account_id,
            account_parts.c.part,
            account_parts.c.posted,
            func.coalesce(sums.c.total, 0).label("total"),
        )
        .select_from(
            account_parts.outerjoin(
                sums,
                (sums.c.account_id == account_parts.c.account_id)
                & (sums.c.part == account_parts.c.part),
            )
        )
        .where(account_parts.c.posted != func.coalesce(sums.c.total, 0))
    ):
        found.append(
            f"account {row.account_id} part {row.part} caches {row.posted} "
            f"but its postings sum to {row.total}"
        )
    for row in conn.execute(
        select(sums.c.account_id, sums.c.part, sums.c.total)
        .select_from(
            sums.join(accounts, accounts.c.id == sums.c.account_id).outerjoin(
                account_parts,
                (account_parts.c.account_id == sums.c.account_id)
                & (account_parts.c.part == sums.c.part),
            )
        )
        .where(accounts.c.parted != 0, account_parts.c.account_id.is_(None))
    ):
        found.append(
            f"account {row.account_id} part {row.part} has postings summing to {row.total}"
            " but no cached balance"
        )
    return found


def _walk_journal(uow: UnitOfWork, progress: Progress | None) -> tuple[Check, Check]:
    """Recomputes every chain's hashes and every running balance, in one pass in journal
    order. Within a chain, numbers follow places (both are taken under the chain's lock),
    and one account's transfers are numbered in the order they committed (the number is
    taken with the account locked), so journal order is each chain's order and each
    account's (docs/DECISIONS.md, 114)."""
    chain = Check("hash_chain", "each journal chain is unbroken (no row edited or deleted)")
    running = Check("running_balances", "each posting's balance_after follows from the one before")
    conn = uow.conn
    total = int(conn.execute(select(func.count()).select_from(transfers)).scalar_one())
    heads = {int(r.chain): (int(r.seq), str(r.hash)) for r in conn.execute(select(ledger_chains))}
    # Per chain: the next place expected and the hash the next entry must chain to.
    state = {number: (1, chain_genesis(number)) for number in heads}
    balances: dict[tuple[int, int], int] = {}
    last_seq = 0
    done = 0
    while True:
        rows = conn.execute(
            select(transfers)
            .where(transfers.c.seq > last_seq)
            .order_by(transfers.c.seq)
            .limit(CHUNK)
        ).all()
        if not rows:
            break
        first, last = rows[0].seq, rows[-1].seq
        by_seq: dict[int, list[Any]] = {}
        for p in conn.execute(
            select(postings)
            .where(postings.c.transfer_seq >= first, postings.c.transfer_seq <= last)
            .order_by(postings.c.transfer_seq, postings.c.id)
        ):
            by_seq.setdefault(p.transfer_seq, []).append(p)
        for row in rows:
            _check_entry(row, by_seq.get(row.seq, []), state, balances, chain, running)
        last_seq = last
        done += len(rows)
        if progress:
            progress(done, total)
    for number, (head_seq, head_hash) in sorted(heads.items()):
        expected, prev_hash = state[number]
        if head_seq != expected - 1 or head_hash != prev_hash:
            chain.fail(
                f"chain {number}'s head says #{head_seq} but the chain ends at #{expected - 1}"
                " (a transfer was removed or the head was edited)"
            )
    return chain, running


def _check_entry(
    row: Any,
    legs: list[Any],
    state: dict[int, tuple[int, str]],
    balances: dict[tuple[int, int], int],
    chain: Check,
    running: Check,
) -> None:
    """One journal entry against its chain's state so far, and its postings against the
    running balances so far; moves both on."""
    place = state.get(row.chain)
    if place is None:
        chain.fail(f"transfer {row.id} is in chain {row.chain}, which the journal lacks")
        place = (row.chain_seq, row.prev_hash)
    expected, prev_hash = place
    if row.chain_seq != expected:
        chain.fail(
            f"transfer #{expected} of chain {row.chain} is missing (next is #{row.chain_seq})"
        )
    if row.prev_hash != prev_hash:
        chain.fail(f"transfer {row.id} does not chain to the one before it")
    if not _matches_its_hash(row, legs):
        chain.fail(f"transfer {row.id} does not match its hash")
    for p in legs:
        slot = (p.account_id, p.part)
        balances[slot] = balances.get(slot, 0) + p.amount
        if balances[slot] != p.balance_after:
            running.fail(
                f"posting {p.id} on account {p.account_id} says {p.balance_after} "
                f"after, but the journal gives {balances[slot]}"
            )
    state[row.chain] = (row.chain_seq + 1, row.hash)


def _matches_its_hash(row: Any, legs: list[Any]) -> bool:
    """Whether a stored transfer's digest and chain hash are what its content gives."""
    spec = TransferSpec(
        id=row.id,
        kind=TransferKind(row.kind),
        postings=tuple(
            Posting(p.account_id, p.currency, p.amount)
            for p in sorted(legs, key=lambda p: (p.account_id, p.currency))
        ),
        user_id=row.user_id,
        provider_id=row.provider_id,
        service=row.service,
        metric=row.metric,
        quantity=row.quantity,
        description=row.description,
        reference=row.reference,
        reverses=row.reverses,
        hold_id=row.hold_id,
    )
    digest = spec.digest()
    recomputed = chain_hash(
        prev_hash=row.prev_hash,
        seq=row.chain_seq,
        transfer_id=row.id,
        kind=row.kind,
        posted_at=row.posted_at,
        digest=digest,
        postings=[(p.account_id, p.currency, p.amount) for p in spec.postings],
    )
    return bool(digest == row.digest and recomputed == row.hash)
