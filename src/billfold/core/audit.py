"""The audit trail: who did what to which object, written in the same transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from billfold.core.access import Principal
from billfold.store.db import UnitOfWork
from billfold.store.tables import audit_log


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
    """Appends one entry; personal data never goes into `details`."""
    uow.conn.execute(
        audit_log.insert().values(
            at=at,
            actor=principal.key_id,
            role=str(principal.role),
            action=action,
            object_type=object_type,
            object_id=object_id,
            details=json.dumps(details, sort_keys=True, default=str) if details else None,
        )
    )


def entries(
    uow: UnitOfWork,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[AuditEntry]:
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if object_type:
        query = query.where(audit_log.c.object_type == object_type)
    if object_id:
        query = query.where(audit_log.c.object_id == object_id)
    if before_id is not None:
        query = query.where(audit_log.c.id < before_id)
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
        )
        for row in uow.conn.execute(query)
    ]
