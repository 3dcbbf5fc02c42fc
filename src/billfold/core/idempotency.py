"""Idempotency-Key records: reserve a key, replay its answer, record the answer.

A POST with an `Idempotency-Key` from an authenticated key first reserves the key (a
lease in a transaction of its own, so that a concurrent request with the same key waits
its turn instead of running twice). A successful answer is recorded in the request's own
unit of work, so the change and its record commit together or not at all; an error
answer, after which nothing changed, is recorded on its own; a server error frees the
key. Keys are scoped to the API key that sent them.

Stored answers are encrypted with the data key (they may hold a new API key's secret, a
webhook secret, a name or an email), and a replay is decrypted again for the same key
only: a revoked or unknown key is refused before anything is looked up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from billfold.core.context import Context
from billfold.crypto import Cipher
from billfold.store.bulk import (
    columns_of,
    db_datetime,
    driver_execute,
    driver_execute_many,
    insert_new_returning,
)
from billfold.store.db import UnitOfWork
from billfold.store.prepared import Prepared
from billfold.store.tables import idempotency_keys

MAX_KEY_LENGTH = 255
IN_PROGRESS_LEASE = timedelta(seconds=60)
# A reservation whose lease ran out this long ago belongs to a request that died.
STALE_AFTER = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Reservation:
    """A key this request holds: whose (a hash of the credentials) and which."""

    principal: str
    key: str


@dataclass(frozen=True, slots=True)
class Replay:
    """What to answer instead of running the request."""

    status: int
    body: Any
    replayed: bool
    conflict: str | None = None  # An error code when the key is in use or was reused.


@dataclass(frozen=True, slots=True)
class Claim:
    """A key to claim in the transaction that does the request's work (a group commit's):
    the reservation, and the request it names (its path and the digest of its body)."""

    reservation: Reservation
    path: str
    digest: str

    def claim(self, uow: UnitOfWork, cipher: Cipher, now: datetime) -> Replay | None:
        return claim(uow, cipher, self.reservation, self.path, self.digest, now)


BODY_CONTEXT = "idempotency_keys.response_body"
KEY_IN_USE = {
    "error": {
        "type": "conflict",
        "code": "idempotency_key_in_use",
        "message": "a request with this Idempotency-Key is still being processed; retry later",
        "param": "Idempotency-Key",
    }
}
KEY_REUSED = {
    "error": {
        "type": "conflict",
        "code": "idempotency_key_reused",
        "message": "this Idempotency-Key was used with a different request; use a new key",
        "param": "Idempotency-Key",
    }
}


# Built once: the group commit claims and records a key for every money write.
# A key already there is not an error but an answer: ON CONFLICT DO NOTHING, on both.
# (Its RETURNING says whether it inserted: psycopg reports no rowcount for it.)
_NEW: dict[str, Any] = {
    name: bindparam(f"v_{name}")
    for name in (
        "principal",
        "key",
        "method",
        "path",
        "request_hash",
        "state",
        "response_status",
        "response_body",
        "created_at",
        "locked_until",
    )
}
_INSERT_NEW_SQLITE = Prepared(
    sqlite.insert(idempotency_keys)
    .values(_NEW)
    .on_conflict_do_nothing()
    .returning(idempotency_keys.c.key)
)
_INSERT_NEW_PG = Prepared(
    postgresql.insert(idempotency_keys)
    .values(_NEW)
    .on_conflict_do_nothing()
    .returning(idempotency_keys.c.key)
)
_RECORD = Prepared(
    update(idempotency_keys)
    .where(
        idempotency_keys.c.principal == bindparam("b_principal"),
        idempotency_keys.c.key == bindparam("b_key"),
    )
    .values(
        state="done",
        response_status=bindparam("b_status"),
        response_body=bindparam("b_body"),
    )
)


def principal_of(key_id: str) -> str:
    """The scope of an Idempotency-Key: the API key (its id) that sent it."""
    return hashlib.sha256(key_id.encode()).hexdigest()


def request_hash(path: str, query: str, body: bytes) -> str:
    return hashlib.sha256(b"\x1f".join([path.encode(), query.encode(), body])).hexdigest()


def reserve(ctx: Context, reservation: Reservation, path: str, digest: str) -> Replay | None:
    """None if this request now holds the key; else what to answer instead. In a
    transaction of its own, committed before the request runs."""
    with ctx.db.unit_of_work() as uow:
        decision = claim(uow, ctx.cipher, reservation, path, digest, ctx.clock.now())
        uow.commit()
        return decision


def claim(
    uow: UnitOfWork,
    cipher: Cipher,
    reservation: Reservation,
    path: str,
    digest: str,
    now: datetime,
) -> Replay | None:
    """`reserve` in the caller's transaction: the group commit claims the keys of its
    requests in the transaction that does their work and records their answers, so a
    request costs one commit, not two. A key claimed by an earlier request of the same
    group is seen as that request left it (its answer is then replayed)."""
    insert = _INSERT_NEW_PG if uow.dialect == "postgresql" else _INSERT_NEW_SQLITE
    claimed = insert.first(
        uow.conn,
        {
            "v_principal": reservation.principal,
            "v_key": reservation.key,
            "v_method": "POST",
            "v_path": path[:500],
            "v_request_hash": digest,
            "v_state": "in_progress",
            "v_response_status": None,
            "v_response_body": None,
            "v_created_at": now,
            "v_locked_until": now + IN_PROGRESS_LEASE,
        },
    )
    if claimed is not None:
        return None
    where = (
        idempotency_keys.c.principal == reservation.principal,
        idempotency_keys.c.key == reservation.key,
    )
    row = uow.conn.execute(select(idempotency_keys).where(*where)).one()
    if row.request_hash != digest:
        return Replay(409, None, False, conflict="idempotency_key_reused")
    if row.state == "done":
        body = json.loads(cipher.decrypt(row.response_body, context=BODY_CONTEXT))
        return Replay(int(row.response_status), body, True)
    if row.locked_until > now:
        return Replay(409, None, False, conflict="idempotency_key_in_use")
    # The earlier attempt died without an answer: this one takes the key over.
    taken = uow.conn.execute(
        update(idempotency_keys)
        .where(
            *where,
            idempotency_keys.c.state == "in_progress",
            idempotency_keys.c.locked_until == row.locked_until,
        )
        .values(locked_until=now + IN_PROGRESS_LEASE)
    ).rowcount
    if taken != 1:
        return Replay(409, None, False, conflict="idempotency_key_in_use")
    return None


def claim_new(uow: UnitOfWork, claims: Sequence[Claim], now: datetime) -> list[bool]:
    """Claims the keys of many requests in one statement: for each, whether it was new
    and is now this transaction's. A key that was not new (used before, in use, or a
    second time in `claims`) is left to `claim`, which says what to answer instead.
    Keys are claimed in their order, so that two processes wait in one order."""
    first: dict[tuple[str, str], int] = {}
    for n, each in enumerate(claims):
        first.setdefault((each.reservation.principal, each.reservation.key), n)
    moment, lease = db_datetime(uow.conn, now), db_datetime(uow.conn, now + IN_PROGRESS_LEASE)
    rows = [
        (
            principal,
            key,
            "POST",
            claims[n].path[:500],
            claims[n].digest,
            "in_progress",
            moment,
            lease,
        )
        for (principal, key), n in sorted(first.items())
    ]
    inserted = {
        (row[0], row[1])
        for row in insert_new_returning(
            uow.conn,
            idempotency_keys,
            _CLAIM_COLUMNS,
            rows,
            conflict=("principal", "key"),
            returning=("principal", "key"),
        )
    }
    return [first[k] == n and k in inserted for n, k in enumerate(map(_pk, claims))]


# What a claim writes: every column of `_NEW` but the answer, which comes later.
_CLAIM_COLUMNS = tuple(name for name in _NEW if not name.startswith("response_"))


def _pk(claim: Claim) -> tuple[str, str]:
    return claim.reservation.principal, claim.reservation.key


def record_many(
    uow: UnitOfWork, cipher: Cipher, answers: Sequence[tuple[Reservation, int, bytes]]
) -> None:
    """`record` for many keys, in one statement."""
    if not answers:
        return
    rows = [
        (_stored(cipher, body), status, reservation.principal, reservation.key)
        for reservation, status, body in answers
    ]
    if uow.dialect == "postgresql":
        driver_execute(uow.conn, _RECORD_MANY_PG, columns_of(rows))
    else:
        driver_execute_many(uow.conn, _RECORD_ONE_SQLITE, rows)


def release(uow: UnitOfWork, reservations: Sequence[Reservation]) -> None:
    """Gives back keys claimed in this transaction whose requests were refused: their
    answers are recorded on their own afterwards (`finish`), as after a savepoint's undo."""
    if not reservations:
        return
    rows = [(r.principal, r.key) for r in reservations]
    if uow.dialect == "postgresql":
        driver_execute(uow.conn, _RELEASE_PG, columns_of(rows))
    else:
        driver_execute_many(uow.conn, _RELEASE_ONE_SQLITE, rows)


_RECORD_MANY_PG = (
    "UPDATE idempotency_keys SET state = 'done', response_body = v.body, "
    "response_status = v.status FROM unnest(%b::text[], %b::int[], %b::text[], %b::text[]) "
    "AS v(body, status, principal, key) "
    "WHERE idempotency_keys.principal = v.principal AND idempotency_keys.key = v.key"
)
_RECORD_ONE_SQLITE = (
    "UPDATE idempotency_keys SET state = 'done', response_body = ?, response_status = ? "
    "WHERE principal = ? AND key = ?"
)
_RELEASE_PG = (
    "DELETE FROM idempotency_keys USING unnest(%b::text[], %b::text[]) AS v(principal, key) "
    "WHERE idempotency_keys.principal = v.principal AND idempotency_keys.key = v.key"
)
_RELEASE_ONE_SQLITE = "DELETE FROM idempotency_keys WHERE principal = ? AND key = ?"


def _stored(cipher: Cipher, body: bytes) -> str:
    """An answer's body as its record keeps it: the JSON, encrypted."""
    try:
        text = json.dumps(json.loads(body)) if body else "null"
    except ValueError:
        text = json.dumps(None)
    return cipher.encrypt(text, context=BODY_CONTEXT)


def record(
    uow: UnitOfWork, cipher: Cipher, reservation: Reservation, status: int, body: bytes
) -> None:
    """Stores the answer under the key, encrypted, in the caller's transaction."""
    _RECORD.count(
        uow.conn,
        {
            "b_principal": reservation.principal,
            "b_key": reservation.key,
            "b_status": status,
            "b_body": _stored(cipher, body),
        },
    )


def finish(
    ctx: Context,
    reservation: Reservation,
    status: int,
    body: bytes,
    *,
    path: str = "",
    digest: str | None = None,
) -> None:
    """After a request whose answer was not recorded with it: records an error answer
    (the request changed nothing), or frees the key after a server error. With `digest`,
    a key that was never claimed (a request of the group commit refused) is claimed and
    answered at once."""
    with ctx.db.unit_of_work() as uow:
        if status >= 500:
            uow.conn.execute(
                delete(idempotency_keys).where(
                    idempotency_keys.c.principal == reservation.principal,
                    idempotency_keys.c.key == reservation.key,
                )
            )
        elif digest is not None:
            if claim(uow, ctx.cipher, reservation, path, digest, ctx.clock.now()) is None:
                record(uow, ctx.cipher, reservation, status, body)
        else:
            record(uow, ctx.cipher, reservation, status, body)
        uow.commit()


def purge(uow: UnitOfWork, now: datetime, ttl: timedelta) -> int:
    """Forgets answers older than `ttl`, and reservations whose request died long ago."""
    return int(
        uow.conn.execute(
            delete(idempotency_keys).where(
                (idempotency_keys.c.created_at < now - ttl)
                | (
                    (idempotency_keys.c.state == "in_progress")
                    & (idempotency_keys.c.locked_until < now - STALE_AFTER)
                )
            )
        ).rowcount
    )
