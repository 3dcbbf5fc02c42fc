"""Payment gateways behind one interface: start a payment, read a signed notification,
ask a payment's state, refund, save a card for later.

Each gateway is configured from the environment (BILLFOLD_STRIPE_*, BILLFOLD_ALIPAY_*);
one that is not configured answers `gateway_not_configured`. Nothing here touches the
database: the service decides what a verified notification changes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import parse_qsl

import stripe
import structlog
from alipay import AliPay

from billfold.config import Settings
from billfold.domain.errors import GatewayUnavailable, InvalidRequest, NotFound

log = structlog.get_logger("billfold.payments")

GATEWAYS = ("stripe", "alipay")


class InvalidSignature(InvalidRequest):
    """A notification whose signature does not verify: it changes nothing."""


@dataclass(frozen=True, slots=True)
class Started:
    gateway_ref: str
    """The payment's id at the gateway (a PaymentIntent id; Alipay: our out_trade_no)."""
    status: str = "pending"
    redirect_url: str | None = None
    client_secret: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """What a verified notification (or a query) says of one payment."""

    gateway_ref: str
    gateway_payment_id: str
    outcome: str
    """succeeded, failed, canceled, pending, or ignored (an event billfold does not act on)."""
    amount_minor: int | None
    currency: str | None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class SavedMethod:
    customer_ref: str
    method_ref: str
    label: str


class Gateway(Protocol):
    name: str
    webhook_answer: bytes

    def start(
        self,
        *,
        payment_id: str,
        amount_minor: int,
        currency: str,
        subject: str,
        return_url: str,
        saved: SavedMethod | None = None,
    ) -> Started: ...

    def parse_notice(self, headers: Mapping[str, str], body: bytes) -> Notice: ...

    def fetch(self, gateway_ref: str) -> Notice: ...

    def refund(self, *, gateway_ref: str, amount_minor: int, idempotency_key: str) -> str: ...

    def save_method(self, *, user_id: str, method_ref: str) -> SavedMethod: ...


# --- Stripe ---------------------------------------------------------------------------

_STRIPE_OUTCOMES = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "failed",
    "payment_intent.canceled": "canceled",
}
_STRIPE_STATUSES = {
    "succeeded": "succeeded",
    "canceled": "canceled",
    "requires_payment_method": "pending",
    "requires_confirmation": "pending",
    "requires_action": "pending",
    "processing": "pending",
    "requires_capture": "pending",
}


class StripeGateway:
    """Card payments through PaymentIntents; webhooks verified with the Stripe library's
    signature check (`Stripe-Signature`, the endpoint's signing secret)."""

    name = "stripe"
    webhook_answer = b'{"received": true}'

    def __init__(self, api_key: str, webhook_secret: str, api_base: str | None = None) -> None:
        addresses: Any = {"api": api_base} if api_base else {}
        self.client = stripe.StripeClient(api_key, base_addresses=addresses, max_network_retries=2)
        self.webhook_secret = webhook_secret

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except stripe.CardError as error:
            raise InvalidRequest(
                f"the card was declined: {error.user_message or what}", code="gateway_error"
            ) from None
        except stripe.StripeError as error:
            log.warning("stripe_error", call=what, error=str(error)[:300])
            raise GatewayUnavailable(f"Stripe could not {what}", code="gateway_error") from None

    def start(
        self,
        *,
        payment_id: str,
        amount_minor: int,
        currency: str,
        subject: str,
        return_url: str,
        saved: SavedMethod | None = None,
    ) -> Started:
        params: dict[str, Any] = {
            "amount": amount_minor,
            "currency": currency.lower(),
            "metadata": {"billfold_payment": payment_id, "subject": subject[:200]},
        }
        if saved is not None:
            # Auto-recharge: the saved card, charged without the user present.
            params |= {
                "customer": saved.customer_ref,
                "payment_method": saved.method_ref,
                "confirm": True,
                "off_session": True,
            }
        intent = self._call(
            "start the payment",
            self.client.v1.payment_intents.create,
            params=params,
            options={"idempotency_key": f"billfold-{payment_id}"},
        )
        return Started(
            gateway_ref=str(intent.id),
            status=_STRIPE_STATUSES.get(str(intent.status), "pending"),
            client_secret=str(intent.client_secret),
        )

    def parse_notice(self, headers: Mapping[str, str], body: bytes) -> Notice:
        signature = headers.get("stripe-signature")
        if not signature:
            raise InvalidSignature("the notification is not signed", code="invalid_signature")
        try:
            text = body.decode("utf-8")
            stripe.WebhookSignature.verify_header(text, signature, self.webhook_secret)
        except (UnicodeDecodeError, stripe.SignatureVerificationError):
            raise InvalidSignature(
                "the notification's signature does not verify", code="invalid_signature"
            ) from None
        try:
            event = json.loads(text)
            obj = event["data"]["object"]
            assert isinstance(obj, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise InvalidRequest("the notification is not a Stripe event", param="body") from None
        outcome = _STRIPE_OUTCOMES.get(str(event["type"]), "ignored")
        if obj.get("object") != "payment_intent":
            outcome = "ignored"
        return Notice(
            gateway_ref=str(obj.get("id")),
            gateway_payment_id=str(obj.get("id")),
            outcome=outcome,
            amount_minor=_int(obj.get("amount")),
            currency=str(obj.get("currency") or "").upper() or None,
            event_id=str(event.get("id")),
        )

    def fetch(self, gateway_ref: str) -> Notice:
        intent = self._call(
            "read the payment", self.client.v1.payment_intents.retrieve, gateway_ref
        )
        return Notice(
            gateway_ref=str(intent.id),
            gateway_payment_id=str(intent.id),
            outcome=_STRIPE_STATUSES.get(str(intent.status), "pending"),
            amount_minor=_int(intent.amount),
            currency=str(intent.currency).upper(),
        )

    def refund(self, *, gateway_ref: str, amount_minor: int, idempotency_key: str) -> str:
        refund = self._call(
            "refund the payment",
            self.client.v1.refunds.create,
            params={"payment_intent": gateway_ref, "amount": amount_minor},
            options={"idempotency_key": idempotency_key},
        )
        return str(refund.id)

    def save_method(self, *, user_id: str, method_ref: str) -> SavedMethod:
        customer = self._call(
            "save the card",
            self.client.v1.customers.create,
            params={"metadata": {"billfold_user": user_id}},
        )
        method = self._call(
            "save the card",
            self.client.v1.payment_methods.attach,
            method_ref,
            params={"customer": customer.id},
        )
        card = method.to_dict().get("card") or {}
        label = f"{card.get('brand', 'card')} •••• {card.get('last4', '????')}"
        return SavedMethod(str(customer.id), str(method.id), label)


# --- Alipay ---------------------------------------------------------------------------

_ALIPAY_OUTCOMES = {
    "TRADE_SUCCESS": "succeeded",
    "TRADE_FINISHED": "succeeded",
    "TRADE_CLOSED": "canceled",
    "WAIT_BUYER_PAY": "pending",
}


class AlipayGateway:
    """Alipay's page payment (电脑网站支付): a signed redirect, then the asynchronous
    notification, signed by Alipay with RSA2 (SHA256withRSA) and verified with its
    public key through python-alipay-sdk. Payments are in CNY."""

    name = "alipay"
    webhook_answer = b"success"

    def __init__(
        self,
        app_id: str,
        private_key: str,
        alipay_public_key: str,
        gateway_url: str,
        notify_url: str,
    ) -> None:
        self.app_id = app_id
        self.gateway_url = gateway_url
        self.notify_url = notify_url
        self.client = AliPay(
            appid=app_id,
            app_notify_url=notify_url,
            app_private_key_string=private_key,
            alipay_public_key_string=alipay_public_key,
            sign_type="RSA2",
        )

    def start(
        self,
        *,
        payment_id: str,
        amount_minor: int,
        currency: str,
        subject: str,
        return_url: str,
        saved: SavedMethod | None = None,
    ) -> Started:
        if currency != "CNY":
            raise InvalidRequest("Alipay takes payments in CNY", code="currency_mismatch")
        if saved is not None:
            raise InvalidRequest("Alipay has no saved cards here", code="gateway_not_configured")
        query = self.client.api_alipay_trade_page_pay(
            subject=subject[:128],
            out_trade_no=payment_id,
            total_amount=str(Decimal(amount_minor) / 100),
            return_url=return_url,
            notify_url=self.notify_url,
        )
        return Started(gateway_ref=payment_id, redirect_url=f"{self.gateway_url}?{query}")

    def parse_notice(self, headers: Mapping[str, str], body: bytes) -> Notice:
        try:
            data = dict(
                parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
            )
        except (UnicodeDecodeError, ValueError):
            raise InvalidSignature(
                "the notification is not a signed form", code="invalid_signature"
            ) from None
        signature = data.pop("sign", None)
        try:
            verified = bool(signature) and self.client.verify(data, signature)
        except Exception:  # A malformed signature or sign type is a failed verification.
            verified = False
        if not verified:
            raise InvalidSignature(
                "the notification's signature does not verify", code="invalid_signature"
            )
        if data.get("app_id") != self.app_id:
            raise InvalidSignature(
                "the notification is for another application", code="invalid_signature"
            )
        try:
            minor = int(Decimal(data["total_amount"]) * 100)
            ref, trade = data["out_trade_no"], data["trade_no"]
        except (KeyError, ArithmeticError):
            raise InvalidRequest("the notification lacks its trade", param="body") from None
        return Notice(
            gateway_ref=ref,
            gateway_payment_id=trade,
            outcome=_ALIPAY_OUTCOMES.get(data.get("trade_status", ""), "ignored"),
            amount_minor=minor,
            currency="CNY",
            event_id=data.get("notify_id"),
        )

    def fetch(self, gateway_ref: str) -> Notice:
        raise GatewayUnavailable(
            "Alipay payments are confirmed by their notification", code="gateway_error"
        )

    def refund(self, *, gateway_ref: str, amount_minor: int, idempotency_key: str) -> str:
        raise InvalidRequest(
            "Alipay payments are refunded in the Alipay merchant console",
            code="gateway_not_configured",
        )

    def save_method(self, *, user_id: str, method_ref: str) -> SavedMethod:
        raise InvalidRequest("Alipay has no saved cards here", code="gateway_not_configured")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _pem(value: str) -> str:
    """A PEM key as configured: PEM text, or base64 of it (one line in an env file)."""
    if "-----BEGIN" in value:
        return value
    return base64.b64decode(value).decode()


def gateway_for(settings: Settings, name: str) -> Gateway:
    """The configured gateway of this name; `gateway_not_configured` if it is not."""
    if name not in GATEWAYS:
        raise NotFound(f"no gateway {name}", code="gateway_not_configured", param="gateway")
    if name == "stripe":
        if not settings.stripe_api_key or not settings.stripe_webhook_secret:
            raise InvalidRequest(
                "card payments are not set up (BILLFOLD_STRIPE_API_KEY, "
                "BILLFOLD_STRIPE_WEBHOOK_SECRET)",
                code="gateway_not_configured",
                param="gateway",
            )
        return StripeGateway(
            settings.stripe_api_key, settings.stripe_webhook_secret, settings.stripe_api_base
        )
    if not (settings.alipay_app_id and settings.alipay_private_key and settings.alipay_public_key):
        raise InvalidRequest(
            "Alipay is not set up (BILLFOLD_ALIPAY_APP_ID, BILLFOLD_ALIPAY_PRIVATE_KEY, "
            "BILLFOLD_ALIPAY_PUBLIC_KEY)",
            code="gateway_not_configured",
            param="gateway",
        )
    return AlipayGateway(
        settings.alipay_app_id,
        _pem(settings.alipay_private_key),
        _pem(settings.alipay_public_key),
        settings.alipay_gateway_url,
        f"{settings.public_url.rstrip('/')}/v1/gateways/alipay/webhook",
    )
