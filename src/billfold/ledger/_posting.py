"""Posting transfers: every rule of the ledger, checked under its locks, in one pass."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update

from billfold.domain.errors import (
    BillfoldError,
    Conflict,
    InsufficientFunds,
    InvalidRequest,
    NotFound,
)
from billfold.domain.ledger import (
    Balance,
    HoldStatus,
    Posting,
    TransferSpec,
    apply_postings,
    chain_hash,
    draw_from_sources,
    validate_postings,
)
from billfold.ledger._holds import (
    _capture_update,
    _lock_holds,
    _release_for_capture,
)
from billfold.ledger._order import HEAD_FOR_UPDATE
from billfold.ledger._records import HoldView, PostedPosting, PostedTransfer, load_transfers
from billfold.store.bulk import db_datetime, insert_rows, update_rows
from billfold.store.db import UnitOfWork
from billfold.store.ledger_tables import accounts, holds, ledger_head, postings, transfers

MAX_BATCH = 10_000
"""The most transfers one `post_many` call takes; callers split larger work."""


# --- posting --------------------------------------------------------------------------


def post(uow: UnitOfWork, spec: TransferSpec, *, now: datetime) -> PostedTransfer:
    """Posts one transfer, or returns it again if it was already posted with the same content."""
    result = post_many(uow, [spec], now=now)[0]
    if isinstance(result, BillfoldError):
        raise result
    return result


@dataclass
class _Batch:
    """What one post_many call has locked and what it has posted so far."""

    seq: int
    prev_hash: str
    existing: dict[str, str]
    rows: list[Any]
    currencies: dict[int, str]
    balances: dict[int, Balance]
    hold_rows: dict[str, HoldView]
    posted_now: dict[str, tuple[str, PostedTransfer]] = field(default_factory=dict)
    new_transfers: list[tuple[object, ...]] = field(default_factory=list)
    new_postings: list[tuple[object, ...]] = field(default_factory=list)
    hold_updates: list[dict[str, object]] = field(default_factory=list)


def post_many(
    uow: UnitOfWork, specs: Sequence[TransferSpec], *, now: datetime
) -> list[PostedTransfer | BillfoldError]:
    """Posts transfers in order, each on its own merits, under one lock and one commit.

    A transfer refused for its own reason (insufficient funds, a conflicting id, a spent
    hold) does not stop the others; its place in the result holds the error.
    """
    assert len(specs) <= MAX_BATCH, "post_many takes at most MAX_BATCH transfers"
    if not specs:
        return []
    normalised = [_normalise(spec) for spec in specs]
    batch = _lock(uow, normalised)
    db_now = db_datetime(uow.conn, now)
    results: list[PostedTransfer | BillfoldError | str] = []
    for requested in normalised:
        earlier = _earlier(batch, requested)
        if earlier is not None:
            results.append(earlier)
            continue
        try:
            spec, released, changes = _apply(batch, requested, now)
        except BillfoldError as error:
            results.append(error)
            continue
        results.append(_record(batch, spec, released, changes, now, db_now))
    _write(
        uow,
        batch.balances,
        batch.rows,
        batch.new_transfers,
        batch.new_postings,
        batch.hold_updates,
        batch.seq,
        batch.prev_hash,
    )
    replays = {r for r in results if isinstance(r, str)}
    loaded = {t.id: t for t in load_transfers(uow, replays)} if replays else {}
    return [_replayed(loaded[r]) if isinstance(r, str) else r for r in results]


# The hot path's statements, built once (docs/DECISIONS.md, 102).
_ACCOUNTS_FOR_UPDATE = (
    select(accounts.c.id, accounts.c.currency, accounts.c.posted, accounts.c.held, accounts.c.floor)
    .where(accounts.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(accounts.c.id)
    .with_for_update()
)
_DIGESTS = select(transfers.c.id, transfers.c.digest).where(
    transfers.c.id.in_(bindparam("ids", expanding=True))
)
_MOVE_HEAD = (
    update(ledger_head)
    .where(ledger_head.c.id == 1)
    .values(seq=bindparam("head_seq"), hash=bindparam("head_hash"))
)


def _lock(uow: UnitOfWork, specs: Sequence[TransferSpec]) -> _Batch:
    """Locks in the ledger's order: the journal head, the accounts by id, then the holds."""
    head = uow.conn.execute(HEAD_FOR_UPDATE).one()
    existing = _existing_digests(uow, {spec.id for spec in specs})
    account_ids = sorted(
        {p.account_id for spec in specs for p in spec.postings}
        | {spec.overflow_account for spec in specs if spec.overflow_account is not None}
        | {source for spec in specs for source in spec.sources}
    )
    rows = uow.conn.execute(_ACCOUNTS_FOR_UPDATE, {"ids": account_ids}).all()
    if len(rows) != len(account_ids):
        missing = set(account_ids) - {row.id for row in rows}
        raise NotFound(f"no such account: {sorted(missing)}", code="account_not_found")
    return _Batch(
        seq=int(head.seq),
        prev_hash=str(head.hash),
        existing=existing,
        rows=list(rows),
        currencies={row.id: row.currency for row in rows},
        balances={row.id: Balance(row.posted, row.held, row.floor) for row in rows},
        hold_rows=_lock_holds(uow, {spec.hold_id for spec in specs if spec.hold_id}),
    )


def _earlier(batch: _Batch, spec: TransferSpec) -> PostedTransfer | BillfoldError | str | None:
    """What to answer for a transfer id seen before (in the journal or in this batch):
    the same transfer again, or a conflict; None for a new id. A str is an id to load."""
    if spec.id not in batch.existing and spec.id not in batch.posted_now:
        return None
    earlier = batch.existing.get(spec.id) or batch.posted_now[spec.id][0]
    if earlier != spec.digest():
        return Conflict(
            f"transfer {spec.id} was already posted with different content",
            code="transfer_id_reused",
            param="id",
        )
    if spec.id in batch.posted_now:
        return _replayed(batch.posted_now[spec.id][1])
    return spec.id  # Loaded after the writes.


def _apply(
    batch: _Batch, spec: TransferSpec, now: datetime
) -> tuple[TransferSpec, dict[int, Balance], dict[int, Balance]]:
    """Checks a new transfer against the balances so far: (the transfer as posted, the
    balances its hold releases, the balances it changes). Raises what refuses it."""
    for posting in spec.postings:
        if batch.currencies[posting.account_id] != posting.currency:
            raise InvalidRequest(
                "a posting's currency differs from its account's", code="currency_mismatch"
            )
    released: dict[int, Balance] = {}
    if spec.hold_id:
        released = _release_for_capture(spec, batch.hold_rows, batch.balances, now)
    current = ChainMap(released, batch.balances)
    if spec.sources:
        spec = draw_from_sources(spec, current)
    limits = dict(spec.limits) if spec.limits else None
    try:
        changes = apply_postings(
            current,
            spec.postings,
            unbounded=spec.unbounded_accounts,
            covered=spec.covered_accounts,
            limits=limits,
        )
    except InsufficientFunds:
        if spec.overflow_account is None:
            raise
        spec = _overflow(spec, current)
        changes = apply_postings(
            current,
            spec.postings,
            unbounded=spec.unbounded_accounts,
            covered=spec.covered_accounts,
            limits=limits,
        )
    return spec, released, changes


def _record(
    batch: _Batch,
    spec: TransferSpec,
    released: dict[int, Balance],
    changes: dict[int, Balance],
    now: datetime,
    db_now: object,
) -> PostedTransfer:
    """Takes an accepted transfer into the batch: balances, journal row, hash chain."""
    batch.balances.update(released)
    batch.balances.update(changes)
    if spec.hold_id:
        # The hold is spent now: a second capture in the same batch must fail.
        batch.hold_rows[spec.hold_id] = replace(
            batch.hold_rows[spec.hold_id], status=HoldStatus.CAPTURED
        )
        batch.hold_updates.append(_capture_update(spec, batch.hold_rows[spec.hold_id], now))
    batch.seq += 1
    digest = spec.digest()
    posted = PostedTransfer(
        seq=batch.seq,
        id=spec.id,
        kind=str(spec.kind),
        posted_at=now,
        # Postings are merged per account, so an account's balance after this transfer is
        # the balance after its posting.
        postings=tuple(
            PostedPosting(p.account_id, p.currency, p.amount, batch.balances[p.account_id].posted)
            for p in spec.postings
        ),
        user_id=spec.user_id,
        provider_id=spec.provider_id,
        service=spec.service,
        metric=spec.metric,
        quantity=spec.quantity,
        description=spec.description,
        reference=spec.reference,
        reverses=spec.reverses,
        hold_id=spec.hold_id,
    )
    hash_ = chain_hash(
        prev_hash=batch.prev_hash,
        seq=batch.seq,
        transfer_id=spec.id,
        kind=str(spec.kind),
        posted_at=now,
        digest=digest,
        postings=[(p.account_id, p.currency, p.amount) for p in spec.postings],
    )
    batch.new_transfers.append(_transfer_row(posted, db_now, digest, batch.prev_hash, hash_))
    batch.new_postings.extend(
        (batch.seq, p.account_id, p.currency, p.amount, p.balance_after) for p in posted.postings
    )
    batch.prev_hash = hash_
    batch.posted_now[spec.id] = (digest, posted)
    return posted


def _normalise(spec: TransferSpec) -> TransferSpec:
    postings_ = validate_postings(spec.postings)
    return spec if postings_ == spec.postings else replace(spec, postings=postings_)


def _overflow(spec: TransferSpec, balances: Mapping[int, Balance]) -> TransferSpec:
    """The transfer with each debit its account cannot cover moved, in the part it cannot
    cover, to the spec's overflow account (usage that already happened becomes a debt)."""
    assert spec.overflow_account is not None
    postings_: list[Posting] = []
    for posting in spec.postings:
        balance = balances[posting.account_id]
        available = balance.available
        if posting.amount < 0 and available is not None and -posting.amount > available:
            covered = max(available, 0)
            postings_.append(Posting(posting.account_id, posting.currency, -covered))
            postings_.append(
                Posting(spec.overflow_account, posting.currency, posting.amount + covered)
            )
        else:
            postings_.append(posting)
    return replace(spec, postings=validate_postings(postings_), overflow_account=None)


def _replayed(transfer: PostedTransfer) -> PostedTransfer:
    return replace(transfer, replayed=True)


def _existing_digests(uow: UnitOfWork, ids: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    ordered = sorted(ids)
    for start in range(0, len(ordered), 1000):
        chunk = ordered[start : start + 1000]
        for row in uow.conn.execute(_DIGESTS, {"ids": chunk}):
            found[row.id] = row.digest
    return found


def _transfer_row(
    posted: PostedTransfer, posted_at: object, digest: str, prev_hash: str, hash_: str
) -> tuple[object, ...]:
    """The transfer's row in TRANSFER_COLUMNS order, ready for the driver."""
    return (
        posted.seq,
        posted.id,
        posted.kind,
        posted_at,
        posted.user_id,
        posted.provider_id,
        posted.service,
        posted.metric,
        posted.quantity,
        posted.description,
        posted.reference,
        posted.reverses,
        posted.hold_id,
        digest,
        prev_hash,
        hash_,
    )


def _write(
    uow: UnitOfWork,
    balances: dict[int, Balance],
    before: Sequence[object],
    new_transfers: list[tuple[object, ...]],
    new_postings: list[tuple[object, ...]],
    hold_updates: list[dict[str, object]],
    seq: int,
    head_hash: str,
) -> None:
    if not new_transfers:
        return
    changed = [
        (balances[row.id].posted, balances[row.id].held, row.id)  # type: ignore[attr-defined]
        for row in before
        if (row.posted, row.held) != (balances[row.id].posted, balances[row.id].held)  # type: ignore[attr-defined]
    ]
    conn = uow.conn
    update_rows(conn, accounts, ("posted", "held"), "id", changed)
    insert_rows(conn, transfers, TRANSFER_COLUMNS, new_transfers)
    insert_rows(conn, postings, POSTING_COLUMNS, new_postings)
    if hold_updates:
        conn.execute(
            update(holds)
            .where(holds.c.id == bindparam("b_id"))
            .values(
                status=bindparam("b_status"),
                captured=bindparam("b_captured"),
                closed_at=bindparam("b_closed_at"),
                capture_transfer_id=bindparam("b_transfer_id"),
            ),
            hold_updates,
        )
    conn.execute(_MOVE_HEAD, {"head_seq": seq, "head_hash": head_hash})


TRANSFER_COLUMNS = (
    "seq",
    "id",
    "kind",
    "posted_at",
    "user_id",
    "provider_id",
    "service",
    "metric",
    "quantity",
    "description",
    "reference",
    "reverses",
    "hold_id",
    "digest",
    "prev_hash",
    "hash",
)
POSTING_COLUMNS = ("transfer_seq", "account_id", "currency", "amount", "balance_after")
