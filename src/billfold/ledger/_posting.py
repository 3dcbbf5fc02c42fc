"""Posting transfers: every rule of the ledger, checked under its locks, in one pass."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Table, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite

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
    chain_of,
    draw_from_sources,
    validate_postings,
)
from billfold.ledger._holds import (
    _capture_update,
    _lock_holds,
    _release_for_capture,
)
from billfold.ledger._order import chain_count, lock_chains, select_in
from billfold.ledger._records import HoldView, PostedPosting, PostedTransfer, load_transfers
from billfold.store.bulk import (
    array_element,
    db_datetime,
    driver_execute,
    driver_execute_many,
    insert_rows,
    update_rows,
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
    """What one post_many call has locked and what it has posted so far.

    Balances are per slot, (account id, part): an ordinary account's part is 0; a parted
    account (a hot one) has a part per journal chain, and a transfer moves the part of its
    own chain (docs/DECISIONS.md, 114)."""

    chains: int
    heads: dict[int, tuple[int, str]]
    seqs: list[int]
    """Journal numbers for the new transfers, in order, taken once every lock is held:
    so one account's transfers are numbered in the order they commit (PostgreSQL's
    sequence; on SQLite the writer holds the database and counts on from the last)."""
    existing: dict[str, str]
    currencies: dict[int, str]
    parted: frozenset[int]
    before: dict[tuple[int, int], Balance]
    balances: dict[tuple[int, int], Balance]
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
    count = chain_count(uow)
    memo: dict[tuple[str | None, str | None], int] = {}
    chains = []
    for spec in normalised:
        key = (spec.user_id, spec.provider_id)
        chain = memo.get(key)
        if chain is None:
            chain = memo[key] = chain_of(spec.user_id, spec.provider_id, count)
        chains.append(chain)
    batch = _lock(uow, normalised, chains, count)
    db_now = db_datetime(uow.conn, now)
    results: list[PostedTransfer | BillfoldError | str] = []
    for requested, chain in zip(normalised, chains, strict=True):
        earlier = _earlier(batch, requested)
        if earlier is not None:
            results.append(earlier)
            continue
        try:
            spec, view, changes = _apply(batch, requested, chain, now)
        except BillfoldError as error:
            results.append(error)
            continue
        results.append(_record(batch, spec, chain, view, changes, now, db_now))
    _write(uow, batch)
    replays = {r for r in results if isinstance(r, str)}
    loaded = {t.id: t for t in load_transfers(uow, replays)} if replays else {}
    return [_replayed(loaded[r]) if isinstance(r, str) else r for r in results]


# The hot path's reads (docs/DECISIONS.md, 102), run by `select_in`.
_ACCOUNTS = "SELECT id, currency, parted FROM accounts WHERE id {0}"
_ACCOUNTS_FOR_UPDATE = "SELECT id, posted, held, floor FROM accounts WHERE id {0} ORDER BY id"
# A superset of the slots wanted (every account in every part): the few extra are
# dropped, and rendering pairs would cost more than they do.
_PARTS_FOR_UPDATE = (
    "SELECT account_id, part, posted FROM account_parts WHERE account_id {0} AND part {1} "
    "ORDER BY account_id, part"
)
_DIGESTS = "SELECT id, digest FROM transfers WHERE id {0}"
_LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM transfers"
_NEXT_SEQS = "SELECT nextval('transfer_seq') FROM generate_series(1, %s)"

# Accounts' currencies and whether they are parted never change: known once committed.
_KNOWN: WeakKeyDictionary[Engine, dict[int, tuple[str, bool]]] = WeakKeyDictionary()


def _lock(
    uow: UnitOfWork, specs: Sequence[TransferSpec], chains: Sequence[int], count: int
) -> _Batch:
    """Locks in the ledger's order: the chains by number, the accounts by id, their parts,
    then the holds (billfold.ledger._order)."""
    nowait = uow.grouped and uow.ledger_locked
    heads = lock_chains(uow, chains, nowait=nowait)
    existing = _existing_digests(uow, {spec.id for spec in specs})
    account_ids = sorted(
        {p.account_id for spec in specs for p in spec.postings}
        | {spec.overflow_account for spec in specs if spec.overflow_account is not None}
        | {source for spec in specs for source in spec.sources}
    )
    known = _accounts_known(uow, account_ids)
    parted = frozenset(a for a in account_ids if known[a][1])
    plain = [a for a in account_ids if a not in parted]
    rows = select_in(uow, _ACCOUNTS_FOR_UPDATE, [plain], lock=True, nowait=nowait)
    before = {(int(r[0]), 0): Balance(int(r[1]), int(r[2]), r[3]) for r in rows}
    if parted:
        before |= _lock_parts(uow, _slots(specs, chains, parted, count), nowait=nowait)
    hold_rows = _lock_holds(uow, {spec.hold_id for spec in specs if spec.hold_id})
    return _Batch(
        chains=count,
        heads=heads,
        seqs=_numbers(uow, len(specs) - len(existing)),  # Last: every lock is held.
        existing=existing,
        currencies={a: known[a][0] for a in account_ids},
        parted=parted,
        before=before,
        balances=dict(before),
        hold_rows=hold_rows,
    )


def _numbers(uow: UnitOfWork, count: int) -> list[int]:
    """`count` journal numbers, ascending, popped from the end (so reversed here)."""
    if count <= 0:
        return []
    if uow.dialect == "postgresql":
        taken = [int(r[0]) for r in driver_execute(uow.conn, _NEXT_SEQS, (count,), fetch=True)]
        return sorted(taken, reverse=True)
    last = int(driver_execute(uow.conn, _LAST_SEQ, (), fetch=True)[0][0])
    return list(range(last + count, last, -1))


def _accounts_known(uow: UnitOfWork, account_ids: Sequence[int]) -> dict[int, tuple[str, bool]]:
    """Each account's (currency, parted), from memory once it was read in a committed
    transaction; a missing account is refused."""
    known = _KNOWN.setdefault(uow.engine, {})
    wanted = [a for a in account_ids if a not in known]
    if not wanted:
        return known
    found = {int(r[0]): (str(r[1]), bool(r[2])) for r in select_in(uow, _ACCOUNTS, [wanted])}
    if len(found) != len(wanted):
        missing = set(wanted) - set(found)
        raise NotFound(f"no such account: {sorted(missing)}", code="account_not_found")
    uow.after_commit(lambda: known.update(found))
    return {**known, **found}


def _slots(
    specs: Sequence[TransferSpec], chains: Sequence[int], parted: frozenset[int], count: int
) -> list[tuple[int, int]]:
    """The parts the transfers move: their own chain's part of each parted account, and
    every part of a parted account whose whole balance must cover a debit (a payout)."""
    slots: set[tuple[int, int]] = set()
    for spec, chain in zip(specs, chains, strict=True):
        for posting in spec.postings:
            if posting.account_id in parted:
                slots.add((posting.account_id, chain))
        for account_id in spec.covered_accounts & parted:
            slots.update((account_id, part) for part in range(count))
    return sorted(slots)


def _lock_parts(
    uow: UnitOfWork, slots: list[tuple[int, int]], *, nowait: bool
) -> dict[tuple[int, int], Balance]:
    """Locks these parts of parted accounts (made at 0 on first use)."""

    def lock(wanted: list[tuple[int, int]]) -> dict[tuple[int, int], Balance]:
        ids, parts = sorted({a for a, _ in wanted}), sorted({p for _, p in wanted})
        rows = select_in(uow, _PARTS_FOR_UPDATE, [ids, parts], lock=True, nowait=nowait)
        return {(int(r[0]), int(r[1])): Balance(int(r[2]), 0, None) for r in rows}

    found = lock(slots)
    missing = [slot for slot in slots if slot not in found]
    if missing:
        insert = postgresql.insert if uow.dialect == "postgresql" else sqlite.insert
        uow.conn.execute(
            insert(account_parts)
            .values([{"account_id": a, "part": p, "posted": 0} for a, p in missing])
            .on_conflict_do_nothing()
        )
        found |= lock(missing)
    return {slot: found[slot] for slot in slots}


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


def _view(batch: _Batch, spec: TransferSpec, chain: int) -> dict[int, Balance]:
    """The balances the transfer is checked against, by account: an ordinary account's
    own; a parted account's part in this chain, or, where the transfer's debit must be
    covered, the sum of all its parts."""
    balances, parted = batch.balances, batch.parted
    view: dict[int, Balance] = {}
    ids = [p.account_id for p in spec.postings]
    ids.extend(spec.sources)
    if spec.overflow_account is not None:
        ids.append(spec.overflow_account)
    for account_id in ids:
        if account_id not in parted:
            view[account_id] = balances[(account_id, 0)]
        elif account_id in spec.covered_accounts:
            total = sum(balances[(account_id, part)].posted for part in range(batch.chains))
            view[account_id] = Balance(total, 0, None)
        else:
            view[account_id] = balances[(account_id, chain)]
    return view


def _apply(
    batch: _Batch, spec: TransferSpec, chain: int, now: datetime
) -> tuple[TransferSpec, Mapping[int, Balance], dict[int, Balance]]:
    """Checks a new transfer against the balances so far: (the transfer as posted, the
    balances it was checked against, the balances it changes). Raises what refuses it."""
    for posting in spec.postings:
        if batch.currencies[posting.account_id] != posting.currency:
            raise InvalidRequest(
                "a posting's currency differs from its account's", code="currency_mismatch"
            )
    view = _view(batch, spec, chain)
    released: dict[int, Balance] = {}
    if spec.hold_id:
        released = _release_for_capture(spec, batch.hold_rows, view, now)
    current = ChainMap(released, view)
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
    # A released hold changes the account even where no posting does.
    return spec, view, {**released, **changes}


def _record(
    batch: _Batch,
    spec: TransferSpec,
    chain: int,
    view: Mapping[int, Balance],
    changes: dict[int, Balance],
    now: datetime,
    db_now: object,
) -> PostedTransfer:
    """Takes an accepted transfer into the batch: balances, journal row, its chain."""
    parts: dict[int, int] = {}
    posted_after: dict[int, int] = {}
    balances, parted = batch.balances, batch.parted
    for account_id, after in changes.items():
        key = (account_id, chain if account_id in parted else 0)
        parts[account_id] = key[1]
        slot = balances[key]
        checked = view[account_id]
        if slot is checked:  # Not parted, or its whole balance is this part.
            balances[key] = after
        else:
            balances[key] = Balance(
                slot.posted + after.posted - checked.posted,
                slot.held + after.held - checked.held,
                slot.floor,
            )
        posted_after[account_id] = balances[key].posted
    if spec.hold_id:
        # The hold is spent now: a second capture in the same batch must fail.
        batch.hold_rows[spec.hold_id] = replace(
            batch.hold_rows[spec.hold_id], status=HoldStatus.CAPTURED
        )
        batch.hold_updates.append(_capture_update(spec, batch.hold_rows[spec.hold_id], now))
    seq = batch.seqs.pop()
    chain_seq, prev_hash = batch.heads[chain]
    chain_seq += 1
    digest = spec.digest()
    posted = PostedTransfer(
        seq=seq,
        id=spec.id,
        kind=str(spec.kind),
        posted_at=now,
        # Postings are merged per account, so an account's balance after this transfer is
        # the balance after its posting (a parted account's: its part's).
        postings=tuple(
            PostedPosting(p.account_id, p.currency, p.amount, posted_after[p.account_id])
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
        seq=chain_seq,
        transfer_id=spec.id,
        kind=str(spec.kind),
        posted_at=now,
        digest=digest,
        postings=[(p.account_id, p.currency, p.amount) for p in spec.postings],
    )
    batch.new_transfers.append(
        _transfer_row(posted, db_now, digest, prev_hash, hash_, chain, chain_seq)
    )
    batch.new_postings.extend(
        (seq, p.account_id, p.currency, p.amount, p.balance_after, parts[p.account_id])
        for p in posted.postings
    )
    batch.heads[chain] = (chain_seq, hash_)
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
        for row in select_in(uow, _DIGESTS, [ordered[start : start + 1000]]):
            found[str(row[0])] = str(row[1])
    return found


def _transfer_row(
    posted: PostedTransfer,
    posted_at: object,
    digest: str,
    prev_hash: str,
    hash_: str,
    chain: int,
    chain_seq: int,
) -> tuple[object, ...]:
    """The transfer's row in TRANSFER_COLUMNS order (its seq first), ready for the driver."""
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
        chain,
        chain_seq,
    )


def _write(uow: UnitOfWork, batch: _Batch) -> None:
    """Writes what the batch posted: balances, parts, transfers, postings, chain heads."""
    if not batch.new_transfers:
        return
    changed = [
        (after.posted, after.held, account_id, part)
        for (account_id, part), after in batch.balances.items()
        if after is not batch.before[(account_id, part)]
    ]
    plain = [(posted, held, a) for posted, held, a, _ in changed if a not in batch.parted]
    parts = [(posted, a, part) for posted, _, a, part in changed if a in batch.parted]
    heads = [(seq, hash_, chain) for chain, (seq, hash_) in sorted(batch.heads.items())]
    conn = uow.conn
    if uow.dialect == "postgresql":
        _write_postgresql(conn, (plain, parts, batch.new_transfers, batch.new_postings, heads))
    else:
        update_rows(conn, accounts, ("posted", "held"), "id", plain)
        if parts:
            driver_execute_many(conn, _SET_PARTS, parts)
        insert_rows(conn, transfers, TRANSFER_COLUMNS, batch.new_transfers)
        insert_rows(conn, postings, POSTING_COLUMNS, batch.new_postings)
        update_rows(conn, ledger_chains, ("seq", "hash"), "chain", heads)
    if batch.hold_updates:
        conn.execute(
            update(holds)
            .where(holds.c.id == bindparam("b_id"))
            .values(
                status=bindparam("b_status"),
                captured=bindparam("b_captured"),
                closed_at=bindparam("b_closed_at"),
                capture_transfer_id=bindparam("b_transfer_id"),
            ),
            batch.hold_updates,
        )


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
    "chain",
    "chain_seq",
)
POSTING_COLUMNS = ("transfer_seq", "account_id", "currency", "amount", "balance_after", "part")

_SET_PARTS = "UPDATE account_parts SET posted = ? WHERE account_id = ? AND part = ?"

# What one PostgreSQL statement writes (docs/DECISIONS.md, 114): its table, the columns
# of the rows given (the key last, for an update) and whether it updates.
_WRITES: tuple[tuple[Table, tuple[str, ...], tuple[str, ...]], ...] = (
    (accounts, ("posted", "held"), ("id",)),
    (account_parts, ("posted",), ("account_id", "part")),
    (transfers, TRANSFER_COLUMNS, ()),
    (postings, POSTING_COLUMNS, ()),
    (ledger_chains, ("seq", "hash"), ("chain",)),
)
_WRITE_SQL: dict[str, str] = {}


def _write_postgresql(conn: Connection, rows: tuple[Sequence[tuple[Any, ...]], ...]) -> None:
    """Every write of a batch in one statement of data-modifying CTEs: one round trip."""
    sql = _WRITE_SQL.get("sql")
    if sql is None:
        sql = _WRITE_SQL["sql"] = _write_statement(conn)
    params: list[list[object]] = []
    for (_table, values, keys), some in zip(_WRITES, rows, strict=True):
        width = len(values) + len(keys)
        params.extend(
            [list(column) for column in zip(*some, strict=True)]
            if some
            else [[] for _ in range(width)]
        )
    driver_execute(conn, sql, params)


def _write_statement(conn: Connection) -> str:
    """The one statement of `_write_postgresql`: each write a CTE but the last."""
    dialect = conn.dialect
    parts = []
    for table, values, keys in _WRITES:
        names = (*values, *keys)
        arrays = ", ".join(f"%b::{array_element(table, n, dialect)}[]" for n in names)
        source = f"unnest({arrays}) AS v({', '.join(names)})"
        if keys:
            sets = ", ".join(f"{n} = v.{n}" for n in values)
            where = " AND ".join(f"{table.name}.{k} = v.{k}" for k in keys)
            parts.append(f"UPDATE {table.name} SET {sets} FROM {source} WHERE {where}")  # noqa: S608
        else:
            parts.append(
                f"INSERT INTO {table.name} ({', '.join(names)}) "  # noqa: S608
                f"SELECT {', '.join('v.' + n for n in names)} FROM {source}"
            )
    # Table and column names come from the schema in code, never from input.
    ctes = ", ".join(f"w{n} AS ({part})" for n, part in enumerate(parts[:-1]))
    return f"WITH {ctes} {parts[-1]}"
