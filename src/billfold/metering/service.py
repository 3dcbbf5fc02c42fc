"""Ingestion's entry points: `ingest` (group-committed), `ingest_in` (inside the caller's
unit of work, for captures) and default plans; the steps are the package's `_` modules.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update

from billfold.catalog import load_service
from billfold.core import audit
from billfold.core.access import Principal, Role, require_role
from billfold.core.context import Context, Work
from billfold.domain.errors import InvalidRequest, LimitExceeded
from billfold.metering._group_commit import (
    _committer,
)
from billfold.metering._parsing import (
    MAX_EVENTS_PER_REQUEST,
    IngestResult,
)
from billfold.metering._rating import (
    _apply,
)
from billfold.metering._validation import (
    _prepare,
)
from billfold.store.tables import (
    plans,
    services,
)

# --- the batch ------------------------------------------------------------------------


def ingest(
    ctx: Context, principal: Principal, items: Sequence[object], *, cloudevents: bool = False
) -> IngestResult:
    """Validates, stores, rates and charges a batch; each event stands on its own.

    Parsing, catalog lookups and validation read only, before the write transaction, so
    that several server processes can do that work at once while writes take turns.
    """
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise LimitExceeded(
            f"at most {MAX_EVENTS_PER_REQUEST} events per request",
            code="too_many_events",
            param="events",
        )
    now = ctx.clock.now()
    with ctx.work(read_only=True) as work:
        prepared = _prepare(work, principal, items, cloudevents, now)
    if not prepared.valid:
        return IngestResult(0, prepared.duplicates, prepared.rejected)
    return _committer(ctx).submit(prepared)


def ingest_in(
    work: Work,
    principal: Principal,
    items: Sequence[object],
    *,
    cloudevents: bool = False,
    capture_hold: str | None = None,
) -> IngestResult:
    """`ingest` inside the caller's unit of work (which commits).

    With `capture_hold`, the batch is the usage of that authorization: its charge
    releases the hold (see `billfold.authorizations.capture`).
    """
    prepared = _prepare(work, principal, items, cloudevents, work.clock.now())
    return _apply(work, prepared, capture_hold)


def set_default_plan(
    work: Work, principal: Principal, service_code: str, plan_code: str | None
) -> None:
    """Which plan prices the service's usage by users without a subscription."""
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    service = load_service(work, principal, service_code, write=True)
    plan_id = None
    if plan_code is not None:
        row = work.conn.execute(
            select(plans.c.id, plans.c.service_id, plans.c.status).where(plans.c.code == plan_code)
        ).one_or_none()
        if row is None or row.service_id != service.id:
            raise InvalidRequest(f"service {service_code} has no plan {plan_code}", param="plan")
        plan_id = row.id
    work.conn.execute(
        update(services).where(services.c.id == service.id).values(default_plan_id=plan_id)
    )
    audit.record(
        work, principal, "service.default_plan_set", "service", service.id,
        at=work.clock.now(), details={"plan": plan_code},
    )  # fmt: skip
