"""Request and response schemas of invoicing."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from billfold.core.schemas import Amount, AmountIn, Moment, Request
from billfold.domain.money import format_decimal, format_money
from billfold.invoicing.invoices import CreditNoteView, InvoiceView, PaymentView


class InvoiceLineOut(BaseModel):
    id: int | None
    kind: str
    description: str
    metric: str | None
    quantity: str | None
    amount: Amount
    tax: Amount
    settled: bool


class PeriodOut(BaseModel):
    start: datetime
    end: datetime


class InvoiceOut(BaseModel):
    object: Literal["invoice"] = "invoice"
    id: str
    number: str | None
    status: str
    user: str
    subscription: str | None
    provider: str | None
    currency: str
    billing_mode: str
    period: PeriodOut
    lines: list[InvoiceLineOut]
    subtotal: Amount
    tax: Amount
    total: Amount
    tax_rate: str
    amount_paid: Amount
    amount_credited: Amount
    amount_due: Amount
    due_at: datetime | None
    created_at: datetime
    finalized_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None

    @classmethod
    def of(cls, view: InvoiceView) -> InvoiceOut:
        cur = view.currency
        return cls(
            id=view.id,
            number=view.number,
            status=view.status,
            user=view.user,
            subscription=view.subscription,
            provider=view.provider,
            currency=cur.code,
            billing_mode=view.billing_mode,
            period=PeriodOut(start=view.period_start, end=view.period_end),
            lines=[
                InvoiceLineOut(
                    id=line.id,
                    kind=line.kind,
                    description=line.description,
                    metric=line.metric,
                    quantity=line.quantity,
                    amount=format_money(line.amount, cur),
                    tax=format_money(line.tax, cur),
                    settled=line.settled,
                )
                for line in view.lines
            ],
            subtotal=format_money(view.subtotal, cur),
            tax=format_money(view.tax, cur),
            total=format_money(view.total, cur),
            tax_rate=format_decimal(view.tax_rate),
            amount_paid=format_money(view.amount_paid, cur),
            amount_credited=format_money(view.amount_credited, cur),
            amount_due=format_money(view.amount_due, cur),
            due_at=view.due_at,
            created_at=view.created_at,
            finalized_at=view.finalized_at,
            paid_at=view.paid_at,
            voided_at=view.voided_at,
        )


class InvoicePaymentCreate(Request):
    amount: AmountIn
    method: Literal["bank_transfer", "cheque", "other"]
    reference: Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            description="The bank's or the cheque's reference, as it appears on the money.",
        ),
    ]


class InvoicePaymentOut(BaseModel):
    object: Literal["invoice_payment"] = "invoice_payment"
    id: str
    invoice: str
    currency: str
    amount: Amount
    method: str
    reference: str
    transfer_id: str
    created_at: datetime
    invoice_status: str = Field(description="The invoice's status after this payment.")
    amount_due: Amount = Field(description="What the invoice still asks for.")

    @classmethod
    def of(cls, view: PaymentView) -> InvoicePaymentOut:
        cur = view.currency
        return cls(
            id=view.id,
            invoice=view.invoice,
            currency=cur.code,
            amount=format_money(view.amount, cur),
            method=view.method,
            reference=view.reference,
            transfer_id=view.transfer_id,
            created_at=view.created_at,
            invoice_status=view.invoice_status,
            amount_due=format_money(view.amount_due, cur),
        )


class CreditLine(Request):
    line: int
    amount: AmountIn


class CreditNoteCreate(Request):
    invoice: Annotated[str, Field(max_length=64)]
    amount: AmountIn | None = Field(default=None, description="Gross, tax included.")
    lines: list[CreditLine] | None = Field(default=None, max_length=100)
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class CreditNoteOut(BaseModel):
    object: Literal["credit_note"] = "credit_note"
    id: str
    invoice: str
    currency: str
    amount: Amount
    reason: str
    transfer_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, view: CreditNoteView) -> CreditNoteOut:
        return cls(
            id=view.id,
            invoice=view.invoice,
            currency=view.currency.code,
            amount=format_money(view.amount, view.currency),
            reason=view.reason,
            transfer_id=view.transfer_id,
            created_at=view.created_at,
        )


class TestClockMove(Request):
    now: Moment


class TestClockOut(BaseModel):
    object: Literal["test_clock"] = "test_clock"
    now: datetime
    bill_run: dict[str, Any]
