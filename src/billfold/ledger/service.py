"""The ledger engine: posts transfers, keeps cached balances, manages holds.

Every function here works inside the caller's unit of work and never commits.

Concurrency. Every writer of transfers first locks the journal head (one row), then the
accounts it touches, then the holds it touches. The head lock orders all transfers (the
hash chain needs a total order anyway), which makes the duplicate-id check race-free and
rules out deadlocks between transfers. Holds lock only their account, then the hold,
which keeps to the same order. On SQLite BEGIN IMMEDIATE already serialises writers; on
PostgreSQL the locks are `SELECT ... FOR UPDATE`. Throughput comes from batching: many
transfers share one head lock and one commit (`post_many`).
"""

from __future__ import annotations

from collections import ChainMap, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from billfold.core.directory import BalanceView, UserView
from billfold.domain.errors import (
    BillfoldError,
    Conflict,
    InsufficientFunds,
    InvalidRequest,
    NotFound,
)
from billfold.domain.ledger import (
    PLATFORM_OWNER_ID,
    AccountKind,
    Balance,
    ChargeAccounts,
    HoldStatus,
    OwnerType,
    Posting,
    TransferKind,
    TransferSpec,
    apply_postings,
    chain_hash,
    check_hold,
    reversal_postings,
    validate_postings,
)
from billfold.domain.money import from_units, to_units
from billfold.store.bulk import db_datetime, insert_rows, update_rows
from billfold.store.db import UnitOfWork
from billfold.store.tables import accounts, holds, ledger_head, postings, transfers

MAX_BATCH = 10_000
"""The most transfers one `post_many` call takes; callers split larger work."""


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


# --- accounts -------------------------------------------------------------------------


# Account ids never change, so they are cached per database (engine) once committed.
_ACCOUNT_IDS: WeakKeyDictionary[Engine, dict[tuple[str, str, str, str], int]] = WeakKeyDictionary()


def ensure_account(
    uow: UnitOfWork,
    owner_type: OwnerType,
    owner_id: str,
    kind: AccountKind,
    currency: str,
    *,
    now: datetime,
    floor: int | None = None,
) -> int:
    """The account's id, creating it (with `floor`) if it does not exist yet."""
    known = _ACCOUNT_IDS.setdefault(uow.engine, {})
    key = (str(owner_type), owner_id, str(kind), currency)
    cached = known.get(key)
    if cached is not None:
        return cached
    values = {
        "owner_type": key[0],
        "owner_id": owner_id,
        "kind": key[2],
        "currency": currency,
        "posted": 0,
        "held": 0,
        "floor": floor,
        "created_at": now,
    }
    insert = postgresql.insert if uow.dialect == "postgresql" else sqlite.insert
    uow.conn.execute(insert(accounts).values(values).on_conflict_do_nothing())
    account_id = int(
        uow.conn.execute(
            select(accounts.c.id).where(
                accounts.c.owner_type == key[0],
                accounts.c.owner_id == owner_id,
                accounts.c.kind == key[2],
                accounts.c.currency == currency,
            )
        ).scalar_one()
    )
    # Another transaction may use the id only once this one has committed the row:
    # until then it is invisible to them, and a rollback would unmake it.
    uow.after_commit(lambda: known.__setitem__(key, account_id))
    return account_id


def find_account(
    uow: UnitOfWork, owner_type: OwnerType, owner_id: str, kind: AccountKind, currency: str
) -> int | None:
    return uow.conn.execute(
        select(accounts.c.id).where(
            accounts.c.owner_type == str(owner_type),
            accounts.c.owner_id == owner_id,
            accounts.c.kind == str(kind),
            accounts.c.currency == currency,
        )
    ).scalar_one_or_none()


def balance(uow: UnitOfWork, account_id: int, *, as_of: datetime | None = None) -> Balance:
    """The account's balance now (cached) or as of a past instant (from the journal)."""
    row = uow.conn.execute(
        select(accounts.c.posted, accounts.c.held, accounts.c.floor).where(
            accounts.c.id == account_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound("no such account", code="account_not_found")
    if as_of is None:
        return Balance(row.posted, row.held, row.floor)
    posted = uow.conn.execute(
        select(func.coalesce(func.sum(postings.c.amount), 0))
        .select_from(postings.join(transfers, postings.c.transfer_seq == transfers.c.seq))
        .where(postings.c.account_id == account_id, transfers.c.posted_at <= as_of)
    ).scalar_one()
    held = uow.conn.execute(
        select(func.coalesce(func.sum(holds.c.amount), 0)).where(
            holds.c.account_id == account_id,
            holds.c.created_at <= as_of,
            (holds.c.closed_at.is_(None)) | (holds.c.closed_at > as_of),
        )
    ).scalar_one()
    return Balance(int(posted), int(held), row.floor)


def set_floor(uow: UnitOfWork, account_id: int, floor: int | None) -> None:
    """Changes an account's floor; a stricter floor does not undo what is already spent."""
    uow.conn.execute(update(accounts).where(accounts.c.id == account_id).values(floor=floor))


# --- posting --------------------------------------------------------------------------


def post(uow: UnitOfWork, spec: TransferSpec, *, now: datetime) -> PostedTransfer:
    """Posts one transfer, or returns it again if it was already posted with the same content."""
    result = post_many(uow, [spec], now=now)[0]
    if isinstance(result, BillfoldError):
        raise result
    return result


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

    head = uow.conn.execute(
        select(ledger_head.c.seq, ledger_head.c.hash).where(ledger_head.c.id == 1).with_for_update()
    ).one()
    seq, prev_hash = int(head.seq), str(head.hash)

    existing = _existing_digests(uow, {spec.id for spec in normalised})
    account_ids = sorted(
        {p.account_id for spec in normalised for p in spec.postings}
        | {spec.overflow_account for spec in normalised if spec.overflow_account is not None}
    )
    rows = uow.conn.execute(
        select(
            accounts.c.id, accounts.c.currency, accounts.c.posted, accounts.c.held, accounts.c.floor
        )
        .where(accounts.c.id.in_(account_ids))
        .order_by(accounts.c.id)
        .with_for_update()
    ).all()
    if len(rows) != len(account_ids):
        missing = set(account_ids) - {row.id for row in rows}
        raise NotFound(f"no such account: {sorted(missing)}", code="account_not_found")
    currencies = {row.id: row.currency for row in rows}
    balances = {row.id: Balance(row.posted, row.held, row.floor) for row in rows}
    hold_rows = _lock_holds(uow, {spec.hold_id for spec in normalised if spec.hold_id})

    results: list[PostedTransfer | BillfoldError | str] = []
    new_transfers: list[tuple[object, ...]] = []
    new_postings: list[tuple[object, ...]] = []
    db_now = db_datetime(uow.conn, now)
    hold_updates: list[dict[str, object]] = []
    posted_now: dict[str, tuple[str, PostedTransfer]] = {}
    for requested in normalised:
        spec = requested
        digest = spec.digest()
        if spec.id in existing or spec.id in posted_now:
            earlier = existing.get(spec.id) or posted_now[spec.id][0]
            if earlier != digest:
                results.append(
                    Conflict(
                        f"transfer {spec.id} was already posted with different content",
                        code="transfer_id_reused",
                        param="id",
                    )
                )
            elif spec.id in posted_now:
                results.append(_replayed(posted_now[spec.id][1]))
            else:
                results.append(spec.id)  # Loaded below, after the writes.
            continue
        try:
            for posting in spec.postings:
                if currencies[posting.account_id] != posting.currency:
                    raise InvalidRequest(
                        "a posting's currency differs from its account's", code="currency_mismatch"
                    )
            released: dict[int, Balance] = {}
            if spec.hold_id:
                released = _release_for_capture(spec, hold_rows, balances, now)
            try:
                changes = apply_postings(
                    ChainMap(released, balances), spec.postings, unbounded=spec.unbounded_accounts
                )
            except InsufficientFunds:
                if spec.overflow_account is None:
                    raise
                spec = _overflow(spec, ChainMap(released, balances))
                digest = spec.digest()
                changes = apply_postings(
                    ChainMap(released, balances), spec.postings, unbounded=spec.unbounded_accounts
                )
        except BillfoldError as error:
            results.append(error)
            continue
        balances.update(released)
        balances.update(changes)
        if spec.hold_id:
            # The hold is spent now: a second capture in the same batch must fail.
            hold_rows[spec.hold_id] = replace(hold_rows[spec.hold_id], status=HoldStatus.CAPTURED)
        seq += 1
        posted = PostedTransfer(
            seq=seq,
            id=spec.id,
            kind=str(spec.kind),
            posted_at=now,
            # Postings are merged per account, so an account's balance after this
            # transfer is the balance after its posting.
            postings=tuple(
                PostedPosting(p.account_id, p.currency, p.amount, balances[p.account_id].posted)
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
            prev_hash=prev_hash,
            seq=seq,
            transfer_id=spec.id,
            kind=str(spec.kind),
            posted_at=now,
            digest=digest,
            postings=[(p.account_id, p.currency, p.amount) for p in spec.postings],
        )
        new_transfers.append(_transfer_row(posted, db_now, digest, prev_hash, hash_))
        new_postings.extend(
            (seq, p.account_id, p.currency, p.amount, p.balance_after) for p in posted.postings
        )
        if spec.hold_id:
            hold_updates.append(_capture_update(spec, hold_rows[spec.hold_id], now))
        prev_hash = hash_
        posted_now[spec.id] = (digest, posted)
        results.append(posted)

    _write(uow, balances, rows, new_transfers, new_postings, hold_updates, seq, prev_hash)
    replays = {r for r in results if isinstance(r, str)}
    loaded = {t.id: t for t in load_transfers(uow, replays)} if replays else {}
    return [_replayed(loaded[r]) if isinstance(r, str) else r for r in results]


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
        for row in uow.conn.execute(
            select(transfers.c.id, transfers.c.digest).where(transfers.c.id.in_(chunk))
        ):
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
    conn.execute(update(ledger_head).where(ledger_head.c.id == 1).values(seq=seq, hash=head_hash))


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


# --- holds ----------------------------------------------------------------------------


def _hold_view(row: object) -> HoldView:
    return HoldView(**{name: getattr(row, name) for name in HoldView.__slots__})


def _lock_holds(uow: UnitOfWork, hold_ids: set[str | None]) -> dict[str, HoldView]:
    wanted = sorted(h for h in hold_ids if h)
    if not wanted:
        return {}
    rows = uow.conn.execute(
        select(holds).where(holds.c.id.in_(wanted)).order_by(holds.c.id).with_for_update()
    ).all()
    return {row.id: _hold_view(row) for row in rows}


def _release_for_capture(
    spec: TransferSpec, hold_rows: dict[str, HoldView], balances: dict[int, Balance], now: datetime
) -> dict[int, Balance]:
    """Checks that the hold may be captured by `spec`; the balance with its reservation released."""
    assert spec.hold_id is not None
    hold = hold_rows.get(spec.hold_id)
    if hold is None:
        raise NotFound(f"no hold {spec.hold_id}", code="hold_not_found", param="hold")
    if hold.status != HoldStatus.PENDING:
        raise Conflict(f"the hold is {hold.status}, not pending", code="hold_not_pending")
    if hold.expires_at <= now:
        raise Conflict("the hold has expired", code="hold_expired")
    debit = -sum(p.amount for p in spec.postings if p.account_id == hold.account_id)
    # Usage that already happened (a transfer with an overflow account) may cost more
    # than was held; the rest is paid like any usage. Other captures stay within the hold.
    if debit > hold.amount and spec.overflow_account is None:
        raise InvalidRequest(
            "a capture may not take more than the hold reserved",
            code="capture_exceeds_hold",
            param="amount",
        )
    before = balances[hold.account_id]
    released = {hold.account_id: Balance(before.posted, before.held - hold.amount, before.floor)}
    return released


def _capture_update(spec: TransferSpec, hold: HoldView, now: datetime) -> dict[str, object]:
    assert spec.hold_id is not None
    captured = min(
        -sum(p.amount for p in spec.postings if p.account_id == hold.account_id), hold.amount
    )
    return {
        "b_id": spec.hold_id,
        "b_status": str(HoldStatus.CAPTURED),
        "b_captured": captured,
        "b_closed_at": now,
        "b_transfer_id": spec.id,
    }


def create_hold(
    uow: UnitOfWork,
    *,
    hold_id: str,
    account_id: int,
    amount: int,
    expires_at: datetime,
    now: datetime,
    user_id: str | None = None,
    provider_id: str | None = None,
    description: str | None = None,
    service: str | None = None,
    metric: str | None = None,
    quantity: str | None = None,
) -> HoldView:
    """Reserves `amount` on the account until `expires_at`; idempotent by `hold_id`."""
    if amount < 0:
        raise InvalidRequest("a hold must not be for a negative amount", param="amount")
    if expires_at <= now:
        raise InvalidRequest("a hold must expire in the future", param="expires_at")
    row = uow.conn.execute(
        select(accounts.c.posted, accounts.c.held, accounts.c.floor)
        .where(accounts.c.id == account_id)
        .with_for_update()
    ).one_or_none()
    if row is None:
        raise NotFound("no such account", code="account_not_found")
    existing = uow.conn.execute(select(holds).where(holds.c.id == hold_id)).one_or_none()
    if existing is not None:
        view = _hold_view(existing)
        if (view.account_id, view.amount) != (account_id, amount):
            raise Conflict(f"hold {hold_id} exists with different content", code="hold_id_reused")
        return view
    released = _expire_account_holds(uow, account_id, now)
    current = Balance(row.posted, row.held - released, row.floor)
    after = check_hold(current, amount)
    uow.conn.execute(update(accounts).where(accounts.c.id == account_id).values(held=after.held))
    values = {
        "id": hold_id,
        "account_id": account_id,
        "amount": amount,
        "captured": 0,
        "status": str(HoldStatus.PENDING),
        "created_at": now,
        "expires_at": expires_at,
        "closed_at": None,
        "capture_transfer_id": None,
        "user_id": user_id,
        "provider_id": provider_id,
        "description": description,
        "service": service,
        "metric": metric,
        "quantity": quantity,
    }
    uow.conn.execute(holds.insert().values(values))
    return HoldView(**values)  # type: ignore[arg-type]


def get_hold(uow: UnitOfWork, hold_id: str) -> HoldView:
    row = uow.conn.execute(select(holds).where(holds.c.id == hold_id)).one_or_none()
    if row is None:
        raise NotFound(f"no hold {hold_id}", code="hold_not_found", param="id")
    return _hold_view(row)


def void_hold(uow: UnitOfWork, hold_id: str, *, now: datetime) -> HoldView:
    """Releases a pending hold; voiding it again returns it unchanged."""
    return release_hold(uow, hold_id, now=now, status=HoldStatus.VOIDED)


def release_hold(uow: UnitOfWork, hold_id: str, *, now: datetime, status: HoldStatus) -> HoldView:
    """Closes a pending hold with `status` and releases its reservation, moving no money.

    Voiding is one use; a capture whose usage cost nothing more is the other. Closing it
    again with the same status returns it unchanged.
    """
    hold = get_hold(uow, hold_id)
    row = uow.conn.execute(
        select(accounts.c.held).where(accounts.c.id == hold.account_id).with_for_update()
    ).one()
    hold = _hold_view(
        uow.conn.execute(select(holds).where(holds.c.id == hold_id).with_for_update()).one()
    )
    if hold.status == status:
        return hold
    if hold.status != HoldStatus.PENDING:
        raise Conflict(f"the hold is {hold.status} and cannot be {status}", code="hold_not_pending")
    uow.conn.execute(
        update(accounts).where(accounts.c.id == hold.account_id).values(held=row.held - hold.amount)
    )
    uow.conn.execute(
        update(holds).where(holds.c.id == hold_id).values(status=str(status), closed_at=now)
    )
    return get_hold(uow, hold_id)


def _expire_account_holds(uow: UnitOfWork, account_id: int, now: datetime) -> int:
    """Expires the account's lapsed holds (the account row is locked); returns the release."""
    lapsed = uow.conn.execute(
        select(holds.c.id, holds.c.amount).where(
            holds.c.account_id == account_id,
            holds.c.status == str(HoldStatus.PENDING),
            holds.c.expires_at <= now,
        )
    ).all()
    if not lapsed:
        return 0
    uow.conn.execute(
        update(holds)
        .where(holds.c.id.in_([h.id for h in lapsed]))
        .values(status=str(HoldStatus.EXPIRED), closed_at=now)
    )
    released = sum(h.amount for h in lapsed)
    uow.conn.execute(
        update(accounts).where(accounts.c.id == account_id).values(held=accounts.c.held - released)
    )
    return int(released)


def expire_holds(uow: UnitOfWork, *, now: datetime, limit: int = 1000) -> int:
    """Expires up to `limit` lapsed holds across accounts; returns how many it expired."""
    account_ids = (
        uow.conn.execute(
            select(holds.c.account_id)
            .where(holds.c.status == str(HoldStatus.PENDING), holds.c.expires_at <= now)
            .distinct()
            .limit(limit)
        )
        .scalars()
        .all()
    )
    expired = 0
    for account_id in sorted(account_ids):
        uow.conn.execute(
            select(accounts.c.id).where(accounts.c.id == account_id).with_for_update()
        ).one()
        before = uow.conn.execute(
            select(func.count()).where(
                holds.c.account_id == account_id,
                holds.c.status == str(HoldStatus.PENDING),
                holds.c.expires_at <= now,
            )
        ).scalar_one()
        _expire_account_holds(uow, account_id, now)
        expired += int(before)
    return expired


# --- reversals ------------------------------------------------------------------------


def reversed_so_far(uow: UnitOfWork, original_id: str) -> dict[int, int]:
    """Per account, the sum of the postings of every reversal of `original_id`."""
    rows = uow.conn.execute(
        select(postings.c.account_id, func.sum(postings.c.amount))
        .select_from(postings.join(transfers, postings.c.transfer_seq == transfers.c.seq))
        .where(transfers.c.reverses == original_id)
        .group_by(postings.c.account_id)
    ).all()
    return {int(account_id): int(total) for account_id, total in rows}


def reversal_spec(
    uow: UnitOfWork,
    *,
    original: PostedTransfer,
    transfer_id: str,
    anchor_account_id: int,
    anchor_amount: int,
    kind: TransferKind,
    description: str | None,
    reference: str | None = None,
) -> TransferSpec:
    """A transfer that gives back `anchor_amount` on the anchor account, the rest in proportion.

    The anchor is the posting being refunded (a user's wallet for a charge). Every other
    posting of the original is reversed in the same proportion, rounded half-up; the
    reversal that completes the original gives back exactly what is left per account,
    so repeated partial refunds never give back more than the original moved.
    """
    original_anchor = original.amount_on(anchor_account_id)
    assert original_anchor != 0
    done = reversed_so_far(uow, original.id)
    left_on_anchor = -original_anchor - done.get(anchor_account_id, 0)
    if anchor_amount <= 0:
        raise InvalidRequest("the amount must be greater than zero", param="amount")
    if abs(anchor_amount) > abs(left_on_anchor):
        raise InvalidRequest(
            "the amount is more than is left to refund on this transfer",
            code="refund_exceeds_original",
            param="amount",
        )
    sign = 1 if left_on_anchor > 0 else -1
    originals = [Posting(p.account_id, p.currency, p.amount) for p in original.postings]
    if anchor_amount == abs(left_on_anchor):
        result = tuple(
            Posting(p.account_id, p.currency, -p.amount - done.get(p.account_id, 0))
            for p in originals
        )
    else:
        result = reversal_postings(originals, anchor_account_id, sign * anchor_amount)
    return TransferSpec(
        id=transfer_id,
        kind=kind,
        postings=result,
        user_id=original.user_id,
        provider_id=original.provider_id,
        service=original.service,
        metric=original.metric,
        description=description,
        reference=reference,
        reverses=original.id,
    )


def charge_accounts(
    uow: UnitOfWork,
    user_id: str,
    currency: str,
    *,
    prepaid: bool,
    provider_id: str | None,
    now: datetime,
    taxes: bool = False,
    overflow: bool = False,
) -> ChargeAccounts:
    """The accounts a charge to the user moves: a prepaid user pays from the wallet (and,
    with `overflow`, what it cannot cover becomes debt on the receivable), a postpaid user
    accrues it on the receivable; the provider earns, the platform takes its revenue."""
    wallet = ensure_account(uow, OwnerType.USER, user_id, AccountKind.WALLET, currency, now=now)
    receivable = ensure_account(
        uow, OwnerType.USER, user_id, AccountKind.RECEIVABLE, currency, now=now
    )
    platform = PLATFORM_OWNER_ID
    return ChargeAccounts(
        payer=wallet if prepaid else receivable,
        revenue=ensure_account(
            uow, OwnerType.PLATFORM, platform, AccountKind.PLATFORM_REVENUE, currency, now=now
        ),
        earnings=None
        if provider_id is None
        else ensure_account(
            uow, OwnerType.PROVIDER, provider_id, AccountKind.PROVIDER_EARNINGS, currency, now=now
        ),
        taxes=ensure_account(
            uow, OwnerType.PLATFORM, platform, AccountKind.TAXES, currency, now=now
        )
        if taxes
        else None,
        overflow=receivable if overflow and prepaid else None,
    )


# --- a user's standing ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Standing:
    """A user's money in ledger units: the one answer to "how much may this user spend"."""

    posted: int
    held: int
    credit_limit: int
    owed: int
    """What the user's receivable says the user owes (usage the wallet did not cover, or
    postpaid charges not yet settled)."""

    @property
    def available(self) -> int:
        """What may still be spent or held now: `posted - held + credit_limit`."""
        return self.posted - self.held + self.credit_limit


def user_standing(
    uow: UnitOfWork,
    user_id: str,
    currency: str,
    credit_limit: int,
    *,
    as_of: datetime | None = None,
) -> Standing:
    """The user's wallet and receivable in `currency`, now or as of a past moment."""
    wallet_id = find_account(uow, OwnerType.USER, user_id, AccountKind.WALLET, currency)
    receivable_id = find_account(uow, OwnerType.USER, user_id, AccountKind.RECEIVABLE, currency)
    wallet = balance(uow, wallet_id, as_of=as_of) if wallet_id else None
    owed = -balance(uow, receivable_id, as_of=as_of).posted if receivable_id else 0
    return Standing(
        posted=wallet.posted if wallet else 0,
        held=wallet.held if wallet else 0,
        credit_limit=credit_limit,
        owed=owed,
    )


def user_balance(uow: UnitOfWork, user: UserView, *, as_of: datetime | None = None) -> BalanceView:
    """The balance a user is shown: `available = posted - held + credit_limit`."""
    cur = user.currency
    standing = user_standing(uow, user.id, cur.code, to_units(user.credit_limit, cur), as_of=as_of)
    return BalanceView(
        currency=cur,
        posted=from_units(standing.posted, cur),
        held=from_units(standing.held, cur),
        available=from_units(standing.available, cur),
        credit_limit=user.credit_limit,
        receivable=from_units(standing.owed, cur),
        as_of=as_of,
    )
