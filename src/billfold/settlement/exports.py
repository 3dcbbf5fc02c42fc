"""CSV exports of a month: usage events, charges, invoices and provider statements.

Rows stream out in pages, so an export of millions of events holds one page in memory.
Each role exports only its own: a provider its services' usage, its charges, the
invoices it has lines on and its statements; a user its own usage, charges and invoices.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any, Final

from sqlalchemy import Table, select
from sqlalchemy.sql.elements import ColumnElement

from billfold import ledger
from billfold.core.access import Principal, Role
from billfold.core.context import Context
from billfold.domain.errors import InvalidRequest, PermissionDenied
from billfold.domain.ledger import AccountKind, TransferKind
from billfold.domain.money import currency, format_money, from_units
from billfold.domain.periods import parse_period
from billfold.settlement.service import _statements
from billfold.store.db import UnitOfWork
from billfold.store.tables import (
    invoice_lines,
    invoices,
    metrics,
    providers,
    services,
    usage_events,
)

KINDS: Final = ("usage", "charges", "invoices", "statements")
PAGE: Final = 5000
CHARGE_KINDS: Final = (
    TransferKind.CHARGE,
    TransferKind.CAPTURE,
    TransferKind.REFUND,
    TransferKind.REVERSAL,
    TransferKind.ADJUSTMENT,
)


def export_csv(ctx: Context, principal: Principal, kind: str, period: str) -> Iterator[str]:
    """The export as CSV text, a page at a time (the header first)."""
    if kind not in KINDS:
        raise InvalidRequest(f"export one of {', '.join(KINDS)}", param="kind")
    start, end = parse_period(period)
    if kind == "statements" and principal.role == Role.USER:
        raise PermissionDenied(
            "statements are for providers and the platform", code="role_not_allowed"
        )
    rows = {
        "usage": _usage,
        "charges": _charges,
        "invoices": _invoices,
        "statements": _statement_rows,
    }[kind](ctx, principal, start, end, period)
    # Validation above runs now; the rows are read as the response is sent.
    return _as_csv(rows)


def _as_csv(rows: Iterator[list[Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for count, row in enumerate(rows, 1):
        writer.writerow(row)
        if count % 1000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _own(principal: Principal, table: Table) -> list[ColumnElement[bool]]:
    """A provider exports its own rows, a user its own; an admin everything."""
    if principal.role == Role.PROVIDER:
        return [table.c.provider_id == principal.provider_id]
    if principal.role == Role.USER:
        return [table.c.user_id == principal.user_id]
    return []


def _pages(uow: UnitOfWork, table: Table, *where: ColumnElement[bool]) -> Iterator[list[Any]]:
    """The rows `where` selects, PAGE at a time, in `seq` order (keyset paging)."""
    after = 0
    while True:
        page = list(
            uow.conn.execute(
                select(table).where(*where, table.c.seq > after).order_by(table.c.seq).limit(PAGE)
            )
        )
        if page:
            yield page
        if len(page) < PAGE:
            return
        after = page[-1].seq


def _usage(
    ctx: Context, principal: Principal, start: Any, end: Any, _period: str
) -> Iterator[list[Any]]:
    yield [
        "event_id",
        "occurred_at",
        "user",
        "provider",
        "service",
        "metric",
        "value",
        "ingested_at",
    ]
    with ctx.work(read_only=True) as uow:
        codes = {r.id: r.code for r in uow.conn.execute(select(services.c.id, services.c.code))}
        metric_codes = {
            r.id: r.code for r in uow.conn.execute(select(metrics.c.id, metrics.c.code))
        }
        own = _own(principal, usage_events)
        for page in _pages(
            uow,
            usage_events,
            usage_events.c.occurred_at >= start,
            usage_events.c.occurred_at < end,
            *own,
        ):
            for r in page:
                yield [
                    r.event_id,
                    r.occurred_at.isoformat(),
                    r.user_id,
                    r.provider_id,
                    codes.get(r.service_id, r.service_id),
                    metric_codes.get(r.metric_id, r.metric_id),
                    r.value,
                    r.ingested_at.isoformat(),
                ]


def _charges(
    ctx: Context, principal: Principal, start: Any, end: Any, _period: str
) -> Iterator[list[Any]]:
    yield [
        "transfer_id", "kind", "posted_at", "user", "provider", "service", "metric", "quantity",
        "currency", "amount", "provider_share", "commission", "reverses", "description",
    ]  # fmt: skip
    which = ledger.TransferFilter(
        posted_from=start,
        posted_to=end,
        kinds=CHARGE_KINDS,
        provider_id=principal.provider_id if principal.role == Role.PROVIDER else None,
        user_id=principal.user_id if principal.role == Role.USER else None,
    )
    with ctx.work(read_only=True) as uow:
        for page in ledger.transfer_pages(uow, which, page=PAGE):
            kinds = ledger.account_kinds(uow, {p.account_id for t in page for p in t.postings})
            for t in page:
                share = sum(
                    p.amount
                    for p in t.postings
                    if kinds[p.account_id] == AccountKind.PROVIDER_EARNINGS
                )
                commission = sum(
                    p.amount
                    for p in t.postings
                    if kinds[p.account_id] == AccountKind.PLATFORM_REVENUE
                )
                cur = currency(t.postings[0].currency if t.postings else "USD")
                yield [
                    t.id, t.kind, t.posted_at.isoformat(), t.user_id, t.provider_id, t.service,
                    t.metric, t.quantity, cur.code,
                    format_money(from_units(share + commission, cur), cur),
                    format_money(from_units(share, cur), cur),
                    format_money(from_units(commission, cur), cur),
                    t.reverses, t.description,
                ]  # fmt: skip


def _invoices(
    ctx: Context, principal: Principal, start: Any, end: Any, _period: str
) -> Iterator[list[Any]]:
    yield [
        "invoice_id", "number", "status", "user", "subscription", "currency", "period_start",
        "period_end", "subtotal", "tax", "total", "amount_paid", "amount_credited",
        "billing_mode", "amount_due", "due_at", "paid_at",
    ]  # fmt: skip
    with ctx.work(read_only=True) as uow:
        query = (
            select(invoices)
            .where(invoices.c.period_end > start, invoices.c.period_end <= end)
            .order_by(invoices.c.id)
        )
        if principal.role == Role.PROVIDER:
            query = query.where(
                invoices.c.id.in_(
                    select(invoice_lines.c.invoice_id).where(
                        invoice_lines.c.provider_id == principal.provider_id
                    )
                )
                | (invoices.c.provider_id == principal.provider_id)
            )
        elif principal.role == Role.USER:
            query = query.where(invoices.c.user_id == principal.user_id)
        for r in uow.conn.execute(query):
            cur = currency(r.currency)

            def money(units: int, cur: Any = cur) -> str:
                return format_money(from_units(int(units), cur), cur)

            yield [
                r.id, r.number, r.status, r.user_id, r.subscription_id, r.currency,
                r.period_start.isoformat(), r.period_end.isoformat(), money(r.subtotal),
                money(r.tax), money(r.total), money(r.amount_paid), money(r.amount_credited),
                r.billing_mode, money(_due(r)), r.due_at.isoformat() if r.due_at else "",
                r.paid_at.isoformat() if r.paid_at else "",
            ]  # fmt: skip


def _due(r: Any) -> int:
    """What an invoice row still asks for (a postpaid invoice: until money arrives)."""
    if r.status != "open":
        return 0
    return max(int(r.total) - int(r.amount_paid) - int(r.amount_credited), 0)


def _statement_rows(
    ctx: Context, principal: Principal, start: Any, end: Any, period: str
) -> Iterator[list[Any]]:
    yield [
        "provider", "period", "currency", "opening", "gross", "refunds", "commission", "net",
        "payouts", "closing", "receivable", "overdue",
    ]  # fmt: skip
    with ctx.work(read_only=True) as uow:
        ids = (
            [str(principal.provider_id)]
            if principal.role == Role.PROVIDER
            else list(uow.conn.execute(select(providers.c.id).order_by(providers.c.id)).scalars())
        )
        for provider_id in ids:
            for st in _statements(uow, provider_id, period, start, end):
                yield [
                    provider_id, period, st.currency.code,
                    *(format_money(st.money(v), st.currency) for v in (
                        st.opening, st.gross, st.refunds, st.commission, st.net, st.payouts,
                        st.closing, st.receivable, st.overdue,
                    )),
                ]  # fmt: skip
