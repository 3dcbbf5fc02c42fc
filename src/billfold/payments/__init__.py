"""Payments: gateways (Stripe, Alipay) behind one interface, checkouts, signed
notifications credited exactly once, refunds to the card, auto-recharge, reconciliation."""

from billfold.payments.gateways import (
    GATEWAYS,
    AlipayGateway,
    Gateway,
    InvalidSignature,
    Notice,
    StripeGateway,
    gateway_for,
)
from billfold.payments.service import (
    PaymentView,
    Recharge,
    apply_notice,
    get_payment,
    get_recharge,
    list_payments,
    receive_notification,
    recharge_due,
    reconcile,
    refund_payment,
    save_method,
    set_recharge,
    start_checkout,
    sync_payment,
)

__all__ = [
    "GATEWAYS",
    "AlipayGateway",
    "Gateway",
    "InvalidSignature",
    "Notice",
    "PaymentView",
    "Recharge",
    "StripeGateway",
    "apply_notice",
    "gateway_for",
    "get_payment",
    "get_recharge",
    "list_payments",
    "receive_notification",
    "recharge_due",
    "reconcile",
    "refund_payment",
    "save_method",
    "set_recharge",
    "start_checkout",
    "sync_payment",
]
