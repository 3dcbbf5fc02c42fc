"""The audit trail: who did what to which object, in the same transaction, hash-chained.

Entries are gathered on the unit of work and written when it commits, last of its
writes, under a lock on the trail's head: every other lock a request takes comes first,
so the chain adds no lock-order cycle, and the entries of one commit are consecutive.
Each entry's hash covers the one before it (`billfold.domain.audit`); `billfold verify`
recomputes the chain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, bindparam, or_, select, update

from billfold.core.access import Principal, Role
from billfold.domain.audit import GENESIS, at_text, entry_hash
from billfold.domain.errors import PermissionDenied
from billfold.store.bulk import (
    columns_of,
    db_datetime,
    driver_execute,
    insert_rows,
    unnest_insert,
)
from billfold.store.db import UnitOfWork
from billfold.store.prepared import Prepared
from billfold.store.tables import audit_head, audit_log

COLUMNS = (
    "at", "actor", "role", "party", "action", "object_type", "object_id", "details",
    "prev_hash", "hash",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    object_type: str
    object_id: str
    details: dict[str, object] | None
    party: str | None = None


def record(
    uow: UnitOfWork,
    principal: Principal,
    action: str,
    object_type: str,
    object_id: str,
    *,
    at: datetime,
    details: dict[str, object] | None = None,
) -> None:
    """Adds one entry to the unit's trail, written at commit; no personal data in it."""
    entries = uow.pending.setdefault("audit", [])
    entries.append(
        {
            "at": at,
            "actor": principal.key_id,
            "role": str(principal.role),
            "party": principal.provider_id if principal.role == Role.PROVIDER else None,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "details": json.dumps(details, sort_keys=True, default=str) if details else None,
        }
    )
    uow.before_commit("audit", lambda: _write(uow))


# Built once (docs/DECISIONS.md, 118): every money write in a group commit ends here.
_HEAD_FOR_UPDATE = Prepared(select(audit_head.c.hash).where(audit_head.c.id == 1).with_for_update())
_MOVE_HEAD = Prepared(
    update(audit_head).where(audit_head.c.id == 1).values(hash=bindparam("head_hash"))
)


_MOVE_HEAD_PG = "WITH moved AS (UPDATE audit_head SET hash = %s WHERE id = 1) "


def _write(uow: UnitOfWork) -> None:
    """Chains and inserts the unit's entries under the head's lock."""
    entries = uow.pending.get("audit", [])
    if not entries:
        return
    found = _HEAD_FOR_UPDATE.first(uow.conn)
    head = None if found is None else found.hash
    prev = head or GENESIS
    rows = []
    for entry in entries:
        value = entry_hash(prev, **{**entry, "at": at_text(entry["at"])})
        at = db_datetime(uow.conn, entry["at"])
        rows.append((at, *(entry[c] for c in COLUMNS[1:8]), prev, value))
        prev = value
    if head is not None and uow.dialect == "postgresql":
        # The head moves in the insert's own statement: one round trip, not two.
        sql = _MOVE_HEAD_PG + unnest_insert(uow.conn, audit_log, COLUMNS)
        driver_execute(uow.conn, sql, (prev, *columns_of(rows)))
        return
    insert_rows(uow.conn, audit_log, COLUMNS, rows)
    if head is None:
        uow.conn.execute(audit_head.insert().values(id=1, hash=prev))
    else:
        _MOVE_HEAD.count(uow.conn, {"head_hash": prev})


def entries(
    uow: UnitOfWork,
    principal: Principal | None = None,
    *,
    actor: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[AuditEntry]:
    """Entries newest first, filtered; a provider sees only its own actions and objects."""
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    conditions: list[ColumnElement[bool]] = []
    if principal is not None and not principal.is_admin:
        if principal.role != Role.PROVIDER:
            raise PermissionDenied(
                "only the operator and providers read the audit trail", code="role_not_allowed"
            )
        conditions.append(
            or_(
                audit_log.c.party == principal.provider_id,
                (audit_log.c.object_type == "provider")
                & (audit_log.c.object_id == principal.provider_id),
            )
        )
    if actor:
        conditions.append(audit_log.c.actor == actor)
    if object_type:
        conditions.append(audit_log.c.object_type == object_type)
    if object_id:
        conditions.append(audit_log.c.object_id == object_id)
    if since is not None:
        conditions.append(audit_log.c.at >= since)
    if until is not None:
        conditions.append(audit_log.c.at < until)
    if before_id is not None:
        conditions.append(audit_log.c.id < before_id)
    return [
        AuditEntry(
            id=row.id,
            at=row.at,
            actor=row.actor,
            role=row.role,
            action=row.action,
            object_type=row.object_type,
            object_id=row.object_id,
            details=json.loads(row.details) if row.details else None,
            party=row.party,
        )
        for row in uow.conn.execute(query.where(*conditions))
    ]


def broken_links(uow: UnitOfWork, *, chunk: int = 5000) -> list[str]:
    """Where the chain does not hold (an entry edited, removed or slipped in)."""
    problems: list[str] = []
    prev, last = GENESIS, 0
    while True:
        rows = list(
            uow.conn.execute(
                select(audit_log).where(audit_log.c.id > last).order_by(audit_log.c.id).limit(chunk)
            )
        )
        for row in rows:
            expected = entry_hash(
                prev,
                at=at_text(row.at),
                actor=row.actor,
                role=row.role,
                party=row.party,
                action=row.action,
                object_type=row.object_type,
                object_id=row.object_id,
                details=row.details,
            )
            if row.prev_hash != prev or row.hash != expected:
                problems.append(f"audit entry {row.id} ({row.action}) does not chain")
            prev = row.hash or expected
        if len(rows) < chunk:
            break
        last = rows[-1].id
    head = uow.conn.execute(select(audit_head.c.hash).where(audit_head.c.id == 1)).scalar()
    if head is not None and head != prev:
        problems.append("the audit trail's head does not match its last entry")
    return problems
