"""Request and response schemas of payments."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from billfold.core.schemas import Amount, AmountIn, Flag, Request
from billfold.domain.money import format_money
from billfold.payments import PaymentView, Recharge

Gateway = Literal["stripe", "alipay"]


class CheckoutCreate(Request):
    gateway: Gateway
    amount: AmountIn | None = Field(
        default=None, description="A top-up's amount; for an invoice, default what it asks."
    )
    invoice: Annotated[str | None, Field(max_length=40)] = None
    return_url: Annotated[str | None, Field(max_length=2000)] = None
    saved_card: Flag = Field(default=False, description="Charge the saved card now (Stripe).")


class PaymentOut(BaseModel):
    object: Literal["payment"] = "payment"
    id: str
    user_id: str
    gateway: str
    purpose: str = Field(description="top_up, invoice or recharge")
    invoice: str | None
    currency: str
    amount: Amount
    status: str = Field(description="pending, succeeded, failed or canceled")
    refunded: Amount
    transfer_id: str | None = Field(description="The top-up that credited the wallet.")
    failure: str | None
    created_at: datetime
    redirect_url: str | None = Field(default=None, description="Where to send the payer.")
    client_secret: str | None = Field(
        default=None, description="For Stripe.js to confirm the card payment."
    )

    @classmethod
    def of(cls, view: PaymentView) -> PaymentOut:
        cur = view.currency
        return cls(
            id=view.id,
            user_id=view.user_id,
            gateway=view.gateway,
            purpose=view.purpose,
            invoice=view.invoice_id,
            currency=cur.code,
            amount=format_money(view.amount, cur),
            status=view.status,
            refunded=format_money(view.refunded, cur),
            transfer_id=view.transfer_id,
            failure=view.failure,
            created_at=view.created_at,
            redirect_url=view.redirect_url,
            client_secret=view.client_secret,
        )


class PaymentList(BaseModel):
    data: list[PaymentOut]
    has_more: bool = False


class PaymentRefund(Request):
    amount: AmountIn | None = Field(default=None, description="Default: all not refunded yet.")


class MethodCreate(Request):
    gateway: Literal["stripe"] = "stripe"
    payment_method: Annotated[str, Field(max_length=255, description="pm_... from Stripe.js.")]


class MethodOut(BaseModel):
    object: Literal["payment_method"] = "payment_method"
    gateway: str
    label: str


class RechargeSet(Request):
    threshold: AmountIn
    amount: AmountIn
    daily_cap: AmountIn | None = Field(default=None, description="Default: the amount.")
    enabled: Flag = True


class RechargeOut(BaseModel):
    object: Literal["auto_recharge"] = "auto_recharge"
    user_id: str
    currency: str
    threshold: Amount
    amount: Amount
    daily_cap: Amount
    enabled: bool
    payment_method: str | None

    @classmethod
    def of(cls, view: Recharge) -> RechargeOut:
        cur = view.currency
        return cls(
            user_id=view.user_id,
            currency=cur.code,
            threshold=format_money(view.threshold, cur),
            amount=format_money(view.amount, cur),
            daily_cap=format_money(view.daily_cap, cur),
            enabled=view.enabled,
            payment_method=view.method,
        )
