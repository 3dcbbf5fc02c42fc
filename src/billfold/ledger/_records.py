"""What the ledger has posted, as immutable values, and reading it back."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from billfold.domain.errors import (
    NotFound,
)
from billfold.store.db import UnitOfWork
from billfold.store.ledger_tables import postings, transfers


@dataclass(frozen=True, slots=True)
class PostedPosting:
    account_id: int
    currency: str
    amount: int
    balance_after: int


@dataclass(frozen=True, slots=True)
class PostedTransfer:
    """A transfer as it stands in the journal."""

    seq: int
    id: str
    kind: str
    posted_at: datetime
    postings: tuple[PostedPosting, ...]
    user_id: str | None
    provider_id: str | None
    service: str | None
    metric: str | None
    quantity: str | None
    description: str | None
    reference: str | None
    reverses: str | None
    hold_id: str | None
    replayed: bool = False

    def amount_on(self, account_id: int) -> int:
        return sum(p.amount for p in self.postings if p.account_id == account_id)


@dataclass(frozen=True, slots=True)
class HoldView:
    id: str
    account_id: int
    amount: int
    captured: int
    status: str
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    capture_transfer_id: str | None
    user_id: str | None
    provider_id: str | None
    description: str | None
    service: str | None = None
    metric: str | None = None
    quantity: str | None = None


def load_transfers(uow: UnitOfWork, ids: Iterable[str]) -> list[PostedTransfer]:
    """Transfers by id, with their postings, in journal order."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    rows: list[Any] = []
    for start in range(0, len(wanted), 1000):
        rows.extend(
            uow.conn.execute(
                select(transfers).where(transfers.c.id.in_(wanted[start : start + 1000]))
            ).all()
        )
    return _with_postings(uow, rows)


def load_transfers_by_seq(uow: UnitOfWork, seqs: Sequence[int]) -> list[PostedTransfer]:
    if not seqs:
        return []
    rows = uow.conn.execute(select(transfers).where(transfers.c.seq.in_(list(seqs)))).all()
    return _with_postings(uow, rows)


def _with_postings(uow: UnitOfWork, rows: Sequence[object]) -> list[PostedTransfer]:
    seqs = [row.seq for row in rows]  # type: ignore[attr-defined]
    by_seq: dict[int, list[PostedPosting]] = defaultdict(list)
    for start in range(0, len(seqs), 1000):
        for p in uow.conn.execute(
            select(postings)
            .where(postings.c.transfer_seq.in_(seqs[start : start + 1000]))
            .order_by(postings.c.transfer_seq, postings.c.account_id)
        ):
            by_seq[p.transfer_seq].append(
                PostedPosting(p.account_id, p.currency, p.amount, p.balance_after)
            )
    result = [
        PostedTransfer(
            seq=row.seq,  # type: ignore[attr-defined]
            id=row.id,  # type: ignore[attr-defined]
            kind=row.kind,  # type: ignore[attr-defined]
            posted_at=row.posted_at,  # type: ignore[attr-defined]
            postings=tuple(by_seq[row.seq]),  # type: ignore[attr-defined]
            user_id=row.user_id,  # type: ignore[attr-defined]
            provider_id=row.provider_id,  # type: ignore[attr-defined]
            service=row.service,  # type: ignore[attr-defined]
            metric=row.metric,  # type: ignore[attr-defined]
            quantity=row.quantity,  # type: ignore[attr-defined]
            description=row.description,  # type: ignore[attr-defined]
            reference=row.reference,  # type: ignore[attr-defined]
            reverses=row.reverses,  # type: ignore[attr-defined]
            hold_id=row.hold_id,  # type: ignore[attr-defined]
        )
        for row in rows
    ]
    result.sort(key=lambda t: t.seq)
    return result


def get_transfer(uow: UnitOfWork, transfer_id: str) -> PostedTransfer:
    found = load_transfers(uow, [transfer_id])
    if not found:
        raise NotFound(f"no transfer {transfer_id}", code="transfer_not_found", param="id")
    return found[0]
