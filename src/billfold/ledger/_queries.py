"""Reading the ledger for reports: which transfers, and what they did to which accounts.

Only the ledger package touches the accounts, transfers and postings tables (an import
contract keeps it so); analytics, settlement, alerts, exports and the consumption records
ask here. A `TransferFilter` says which transfers; the functions say what to sum or list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, true

from billfold.domain.ledger import AccountKind, OwnerType, TransferKind
from billfold.ledger._records import PostedTransfer, load_transfers_by_seq
from billfold.store.db import UnitOfWork
from billfold.store.ledger_tables import accounts, postings, transfers

EARNING_KINDS: Final = (str(AccountKind.PROVIDER_EARNINGS), str(AccountKind.PLATFORM_REVENUE))
CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class TransferFilter:
    """Which transfers: every field that is set narrows the selection."""

    after_seq: int | None = None
    after_chains: tuple[tuple[int, int], ...] | None = None
    """(chain, chain_seq) marks: only the transfers past their chain's mark (a chain not
    named: all of it). Within a chain, places follow the commit order, so a reader that
    keeps these marks never misses a transfer that commits after it read."""
    posted_from: datetime | None = None
    posted_to: datetime | None = None
    """Excluded: [posted_from, posted_to)."""
    kinds: tuple[TransferKind, ...] | None = None
    exclude_kinds: tuple[TransferKind, ...] = ()
    provider_id: str | None = None
    service: str | None = None
    user_id: str | None = None
    metered: bool = False
    """Only usage charges (transfers that name a metric)."""

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.after_seq is not None:
            found.append(transfers.c.seq > self.after_seq)
        if self.after_chains is not None:
            marks = dict(self.after_chains)
            found.append(
                or_(
                    *(
                        and_(transfers.c.chain == chain, transfers.c.chain_seq > seq)
                        for chain, seq in sorted(marks.items())
                    ),
                    transfers.c.chain.notin_(list(marks)) if marks else true(),
                )
            )
        if self.posted_from is not None:
            found.append(transfers.c.posted_at >= self.posted_from)
        if self.posted_to is not None:
            found.append(transfers.c.posted_at < self.posted_to)
        if self.kinds is not None:
            found.append(transfers.c.kind.in_([str(k) for k in self.kinds]))
        if self.exclude_kinds:
            found.append(transfers.c.kind.notin_([str(k) for k in self.exclude_kinds]))
        if self.provider_id is not None:
            found.append(transfers.c.provider_id == self.provider_id)
        if self.service is not None:
            found.append(transfers.c.service == self.service)
        if self.user_id is not None:
            found.append(transfers.c.user_id == self.user_id)
        if self.metered:
            found.append(transfers.c.metric.is_not(None))
        return found


@dataclass(frozen=True, slots=True)
class AccountRef:
    id: int
    owner_type: str
    owner_id: str
    kind: str
    currency: str


def debtors(uow: UnitOfWork) -> list[tuple[str, str, int]]:
    """(user id, currency, units owed) of every user whose receivable shows a debt."""
    rows = uow.conn.execute(
        select(accounts.c.owner_id, accounts.c.currency, accounts.c.posted).where(
            accounts.c.owner_type == str(OwnerType.USER),
            accounts.c.kind == str(AccountKind.RECEIVABLE),
            accounts.c.posted < 0,
        )
    ).all()
    return [(str(r.owner_id), str(r.currency), -int(r.posted)) for r in rows]


def accounts_of(
    uow: UnitOfWork,
    owner_type: OwnerType,
    owner_ids: Iterable[str] | None = None,
    kinds: Iterable[AccountKind] | None = None,
) -> list[AccountRef]:
    """The accounts of these owners (all owners of the type when None), of these kinds."""
    base = select(
        accounts.c.id,
        accounts.c.owner_type,
        accounts.c.owner_id,
        accounts.c.kind,
        accounts.c.currency,
    ).where(accounts.c.owner_type == str(owner_type))
    if kinds is not None:
        base = base.where(accounts.c.kind.in_([str(k) for k in kinds]))
    queries: list[Select[Any]] = [base]
    if owner_ids is not None:
        # owner_type first: the lookup then uses the accounts' unique index.
        wanted = sorted(set(owner_ids))
        queries = [
            base.where(accounts.c.owner_id.in_(wanted[offset : offset + CHUNK]))
            for offset in range(0, len(wanted), CHUNK)
        ]
    return [
        AccountRef(int(row.id), row.owner_type, row.owner_id, row.kind, row.currency)
        for query in queries
        for row in uow.conn.execute(query.order_by(accounts.c.id))
    ]


GROUPS: Final = {
    "currency": postings.c.currency,
    "user_id": transfers.c.user_id,
    "provider_id": transfers.c.provider_id,
    "service": transfers.c.service,
    "account_kind": accounts.c.kind,
    "account_id": postings.c.account_id,
    "kind": transfers.c.kind,
}


def sum_postings(
    uow: UnitOfWork,
    which: TransferFilter,
    *,
    account_kinds: Iterable[str] | None = None,
    account_ids: Iterable[int] | None = None,
    group_by: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """The sum of the postings of the selected transfers on the selected accounts, per
    group (names from GROUPS): rows of (group values..., sum in ledger units)."""
    columns = [GROUPS[name] for name in group_by]
    query = (
        select(*columns, func.coalesce(func.sum(postings.c.amount), 0))
        .select_from(
            postings.join(transfers, postings.c.transfer_seq == transfers.c.seq).join(
                accounts, accounts.c.id == postings.c.account_id
            )
        )
        .where(*which.conditions())
    )
    if account_kinds is not None:
        query = query.where(accounts.c.kind.in_(list(account_kinds)))
    if account_ids is not None:
        query = query.where(postings.c.account_id.in_(list(account_ids)))
    if columns:
        query = query.group_by(*columns)
    return [(*row[:-1], int(row[-1])) for row in uow.conn.execute(query)]


@dataclass(frozen=True, slots=True)
class Earning:
    """What one transfer did to provider earnings and platform revenue, in one currency."""

    seq: int
    posted_at: datetime
    provider_id: str | None
    service: str | None
    user_id: str | None
    currency: str
    provider_share: int
    commission: int


def earnings(
    uow: UnitOfWork, which: TransferFilter, *, limit: int | None = None
) -> tuple[list[Earning], int, dict[int, int]]:
    """Each selected transfer's postings on provider earnings and platform revenue, in
    journal order; also how many transfers were read and, per chain, the last place read.

    With a limit, what is read of each chain is a run from its start in the selection:
    within a chain, seq and chain_seq follow the same (commit) order."""
    query = (
        select(
            transfers.c.seq,
            transfers.c.posted_at,
            transfers.c.provider_id,
            transfers.c.service,
            transfers.c.user_id,
            transfers.c.chain,
            transfers.c.chain_seq,
        )
        .where(*which.conditions())
        .order_by(transfers.c.seq)
    )
    if limit is not None:
        query = query.limit(limit)
    heads: list[Any] = list(uow.conn.execute(query))
    if not heads:
        return [], 0, {}
    reached: dict[int, int] = {}
    for row in heads:
        reached[int(row.chain)] = max(reached.get(int(row.chain), 0), int(row.chain_seq))
    by_seq = {row.seq: row for row in heads}
    parts: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    first, last = heads[0].seq, heads[-1].seq
    for row in uow.conn.execute(
        select(postings.c.transfer_seq, postings.c.amount, postings.c.currency, accounts.c.kind)
        .join(accounts, accounts.c.id == postings.c.account_id)
        .where(
            postings.c.transfer_seq >= first,
            postings.c.transfer_seq <= last,
            accounts.c.kind.in_(EARNING_KINDS),
        )
    ):
        if row.transfer_seq in by_seq:
            split = parts[row.transfer_seq][row.currency]
            split[0 if row.kind == AccountKind.PROVIDER_EARNINGS else 1] += int(row.amount)
    found = [
        Earning(
            seq,
            by_seq[seq].posted_at,
            by_seq[seq].provider_id,
            by_seq[seq].service,
            by_seq[seq].user_id,
            code,
            share,
            commission,
        )
        for seq, by_currency in sorted(parts.items())
        for code, (share, commission) in by_currency.items()
    ]
    return found, len(heads), reached


def postings_on(
    uow: UnitOfWork, account_ids: Sequence[int], which: TransferFilter
) -> list[tuple[datetime, int]]:
    """(posted at, amount) of every posting of the selected transfers on these accounts."""
    if not account_ids:
        return []
    return [
        (row.posted_at, int(row.amount))
        for row in uow.conn.execute(
            select(transfers.c.posted_at, postings.c.amount)
            .select_from(postings.join(transfers, postings.c.transfer_seq == transfers.c.seq))
            .where(postings.c.account_id.in_(list(account_ids)), *which.conditions())
        )
    ]


def last_seq_on(uow: UnitOfWork, account_id: int, which: TransferFilter) -> int | None:
    """The journal position of the latest selected transfer that moved the account."""
    found = uow.conn.execute(
        select(func.max(postings.c.transfer_seq))
        .select_from(postings.join(transfers, postings.c.transfer_seq == transfers.c.seq))
        .where(postings.c.account_id == account_id, *which.conditions())
    ).scalar_one()
    return None if found is None else int(found)


def seqs_touching(
    uow: UnitOfWork, account_ids: Sequence[int], *, limit: int, before_seq: int | None = None
) -> list[int]:
    """The journal positions of transfers that moved any of these accounts, newest first:
    one per transfer, however many of the accounts it moved."""
    query = (
        select(postings.c.transfer_seq)
        .where(postings.c.account_id.in_(list(account_ids)))
        .group_by(postings.c.transfer_seq)
        .order_by(postings.c.transfer_seq.desc())
        .limit(limit)
    )
    if before_seq is not None:
        query = query.where(postings.c.transfer_seq < before_seq)
    return [int(seq) for seq in uow.conn.execute(query).scalars()]


def seq_of(uow: UnitOfWork, transfer_id: str, which: TransferFilter) -> int | None:
    """A transfer's journal position, if it exists and is selected."""
    found = uow.conn.execute(
        select(transfers.c.seq).where(transfers.c.id == transfer_id, *which.conditions())
    ).scalar_one_or_none()
    return None if found is None else int(found)


def existing_ids(uow: UnitOfWork, ids: Sequence[str]) -> set[str]:
    """Which of these transfer ids exist."""
    found: set[str] = set()
    for offset in range(0, len(ids), CHUNK):
        found |= set(
            uow.conn.execute(
                select(transfers.c.id).where(transfers.c.id.in_(ids[offset : offset + CHUNK]))
            ).scalars()
        )
    return found


def account_kinds(uow: UnitOfWork, account_ids: Iterable[int]) -> dict[int, str]:
    wanted = sorted(set(account_ids))
    found: dict[int, str] = {}
    for offset in range(0, len(wanted), CHUNK):
        for row in uow.conn.execute(
            select(accounts.c.id, accounts.c.kind).where(
                accounts.c.id.in_(wanted[offset : offset + CHUNK])
            )
        ):
            found[int(row.id)] = row.kind
    return found


def transfer_pages(
    uow: UnitOfWork, which: TransferFilter, *, page: int = 1000
) -> Iterator[list[PostedTransfer]]:
    """The selected transfers in journal order, a page at a time (for exports)."""
    after = which.after_seq or 0
    while True:
        seqs = list(
            uow.conn.execute(
                select(transfers.c.seq)
                .where(*which.conditions(), transfers.c.seq > after)
                .order_by(transfers.c.seq)
                .limit(page)
            ).scalars()
        )
        if not seqs:
            return
        loaded = sorted(load_transfers_by_seq(uow, seqs), key=lambda t: t.seq)
        yield loaded
        after = seqs[-1]
