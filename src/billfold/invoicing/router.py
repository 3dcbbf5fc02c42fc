"""Invoices, credit notes and the test clock."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from billfold.core.access import Principal
from billfold.core.context import Context
from billfold.core.http import (
    Limit,
    Read,
    SegmentRouter,
    StartingAfter,
    UnitOfWorkRoute,
    Write,
    get_context,
    get_principal,
    transfer_id_for,
)
from billfold.core.schemas import ListOf
from billfold.invoicing import invoices
from billfold.invoicing.schemas import (
    CreditNoteCreate,
    CreditNoteOut,
    InvoiceOut,
    InvoicePaymentCreate,
    InvoicePaymentOut,
)

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["invoices"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]
InvoiceStatus = Annotated[
    str | None,
    Query(
        pattern="^(draft|open|finalized|paid|void)$",
        description="Only this status (`finalized` is an older name for `open`).",
    ),
]


InvoiceLocale = Annotated[
    str | None,
    Query(pattern="^(en|zh-CN)$", description="The language; default the buyer's own."),
]


@router.get("/invoices", response_model=ListOf[InvoiceOut])
def list_invoices(
    work: Read,
    who: Who,
    user: Annotated[str | None, Query(max_length=64)] = None,
    subscription: Annotated[str | None, Query(max_length=64)] = None,
    status: InvoiceStatus = None,
    limit: Limit = 100,
    starting_after: StartingAfter = None,
) -> ListOf[InvoiceOut]:
    found, more = invoices.list_for(
        work,
        who,
        user=user,
        subscription=subscription,
        status=status,
        limit=limit,
        after=starting_after,
    )
    return ListOf[InvoiceOut](data=[InvoiceOut.of(v) for v in found], has_more=more)


@router.get("/invoices/{invoice_id}.html", response_class=HTMLResponse)
def invoice_html(
    invoice_id: str, work: Read, who: Who, locale: InvoiceLocale = None
) -> HTMLResponse:
    """The invoice as a document, in HTML, in the buyer's language (or `locale`)."""
    return HTMLResponse(invoices.render_html(work, who, invoice_id, locale=locale))


@router.get(
    "/invoices/{invoice_id}.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "The invoice as PDF."}},
)
def invoice_pdf(invoice_id: str, work: Read, who: Who, locale: InvoiceLocale = None) -> Response:
    """The invoice as a PDF document, in the buyer's language (or `locale`)."""
    body = invoices.render_pdf(work, who, invoice_id, locale=locale)
    return Response(
        body,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{invoice_id}.pdf"'},
    )


@router.get("/invoices/{invoice_id}", response_model=InvoiceOut)
def get_invoice(invoice_id: str, work: Read, who: Who) -> InvoiceOut:
    return InvoiceOut.of(invoices.get(work, who, invoice_id))


@router.post("/invoices/{invoice_id}/pay", response_model=InvoiceOut)
def pay_invoice(invoice_id: str, work: Write, who: Who) -> InvoiceOut:
    """Settles the invoice from the user's wallet (admin or that user)."""
    return InvoiceOut.of(invoices.pay(work, who, invoice_id))


@router.post("/invoices/{invoice_id}/payments", response_model=InvoicePaymentOut, status_code=201)
def record_invoice_payment(
    invoice_id: str, body: InvoicePaymentCreate, request: Request, work: Write, who: Who
) -> InvoicePaymentOut:
    """Records money received for an open postpaid invoice outside a gateway: a bank
    transfer, a cheque (admin). A partial payment leaves the rest open."""
    return InvoicePaymentOut.of(
        invoices.record_payment(
            work,
            who,
            invoice_id,
            amount=body.amount,
            method=body.method,
            reference=body.reference,
            transfer_id=transfer_id_for(request, who),
        )
    )


@router.get("/invoices/{invoice_id}/payments", response_model=ListOf[InvoicePaymentOut])
def list_invoice_payments(invoice_id: str, work: Read, who: Who) -> ListOf[InvoicePaymentOut]:
    """The payments an operator recorded for the invoice (admin, that user)."""
    found = invoices.payments_of(work, who, invoice_id)
    return ListOf[InvoicePaymentOut](data=[InvoicePaymentOut.of(p) for p in found], has_more=False)


@router.post("/invoices/{invoice_id}/void", response_model=InvoiceOut)
def void_invoice(invoice_id: str, work: Write, who: Who) -> InvoiceOut:
    """Voids an unpaid invoice; what it charged is given back (admin)."""
    return InvoiceOut.of(invoices.void(work, who, invoice_id))


@router.post("/credit-notes", response_model=CreditNoteOut, status_code=201)
def create_credit_note(body: CreditNoteCreate, work: Write, who: Who) -> CreditNoteOut:
    """Refunds or credits part of an invoice (admin)."""
    return CreditNoteOut.of(
        invoices.credit(
            work,
            who,
            invoice_id=body.invoice,
            amount=body.amount,
            lines=None
            if body.lines is None
            else [{"line": item.line, "amount": item.amount} for item in body.lines],
            reason=body.reason,
        )
    )
