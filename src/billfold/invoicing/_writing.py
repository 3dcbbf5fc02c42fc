"""Writing a batch back: invoices and their lines, usage marks and subscriptions, in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, update

from billfold.domain.money import format_decimal
from billfold.invoicing.model import Invoice, Line, Sub
from billfold.store.bulk import upsert
from billfold.store.tables import (
    invoice_lines,
    invoices,
    subscription_phases,
    subscriptions,
    usage_invoiced,
)

SUBSCRIPTION_COLUMNS = (
    "plan_id",
    "status",
    "current_period_start",
    "current_period_end",
    "pending_plan_id",
    "cancel_at_period_end",
    "ended_at",
    "past_due_since",
    "next_retry_at",
    "updated_at",
)


def write_invoices(conn: Connection, found: Sequence[Invoice], now: datetime) -> None:
    """Inserts new invoices and lines, updates changed ones, and marks them clean."""
    fresh = [inv for inv in found if inv.new]
    if fresh:
        conn.execute(invoices.insert(), [_invoice_values(inv) for inv in fresh])
    changed = [inv for inv in found if inv.dirty and not inv.new]
    if changed:
        values = [_invoice_values(inv) for inv in changed]
        conn.execute(
            update(invoices)
            .where(invoices.c.id == bindparam("b_id"))
            .values({name: bindparam(f"b_{name}") for name in values[0] if name != "id"}),
            [{f"b_{k}": v for k, v in row.items()} | {"b_id": row["id"]} for row in values],
        )
    new_lines = [
        _line_values(inv.id, line, now) for inv in found for line in inv.lines if line.id is None
    ]
    if new_lines:
        conn.execute(invoice_lines.insert(), new_lines)
    settled = [
        {"b_id": line.id, "b_settled": 1, "b_transfer_id": line.transfer_id}
        for inv in found
        for line in inv.lines
        if line.id is not None and line.dirty
    ]
    if settled:
        conn.execute(
            update(invoice_lines)
            .where(invoice_lines.c.id == bindparam("b_id"))
            .values(settled=bindparam("b_settled"), transfer_id=bindparam("b_transfer_id")),
            settled,
        )
    for inv in found:
        inv.new = inv.dirty = False
        for line in inv.lines:
            line.dirty = False


def write_usage_marks(conn: Connection, marks: list[dict[str, Any]]) -> None:
    """Records how much of each usage row has been invoiced (one row per usage row)."""
    rows = [
        {"usage_period_id": m["b_id"], "invoiced_units": m["b_units"], "quantity": m["b_quantity"]}
        for m in marks
    ]
    upsert(conn, usage_invoiced, ["usage_period_id"], rows)


def write_subscriptions(conn: Connection, subs: Sequence[Sub]) -> None:
    """Updates changed subscriptions and writes their new and ended phases."""
    dirty = [sub for sub in subs if sub.dirty]
    if dirty:
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.id == bindparam("b_id"))
            .values({name: bindparam(f"b_{name}") for name in SUBSCRIPTION_COLUMNS}),
            [
                {"b_id": sub.id} | {f"b_{name}": sub.row[name] for name in SUBSCRIPTION_COLUMNS}
                for sub in dirty
            ],
        )
        for sub in dirty:
            sub.dirty = False
    new_phases = [
        {
            "subscription_id": sub.id,
            "plan_id": p.plan_id,
            "starts_at": p.starts_at,
            "ends_at": p.ends_at,
        }
        for sub in subs
        for p in sub.phases
        if p.id is None
    ]
    ended = [
        {"b_id": p.id, "b_ends_at": p.ends_at}
        for sub in subs
        for p in sub.phases
        if p.id is not None and p.dirty
    ]
    if new_phases:
        conn.execute(subscription_phases.insert(), new_phases)
    if ended:
        conn.execute(
            update(subscription_phases)
            .where(subscription_phases.c.id == bindparam("b_id"))
            .values(ends_at=bindparam("b_ends_at")),
            ended,
        )


def _invoice_values(inv: Invoice) -> dict[str, Any]:
    return {
        "id": inv.id,
        "billing_key": inv.billing_key,
        "number": inv.number,
        "user_id": inv.user_id,
        "subscription_id": inv.subscription_id,
        "provider_id": inv.provider_id,
        "currency": inv.cur.code,
        "billing_mode": inv.billing_mode,
        "period_start": inv.period_start,
        "period_end": inv.period_end,
        "status": inv.status,
        "subtotal": inv.subtotal,
        "tax": inv.tax,
        "total": inv.total,
        "amount_paid": inv.amount_paid,
        "amount_credited": inv.amount_credited,
        "tax_rate": format_decimal(inv.tax_rate),
        "commission_rate": format_decimal(inv.commission_rate),
        "due_at": inv.due_at,
        "created_at": inv.created_at,
        "finalized_at": inv.finalized_at,
        "paid_at": inv.paid_at,
        "voided_at": inv.voided_at,
    }


def _line_values(invoice_id: str, line: Line, now: datetime) -> dict[str, Any]:
    return {
        "invoice_id": invoice_id,
        "kind": line.kind,
        "description": line.description[:500],
        "metric": line.metric,
        "quantity": line.quantity,
        "amount": line.amount,
        "tax": line.tax,
        "provider_id": None,
        "period_start": line.period_start,
        "period_end": line.period_end,
        "prepaid": line.prepaid,
        "settled": int(line.settled),
        "transfer_id": line.transfer_id,
        "created_at": now,
    }
