"""Invoices as users see them: list, read, pay, void, credit notes, HTML and PDF.

Amounts on invoices are whole minor units (rounded half-up once, on each line); totals
are exact sums of the lines. Paying, voiding and crediting are ledger transfers, so every
figure here can be traced to postings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select

from billfold import ledger
from billfold.catalog import was_customer
from billfold.core import audit
from billfold.core.access import Principal, Role, require_admin
from billfold.core.context import Work
from billfold.core.directory import user_row
from billfold.domain.errors import Conflict, InsufficientFunds, InvalidRequest, NotFound
from billfold.domain.ledger import (
    PLATFORM_OWNER_ID,
    AccountKind,
    OwnerType,
    Posting,
    TransferKind,
    TransferSpec,
    divide_half_up,
)
from billfold.domain.money import (
    Currency,
    format_money,
    from_units,
    parse_amount,
    require_minor_units,
    to_units,
)
from billfold.ids import new_id
from billfold.invoicing import billing
from billfold.invoicing.batch import Batch
from billfold.invoicing.document import document
from billfold.invoicing.model import Invoice, load_invoices
from billfold.store.tables import credit_notes, invoice_payments, invoices

TEMPLATES: Final = Path(__file__).resolve().parent.parent / "web" / "templates"
MAX_REASON: Final = 500


@dataclass(frozen=True, slots=True)
class LineView:
    id: int | None
    kind: str
    description: str
    metric: str | None
    quantity: str | None
    amount: Decimal
    tax: Decimal
    settled: bool


@dataclass(frozen=True, slots=True)
class InvoiceView:
    id: str
    number: str | None
    status: str
    user: str
    subscription: str | None
    provider: str | None
    currency: Currency
    billing_mode: str
    period_start: datetime
    period_end: datetime
    lines: list[LineView]
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    tax_rate: Decimal
    amount_paid: Decimal
    amount_credited: Decimal
    amount_due: Decimal
    due_at: datetime | None
    created_at: datetime
    finalized_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreditNoteView:
    id: str
    invoice: str
    currency: Currency
    amount: Decimal
    reason: str
    transfer_id: str | None
    created_at: datetime


def view_of(inv: Invoice, principal: Principal | None = None) -> InvoiceView:
    cur = inv.cur
    lines = inv.lines
    if principal is not None and principal.role == Role.PROVIDER:
        # A provider sees the lines of its own services only (every line of a
        # subscription invoice belongs to the subscription's provider).
        lines = lines if inv.provider_id == principal.provider_id else []
    return InvoiceView(
        id=inv.id,
        number=inv.number,
        status=inv.status,
        user=inv.user_id,
        subscription=inv.subscription_id,
        provider=inv.provider_id,
        currency=cur,
        billing_mode=inv.billing_mode,
        period_start=inv.period_start,
        period_end=inv.period_end,
        lines=[
            LineView(
                line.id,
                line.kind,
                line.description,
                line.metric,
                line.quantity,
                from_units(line.amount, cur),
                from_units(line.tax, cur),
                line.settled,
            )
            for line in lines
        ],
        subtotal=from_units(inv.subtotal, cur),
        tax=from_units(inv.tax, cur),
        total=from_units(inv.total, cur),
        tax_rate=inv.tax_rate,
        amount_paid=from_units(inv.amount_paid, cur),
        amount_credited=from_units(inv.amount_credited, cur),
        amount_due=from_units(inv.amount_due, cur),
        due_at=inv.due_at,
        created_at=inv.created_at,
        finalized_at=inv.finalized_at,
        paid_at=inv.paid_at,
        voided_at=inv.voided_at,
    )


def _visible(principal: Principal, inv: Invoice) -> bool:
    if principal.role == Role.ADMIN:
        return True
    if principal.role == Role.USER:
        return principal.user_id == inv.user_id
    return principal.provider_id is not None and principal.provider_id == inv.provider_id


def _load(work: Work, principal: Principal, invoice_id: str, *, lock: bool = False) -> Any:
    found = load_invoices(work, invoices.c.id == invoice_id, lock=lock)
    if not found or not _visible(principal, found[0]):
        raise NotFound(f"no invoice {invoice_id}", code="invoice_not_found", param="invoice")
    return found[0]


def get(work: Work, principal: Principal, invoice_id: str) -> InvoiceView:
    return view_of(_load(work, principal, invoice_id), principal)


def list_for(
    work: Work,
    principal: Principal,
    *,
    user: str | None = None,
    subscription: str | None = None,
    status: str | None = None,
    limit: int = 100,
    after: str | None = None,
) -> tuple[list[InvoiceView], bool]:
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be 1 to 1000", param="limit")
    condition: Any = invoices.c.id.is_not(None)
    if principal.role == Role.USER:
        condition &= invoices.c.user_id == principal.user_id
    elif principal.role == Role.PROVIDER:
        condition &= invoices.c.provider_id == principal.provider_id
        if user is not None and not was_customer(work, user, principal.provider_id or ""):
            raise NotFound(f"no user {user}", code="user_not_found", param="user")
    if user is not None:
        condition &= invoices.c.user_id == user
    if subscription is not None:
        condition &= invoices.c.subscription_id == subscription
    if status is not None:
        condition &= invoices.c.status == ("open" if status == "finalized" else status)
    if after is not None:
        condition &= invoices.c.id > after
    ids = [
        row.id
        for row in work.conn.execute(
            select(invoices.c.id).where(condition).order_by(invoices.c.id).limit(limit + 1)
        )
    ]
    page = ids[:limit]
    found = load_invoices(work, invoices.c.id.in_(page)) if page else []
    return [view_of(inv, principal) for inv in found], len(ids) > limit


def _user_row(work: Work, user_id: str) -> Any:
    return user_row(work, user_id)


def pay(work: Work, principal: Principal, invoice_id: str) -> InvoiceView:
    """Settles what the invoice still asks for, from the user's wallet."""
    if principal.role not in (Role.ADMIN, Role.USER):
        raise NotFound(f"no invoice {invoice_id}", code="invoice_not_found")
    now = work.clock.now()
    inv = _load(work, principal, invoice_id, lock=True)
    if inv.status == "void":
        raise Conflict("the invoice is void", code="invoice_void")
    if inv.status == "paid":
        return view_of(inv, principal)
    if inv.billing_mode == "postpaid" and inv.status == "draft":
        raise Conflict(
            "the invoice is still a draft: its period has not ended", code="invoice_draft"
        )
    batch = Batch(work, now)
    batch.track(inv)
    user = _user_row(work, inv.user_id)
    if inv.billing_mode == "prepaid":
        batch.settle([inv], {user.id: user})
        if inv.amount_due > 0:
            raise InsufficientFunds("the wallet cannot cover the invoice; top up first")
    elif not batch.pay_from_wallet(inv, user):
        raise InsufficientFunds(
            "the cash in the wallet cannot cover the invoice (credit does not pay "
            "invoices); top up first"
        )
    batch.flush()
    audit.record(work, principal, "invoice.paid", "invoice", inv.id, at=now)
    billing.collect_for_user(work, inv.user_id)  # The subscription may now be in good standing.
    return get(work, principal, invoice_id)


PAYMENT_METHODS: Final = ("bank_transfer", "cheque", "other")


@dataclass(frozen=True, slots=True)
class PaymentView:
    id: str
    invoice: str
    currency: Currency
    amount: Decimal
    method: str
    reference: str
    transfer_id: str
    created_at: datetime
    invoice_status: str
    amount_due: Decimal


def record_payment(
    work: Work,
    principal: Principal,
    invoice_id: str,
    *,
    amount: object,
    method: str,
    reference: str,
    transfer_id: str | None = None,
) -> PaymentView:
    """Money received for an open invoice outside a gateway (a bank transfer, a cheque),
    recorded by an operator: external cash to the user's receivable, in one transfer.
    A partial payment leaves the rest open; more than the invoice asks for is refused
    (the operator tops up the wallet with the rest). Idempotent by `transfer_id`."""
    require_admin(principal)
    if method not in PAYMENT_METHODS:
        raise InvalidRequest(f"method must be one of {', '.join(PAYMENT_METHODS)}", param="method")
    text = reference.strip() if isinstance(reference, str) else ""
    if not text or len(text) > 200 or any(ord(ch) < 32 for ch in text):
        raise InvalidRequest(
            "reference is 1 to 200 printable characters (the bank's or cheque's reference)",
            param="reference",
        )
    now = work.clock.now()
    inv = _load(work, principal, invoice_id, lock=True)
    cur = inv.cur
    value = parse_amount(amount, param="amount", allow_zero=False)
    require_minor_units(value, cur, param="amount")
    units = to_units(value, cur, param="amount")
    tid = transfer_id or new_id("tr")
    earlier = work.conn.execute(
        select(invoice_payments).where(invoice_payments.c.transfer_id == tid)
    ).one_or_none()
    if earlier is not None:
        if (earlier.invoice_id, earlier.amount, earlier.method, earlier.reference) != (
            inv.id, units, method, text,
        ):  # fmt: skip
            raise Conflict(
                "this payment was already recorded with different content",
                code="payment_reused",
            )
        return _payment_view(earlier, inv)
    if inv.billing_mode != "postpaid":
        raise Conflict(
            "a prepaid invoice is paid from the wallet; top the wallet up instead",
            code="invoice_prepaid",
        )
    if inv.status == "draft":
        raise Conflict("the invoice is a draft: its period has not ended", code="invoice_draft")
    if inv.status == "void":
        raise Conflict("the invoice is void", code="invoice_void")
    if inv.status != "open":
        raise Conflict("the invoice is paid: it asks for nothing", code="invoice_paid")
    if units > inv.amount_due:
        raise InvalidRequest(
            f"the payment is more than the invoice asks for "
            f"({format_money(from_units(inv.amount_due, cur), cur)})",
            param="amount",
            code="payment_exceeds_amount_due",
        )
    batch = Batch(work, now)
    batch.track(inv)
    user = _user_row(work, inv.user_id)
    ids = batch.accounts(user, None, cur)
    cash = ledger.ensure_account(
        work, OwnerType.PLATFORM, PLATFORM_OWNER_ID, AccountKind.EXTERNAL_CASH, cur.code, now=now
    )
    ledger.post(
        work,
        TransferSpec(
            id=tid,
            kind=TransferKind.INVOICE_PAYMENT,
            postings=(Posting(cash, cur.code, -units), Posting(ids["receivable"], cur.code, units)),
            user_id=inv.user_id,
            provider_id=inv.provider_id,
            description=f"Payment of invoice {inv.number} by {method.replace('_', ' ')}",
            reference=inv.id,
        ),
        now=now,
    )
    payment_id = new_id("ipay")
    work.conn.execute(
        invoice_payments.insert().values(
            id=payment_id,
            invoice_id=inv.id,
            amount=units,
            method=method,
            reference=text,
            transfer_id=tid,
            recorded_by=principal.key_id,
            created_at=now,
        )
    )
    inv.amount_paid += units
    inv.dirty = True
    batch.flush()
    audit.record(
        work, principal, "invoice.payment_recorded", "invoice", inv.id, at=now,
        details={"payment_id": payment_id, "amount": str(value), "method": method,
                 "reference": text},
    )  # fmt: skip
    billing.collect_for_user(work, inv.user_id)  # The subscription may now be in good standing.
    row = work.conn.execute(
        select(invoice_payments).where(invoice_payments.c.id == payment_id)
    ).one()
    return _payment_view(row, inv)


def _payment_view(row: Any, inv: Invoice) -> PaymentView:
    cur = inv.cur
    return PaymentView(
        id=row.id,
        invoice=inv.id,
        currency=cur,
        amount=from_units(row.amount, cur),
        method=row.method,
        reference=row.reference,
        transfer_id=row.transfer_id,
        created_at=row.created_at,
        invoice_status=inv.status,
        amount_due=from_units(inv.amount_due, cur),
    )


def payments_of(work: Work, principal: Principal, invoice_id: str) -> list[PaymentView]:
    """The payments recorded for an invoice (admin, that user)."""
    if principal.role == Role.PROVIDER:  # A provider sees its lines, not the user's money.
        raise NotFound(f"no invoice {invoice_id}", code="invoice_not_found", param="invoice")
    inv = _load(work, principal, invoice_id)
    rows = work.conn.execute(
        select(invoice_payments)
        .where(invoice_payments.c.invoice_id == inv.id)
        .order_by(invoice_payments.c.created_at, invoice_payments.c.id)
    ).all()
    return [_payment_view(row, inv) for row in rows]


def void(work: Work, principal: Principal, invoice_id: str) -> InvoiceView:
    """Cancels an invoice that is not paid: what it charged is given back."""
    require_admin(principal)
    now = work.clock.now()
    inv = _load(work, principal, invoice_id, lock=True)
    if inv.status == "void":
        return view_of(inv, principal)
    if inv.status == "paid" or inv.amount_paid > 0:
        raise Conflict(
            "a paid invoice cannot be voided; issue a credit note instead",
            code="invoice_paid",
        )
    if inv.status == "draft":
        raise Conflict(
            "a draft invoice belongs to a running period; cancel the subscription instead",
            code="invoice_draft",
        )
    batch = Batch(work, now)
    batch.track(inv)
    user = _user_row(work, inv.user_id)
    charged = [line for line in inv.lines if line.settled]
    _give_back(
        batch,
        inv,
        user,
        sum(line.gross for line in charged) - inv.amount_credited,
        f"Void of invoice {inv.number}",
    )
    inv.status, inv.voided_at, inv.dirty = "void", now, True
    batch.flush()
    audit.record(work, principal, "invoice.voided", "invoice", inv.id, at=now)
    billing.collect_for_user(work, inv.user_id)
    return get(work, principal, invoice_id)


def _give_back(batch: Batch, inv: Invoice, user: Any, gross: int, text: str) -> str | None:
    """Credits `gross` (tax included, in proportion) back to whoever paid the invoice."""
    if gross <= 0:
        return None
    tax = 0
    if inv.total:
        tax = divide_half_up(gross * inv.tax, inv.total)
    paid_by_wallet = inv.billing_mode == "prepaid" or inv.amount_paid >= gross
    spec = batch.charge_spec(
        inv,
        user,
        -(gross - tax),
        -tax,
        text,
        payer="wallet" if paid_by_wallet else "receivable",
        kind=TransferKind.REFUND,
    )
    assert spec is not None
    result = ledger.post_many(batch.work, [spec], now=batch.now)[0]
    if isinstance(result, Exception):
        raise result
    return spec.id


def _credited_lines(inv: Invoice, lines: object) -> tuple[int, list[dict[str, Any]]]:
    """The units a credit by lines gives back, and the lines with what each gives."""
    cur = inv.cur
    if not isinstance(lines, list) or not lines or len(lines) > 100:
        raise InvalidRequest("lines must be a list of 1 to 100 {line, amount}", param="lines")
    by_id = {line.id: line for line in inv.lines}
    units = 0
    detail: list[dict[str, Any]] = []
    for index, item in enumerate(lines):
        if not isinstance(item, dict) or item.get("line") not in by_id:
            raise InvalidRequest(
                f"lines[{index}].line is not a line of this invoice", param="lines"
            )
        line = by_id[item["line"]]
        part = to_units(parse_amount(item.get("amount"), param="amount", allow_zero=False), cur)
        if part > line.gross:
            raise InvalidRequest(
                f"lines[{index}].amount is more than the line "
                f"({format_money(from_units(line.gross, cur), cur)})",
                param="lines",
            )
        units += part
        detail.append({"line": line.id, "amount": str(from_units(part, cur))})
    return units, detail


def credit(
    work: Work,
    principal: Principal,
    *,
    invoice_id: str,
    amount: object = None,
    lines: object = None,
    reason: object,
) -> CreditNoteView:
    """A credit note: gives back part of an open or paid invoice through the ledger.

    `amount` is the gross (tax included); `lines` names invoice lines and how much of
    each, which adds up to the amount. Money paid goes back to the wallet; money still
    owed on a postpaid invoice is forgiven (the receivable goes up).
    """
    require_admin(principal)
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise InvalidRequest(
            f"reason must be a text of 1 to {MAX_REASON} characters", param="reason"
        )
    if (amount is None) == (lines is None):
        raise InvalidRequest("give either amount or lines", param="amount")
    now = work.clock.now()
    inv = _load(work, principal, invoice_id, lock=True)
    if inv.status not in ("open", "paid"):
        raise Conflict(
            f"a {inv.status} invoice cannot be credited",
            code="invoice_draft" if inv.status == "draft" else "invoice_void",
        )
    cur = inv.cur
    if lines is not None:
        units, detail = _credited_lines(inv, lines)
    else:
        units = to_units(parse_amount(amount, param="amount", allow_zero=False), cur)
        detail = None
    if units % (10 ** (cur.ledger_scale - cur.minor_units)):
        raise InvalidRequest(f"amount must be whole {cur.code} minor units", param="amount")
    left = inv.total - inv.amount_credited
    if units > left:
        raise InvalidRequest(
            f"the invoice has {format_money(from_units(left, cur), cur)} left to credit",
            code="credit_exceeds_invoice",
            param="amount",
        )
    batch = Batch(work, now)
    batch.track(inv)
    user = _user_row(work, inv.user_id)
    note_id = new_id("cn")
    transfer = _give_back(batch, inv, user, units, f"Credit note {note_id} on invoice {inv.number}")
    inv.amount_credited += units
    inv.dirty = True
    batch.flush()
    work.conn.execute(
        credit_notes.insert().values(
            id=note_id,
            invoice_id=inv.id,
            amount=units,
            reason=reason.strip(),
            lines=json.dumps(detail) if detail else None,
            transfer_id=transfer,
            created_at=now,
        )
    )
    audit.record(
        work,
        principal,
        "invoice.credited",
        "credit_note",
        note_id,
        at=now,
        details={"invoice": inv.id, "amount": str(from_units(units, cur))},
    )
    billing.collect_for_user(work, inv.user_id)  # What is owed may now be nothing.
    return CreditNoteView(
        note_id, inv.id, cur, from_units(units, cur), reason.strip(), transfer, now
    )


# --- rendering ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"])
    )


def render_html(
    work: Work, principal: Principal, invoice_id: str, *, locale: str | None = None
) -> str:
    """The invoice as a document, in the buyer's language (or `locale`)."""
    inv = _load(work, principal, invoice_id)
    context = document(work, principal, inv, view_of(inv, principal), locale)
    return str(_environment().get_template("invoice.html").render(**context))


def render_pdf(
    work: Work, principal: Principal, invoice_id: str, *, locale: str | None = None
) -> bytes:
    from weasyprint import HTML  # type: ignore[import-untyped]

    html = render_html(work, principal, invoice_id, locale=locale)
    return bytes(HTML(string=html).write_pdf())
