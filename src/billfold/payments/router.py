"""Payments over HTTP: checkouts, the gateways' webhooks, payments, refunds to the card,
saved cards and auto-recharge."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response

from billfold import payments
from billfold.core.access import Principal
from billfold.core.http import Read, SegmentRouter, UnitOfWorkRoute, Write, get_principal
from billfold.payments.schemas import (
    CheckoutCreate,
    MethodCreate,
    MethodOut,
    PaymentList,
    PaymentOut,
    PaymentRefund,
    RechargeOut,
    RechargeSet,
)

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["payments"])
Who = Annotated[Principal, Depends(get_principal)]
GATEWAY_DOWN: dict[int | str, dict[str, Any]] = {
    502: {"description": "The gateway refused or could not be reached; nothing changed."}
}


async def _raw_body(request: Request) -> bytes:
    return await request.body()


@router.post(
    "/users/{user_id}/checkouts", status_code=201, response_model=PaymentOut,
    responses=GATEWAY_DOWN,
)  # fmt: skip
def start_checkout(user_id: str, body: CheckoutCreate, work: Write, who: Who) -> PaymentOut:
    """Starts a payment with a gateway, for a top-up or an invoice (that user, admin)."""
    return PaymentOut.of(
        payments.start_checkout(
            work,
            who,
            user_id,
            gateway=body.gateway,
            amount=body.amount,
            invoice_id=body.invoice,
            return_url=body.return_url,
            saved_card=body.saved_card,
        )
    )


@router.post(
    "/gateways/{gateway}/webhook",
    response_class=Response,
    responses={200: {"description": "Received (the gateway's own acknowledgement)."}},
)
def gateway_webhook(
    gateway: str, request: Request, work: Write, body: Annotated[bytes, Depends(_raw_body)]
) -> Response:
    """A gateway's signed notification: a verified success credits the wallet once."""
    answer = payments.receive_notification(work, gateway, request.headers, body)
    media = "application/json" if answer.startswith(b"{") else "text/plain"
    return Response(content=answer, media_type=media)


@router.get("/users/{user_id}/payments", response_model=PaymentList)
def list_payments(user_id: str, work: Read, who: Who) -> PaymentList:
    """The user's gateway payments, newest first (that user, admin)."""
    return PaymentList(data=[PaymentOut.of(p) for p in payments.list_payments(work, who, user_id)])


@router.get("/payments/{payment_id}", response_model=PaymentOut)
def get_payment(payment_id: str, work: Read, who: Who) -> PaymentOut:
    return PaymentOut.of(payments.get_payment(work, who, payment_id))


@router.post("/payments/{payment_id}/sync", response_model=PaymentOut, responses=GATEWAY_DOWN)
def sync_payment(payment_id: str, work: Write, who: Who) -> PaymentOut:
    """Asks the gateway how the payment stands and applies it (the return page does)."""
    return PaymentOut.of(payments.sync_payment(work, who, payment_id))


@router.post("/payments/{payment_id}/refunds", response_model=PaymentOut, responses=GATEWAY_DOWN)
def refund_payment(payment_id: str, body: PaymentRefund, work: Write, who: Who) -> PaymentOut:
    """Gives unspent cash back to the card it came from (admin)."""
    return PaymentOut.of(payments.refund_payment(work, who, payment_id, amount=body.amount))


@router.post(
    "/users/{user_id}/payment-methods", status_code=201, response_model=MethodOut,
    responses=GATEWAY_DOWN,
)  # fmt: skip
def save_method(user_id: str, body: MethodCreate, work: Write, who: Who) -> MethodOut:
    """Saves a card for auto-recharge (that user, admin)."""
    label = payments.save_method(
        work, who, user_id, gateway=body.gateway, method_ref=body.payment_method
    )
    return MethodOut(gateway=body.gateway, label=label)


@router.get("/users/{user_id}/auto-recharge", response_model=RechargeOut)
def get_recharge(user_id: str, work: Read, who: Who) -> RechargeOut:
    return RechargeOut.of(payments.get_recharge(work, who, user_id))


@router.post("/users/{user_id}/auto-recharge", response_model=RechargeOut)
def set_recharge(user_id: str, body: RechargeSet, work: Write, who: Who) -> RechargeOut:
    """Sets auto-recharge: below `threshold` available, one payment of `amount` on the
    saved card (never a second while one is pending, at most `daily_cap` a day)."""
    return RechargeOut.of(
        payments.set_recharge(
            work,
            who,
            user_id,
            threshold=body.threshold,
            amount=body.amount,
            daily_cap=body.daily_cap,
            enabled=body.enabled,
        )
    )
