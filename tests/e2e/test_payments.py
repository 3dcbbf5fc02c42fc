"""Payments end to end: Stripe against `localstripe` (a stateful Stripe-compatible server
the test starts on loopback), Alipay with keys made here and notifications signed here.

- Stripe: a checkout, the card confirmed as Stripe.js would, the webhook localstripe sends
  and the same success delivered twice more: one credit; a tampered or unsigned webhook
  changes nothing; a refund to the card; reconcile agrees; auto-recharge starts one
  payment at a time and stops at its daily cap.
- Alipay: the redirect is signed with the application's key; a good notification credits
  once however often it comes; a tampered one, an unsigned one and one for another
  application do nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from billfold import catalog, parties, payments, subscriptions
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from billfold.invoicing import billing, invoices
from billfold.ledger.verify import verify
from tests.conftest import LiveServer

WEBHOOK_SECRET = "whsec_billfold_test"
STRIPE_KEY = "sk_test_billfold"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def localstripe(tmp_path: Path) -> Iterator[str]:
    port = _port()
    process = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{url}/v1/customers", auth=(STRIPE_KEY, ""), timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("localstripe did not start") from None
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


def _stripe(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, auth=(STRIPE_KEY, ""), timeout=10)


def _card(ls: httpx.Client) -> str:
    made = ls.post(
        "/v1/payment_methods",
        data={"type": "card", "card[number]": "4242424242424242", "card[exp_month]": "12",
              "card[exp_year]": "2030", "card[cvc]": "123"},
    )  # fmt: skip
    assert made.status_code == 200, made.text
    return str(made.json()["id"])


def _signed(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    stamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={stamp},v1={mac}", "Content-Type": "application/json"}


def _wait(check: object, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


@pytest.fixture
def stripe_world(ctx: Context, localstripe: str) -> Iterator[tuple[LiveServer, str, str, str]]:
    ctx.settings.stripe_api_key = STRIPE_KEY
    ctx.settings.stripe_webhook_secret = WEBHOOK_SECRET
    ctx.settings.stripe_api_base = localstripe
    admin_key = ctx.run(create_key, SYSTEM, role=Role.ADMIN)[1]
    with LiveServer(ctx) as server, server.client(admin_key) as admin:
        hook = httpx.post(
            f"{localstripe}/_config/webhooks/billfold",
            data={"url": f"{server.url}/v1/gateways/stripe/webhook", "secret": WEBHOOK_SECRET},
        )
        assert hook.status_code == 200, hook.text
        user = admin.post(
            "/v1/users", json={"name": "Pay", "email": "pay@u.io", "currency": "USD"}
        ).json()["id"]
        user_key = ctx.run(create_key, SYSTEM, role=Role.USER, user_id=user)[1]
        yield server, admin_key, user_key, user


def _balance(client: httpx.Client, user: str) -> Decimal:
    return Decimal(client.get(f"/v1/users/{user}/balance").json()["cash"])


def test_a_card_checkout_credits_once_however_often_the_webhook_comes(
    stripe_world: tuple[LiveServer, str, str, str], localstripe: str, ctx: Context
) -> None:
    server, admin_key, user_key, user = stripe_world
    with (
        server.client(user_key) as me,
        server.client(admin_key) as admin,
        _stripe(localstripe) as ls,
    ):
        started = me.post(f"/v1/users/{user}/checkouts", json={"gateway": "stripe", "amount": "25"})
        assert started.status_code == 201, started.text
        payment = started.json()
        assert payment["status"] == "pending" and payment["client_secret"]
        intent = payment["client_secret"].split("_secret_")[0]
        # What Stripe.js does in the page: attach the card, confirm.
        assert ls.post(
            f"/v1/payment_intents/{intent}", data={"payment_method": _card(ls)}
        ).is_success
        confirmed = ls.post(f"/v1/payment_intents/{intent}/confirm")
        assert confirmed.json()["status"] == "succeeded", confirmed.text
        _wait(lambda: me.get(f"/v1/payments/{payment['id']}").json()["status"] == "succeeded")
        assert _balance(me, user) == 25
        # The same success again, twice, correctly signed: nothing more.
        event = {"id": "evt_again", "object": "event", "type": "payment_intent.succeeded",
                 "data": {"object": ls.get(f"/v1/payment_intents/{intent}").json()}}  # fmt: skip
        body = json.dumps(event).encode()
        for _ in range(2):
            again = httpx.post(f"{server.url}/v1/gateways/stripe/webhook", content=body,
                               headers=_signed(body))  # fmt: skip
            assert again.status_code == 200, again.text
        # The user's return asks Stripe too: still one credit.
        assert me.post(f"/v1/payments/{payment['id']}/sync").json()["status"] == "succeeded"
        assert _balance(me, user) == 25
        # Tampered (the amount raised after signing) and unsigned: refused, nothing changes.
        tampered = body.replace(b'"amount": 2500', b'"amount": 250000')
        assert tampered != body
        refused = httpx.post(f"{server.url}/v1/gateways/stripe/webhook", content=tampered,
                             headers=_signed(body))  # fmt: skip
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_signature"
        unsigned = httpx.post(f"{server.url}/v1/gateways/stripe/webhook", content=body)
        assert unsigned.status_code == 400
        forged = httpx.post(f"{server.url}/v1/gateways/stripe/webhook", content=body,
                            headers=_signed(body, "whsec_someone_else"))  # fmt: skip
        assert forged.status_code == 400
        assert _balance(me, user) == 25
        # Unspent cash back to the card: the wallet pays it out, never below zero.
        assert me.post(f"/v1/payments/{payment['id']}/refunds", json={}).status_code == 403
        back = admin.post(f"/v1/payments/{payment['id']}/refunds", json={"amount": "10"})
        assert back.status_code == 200, back.text
        assert back.json()["refunded"] == "10.00"
        assert _balance(me, user) == 15
        refunds = ls.get("/v1/refunds").json()["data"]
        assert [r["amount"] for r in refunds] == [1000]
        too_much = admin.post(f"/v1/payments/{payment['id']}/refunds", json={"amount": "20"})
        assert too_much.status_code == 400
        report = ctx.read(payments.reconcile, ctx.clock.now().strftime("%Y-%m"))
        assert report.differences == [], report.differences


def test_an_open_postpaid_invoice_is_paid_by_card(
    stripe_world: tuple[LiveServer, str, str, str], localstripe: str, ctx: Context
) -> None:
    """The money for an open postpaid invoice arrives through the gateway: the invoice is
    paid with it, and nothing is drawn on the credit line."""
    server, _admin_key, _user_key, _user = stripe_world
    provider = ctx.run(parties.create_provider, SYSTEM, name="P", email="p@p.io",
                       commission_rate="0.2")  # fmt: skip
    ctx.run(catalog.create_service, SYSTEM, code="maps", name="Maps", provider_id=provider.id)
    ctx.run(catalog.create_plan, SYSTEM, {
        "code": "monthly", "name": "Monthly", "service": "maps", "currency": "USD",
        "interval": "month", "fixed_fee": "30", "charges": [],
    })  # fmt: skip
    user = ctx.run(parties.create_user, SYSTEM, name="Post", email="post@u.io",
                   currency_code="USD", billing_mode="postpaid", credit_limit="100")  # fmt: skip
    ctx.run(subscriptions.create, SYSTEM, user_ref=user.id, plan_code="monthly")
    ctx.clock.set(datetime(2026, 12, 1, tzinfo=UTC))  # type: ignore[attr-defined]
    billing.bill_run(ctx)
    open_ = ctx.run(invoices.list_for, SYSTEM, user=user.id, status="open", limit=5)[0]
    (invoice,) = open_
    key = ctx.run(create_key, SYSTEM, role=Role.USER, user_id=user.id)[1]
    with server.client(key) as me, _stripe(localstripe) as ls:
        started = me.post(
            f"/v1/users/{user.id}/checkouts", json={"gateway": "stripe", "invoice": invoice.id}
        )
        assert started.status_code == 201, started.text
        assert started.json()["amount"] == "30.00"
        intent = started.json()["client_secret"].split("_secret_")[0]
        assert ls.post(
            f"/v1/payment_intents/{intent}", data={"payment_method": _card(ls)}
        ).is_success
        assert ls.post(f"/v1/payment_intents/{intent}/confirm").json()["status"] == "succeeded"
        _wait(lambda: me.get(f"/v1/invoices/{invoice.id}").json()["status"] == "paid")
        balance = me.get(f"/v1/users/{user.id}/balance").json()
        assert balance["posted"] == "0.00"  # The card's money paid it, not credit.
        again = me.post(
            f"/v1/users/{user.id}/checkouts", json={"gateway": "stripe", "invoice": invoice.id}
        )
        assert again.status_code == 409  # A paid invoice asks for nothing more.
    assert ctx.run(verify, SYSTEM).ok


def test_a_failed_or_foreign_checkout_changes_nothing(
    stripe_world: tuple[LiveServer, str, str, str], localstripe: str
) -> None:
    server, _admin, user_key, user = stripe_world
    with server.client(user_key) as me, _stripe(localstripe) as ls:
        payment = me.post(
            f"/v1/users/{user}/checkouts", json={"gateway": "stripe", "amount": "5"}
        ).json()
        intent = payment["client_secret"].split("_secret_")[0]
        assert ls.post(f"/v1/payment_intents/{intent}/cancel").is_success
        event = {"id": "evt_x", "object": "event", "type": "payment_intent.canceled",
                 "data": {"object": ls.get(f"/v1/payment_intents/{intent}").json()}}  # fmt: skip
        body = json.dumps(event).encode()
        ok = httpx.post(f"{server.url}/v1/gateways/stripe/webhook", content=body,
                        headers=_signed(body))  # fmt: skip
        assert ok.status_code == 200
        assert me.get(f"/v1/payments/{payment['id']}").json()["status"] == "canceled"
        assert _balance(me, user) == 0
        # Sub-cent amounts, no gateway, an amount of nothing: a 400 each.
        for body_ in (
            {"gateway": "stripe", "amount": "0.001"},
            {"gateway": "paypal", "amount": "1"},
            {"gateway": "stripe", "amount": "0"},
            {"gateway": "alipay", "amount": "1"},
        ):
            assert me.post(f"/v1/users/{user}/checkouts", json=body_).status_code in (400, 422)


def test_auto_recharge_starts_one_payment_at_a_time_up_to_its_daily_cap(
    stripe_world: tuple[LiveServer, str, str, str], localstripe: str, ctx: Context
) -> None:
    server, admin_key, user_key, user = stripe_world
    with (
        server.client(user_key) as me,
        server.client(admin_key) as admin,
        _stripe(localstripe) as ls,
    ):
        early = me.post(f"/v1/users/{user}/auto-recharge", json={"threshold": "10", "amount": "20"})
        assert early.status_code == 400  # No card yet.
        saved = me.post(f"/v1/users/{user}/payment-methods", json={"payment_method": _card(ls)})
        assert saved.status_code == 201 and "4242" in saved.json()["label"], saved.text
        setting = me.post(
            f"/v1/users/{user}/auto-recharge",
            json={"threshold": "10", "amount": "20", "daily_cap": "40"},
        )
        assert setting.status_code == 200, setting.text
        assert payments.recharge_due(ctx) == 1
        assert payments.recharge_due(ctx) == 0  # Above the threshold now (or pending).
        assert _balance(me, user) == 20
        provider = admin.post(
            "/v1/providers", json={"name": "P", "email": "p@p.io", "commission_rate": "0.2"}
        ).json()["id"]
        from tests.integration.helpers import make_customer

        make_customer(ctx, provider, user)
        admin.post("/v1/charges", json={"user": user, "amount": "15", "description": "use",
                                        "provider_id": provider})  # fmt: skip
        assert payments.recharge_due(ctx) == 1
        assert _balance(me, user) == 25
        admin.post("/v1/charges", json={"user": user, "amount": "20", "description": "use",
                                        "provider_id": provider})  # fmt: skip
        assert payments.recharge_due(ctx) == 0  # 40 today already: the cap.
        assert _balance(me, user) == 5
        listed = me.get(f"/v1/users/{user}/payments").json()["data"]
        assert [(p["purpose"], p["status"]) for p in listed] == [("recharge", "succeeded")] * 2
        _wait(lambda: len(ls.get("/v1/payment_intents").json()["data"]) == 2)


# --- Alipay ---------------------------------------------------------------------------


def _keys() -> tuple[rsa.RSAPrivateKey, str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return key, private, public


def _alipay_sign(key: rsa.RSAPrivateKey, fields: dict[str, str]) -> str:
    message = "&".join(
        f"{k}={v}" for k, v in sorted(fields.items()) if k not in ("sign", "sign_type")
    )
    signature = key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode()


def test_alipay_credits_a_verified_notification_once_and_nothing_else(ctx: Context) -> None:
    app_key, app_private, app_public = _keys()
    alipay_key, _alipay_private, alipay_public = _keys()
    ctx.settings.alipay_app_id = "2021000000000001"
    ctx.settings.alipay_private_key = app_private
    ctx.settings.alipay_public_key = base64.b64encode(alipay_public.encode()).decode()
    admin_key = ctx.run(create_key, SYSTEM, role=Role.ADMIN)[1]
    with LiveServer(ctx) as server, server.client(admin_key) as admin:
        user = admin.post(
            "/v1/users", json={"name": "Li", "email": "li@u.io", "currency": "CNY"}
        ).json()["id"]
        started = admin.post(
            f"/v1/users/{user}/checkouts", json={"gateway": "alipay", "amount": "88.00"}
        )
        assert started.status_code == 201, started.text
        payment = started.json()
        redirect = urlsplit(payment["redirect_url"])
        assert redirect.netloc == "openapi.alipay.com"
        query = dict(parse_qsl(redirect.query))
        # billfold signed the request with the application's key (RSA2).
        message = "&".join(f"{k}={v}" for k, v in sorted(query.items()) if k != "sign")
        serialization.load_pem_public_key(app_public.encode()).verify(  # type: ignore[union-attr]
            base64.b64decode(query["sign"]), message.encode(), padding.PKCS1v15(), hashes.SHA256()
        )  # Raises if it does not verify.
        del app_key
        fields = {
            "app_id": "2021000000000001",
            "out_trade_no": payment["id"],
            "trade_no": "2026120122001400000000000001",
            "total_amount": "88.00",
            "trade_status": "TRADE_SUCCESS",
            "notify_id": "n1",
            "notify_time": "2026-11-01 12:00:00",
            "charset": "utf-8",
            "sign_type": "RSA2",
        }
        good = {**fields, "sign": _alipay_sign(alipay_key, fields)}
        hook = f"{server.url}/v1/gateways/alipay/webhook"
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for _ in range(3):
            answer = httpx.post(hook, content=urlencode(good), headers=form)
            assert answer.status_code == 200 and answer.text == "success", answer.text
        balance = admin.get(f"/v1/users/{user}/balance").json()
        assert balance["cash"] == "88.00"
        for bad in (
            {**good, "total_amount": "880.00"},  # Tampered after signing.
            {k: v for k, v in good.items() if k != "sign"},  # Unsigned.
            {**fields, "app_id": "2021000000000999",
             "sign": _alipay_sign(alipay_key, {**fields, "app_id": "2021000000000999"})},
            {**good, "sign": "bm90IGEgc2lnbmF0dXJl"},
        ):  # fmt: skip
            refused = httpx.post(hook, content=urlencode(bad), headers=form)
            assert refused.status_code == 400, refused.text
        assert admin.get(f"/v1/users/{user}/balance").json()["cash"] == "88.00"
        listed = admin.get(f"/v1/users/{user}/payments").json()["data"]
        assert [(p["status"], p["amount"]) for p in listed] == [("succeeded", "88.00")]
