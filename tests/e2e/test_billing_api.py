"""Subscriptions, invoices and the test clock over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from tests.conftest import LiveServer


@pytest.fixture
def billing_setup(ctx: Context, admin: httpx.Client) -> dict[str, str]:
    provider = admin.post(
        "/v1/providers", json={"name": "P", "email": "p@p.io", "commission_rate": "0.2"}
    ).json()
    admin.post("/v1/services", json={"provider_id": provider["id"], "code": "maps", "name": "Maps"})
    admin.post(
        "/v1/services/maps/metrics", json={"code": "calls", "name": "Calls", "aggregation": "count"}
    )
    plan = {
        "code": "pro",
        "name": "Pro",
        "service": "maps",
        "currency": "USD",
        "interval": "month",
        "fixed_fee": "50",
        "fee_timing": "advance",
        "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.01"}],
    }
    assert admin.post("/v1/plans", json=plan).status_code == 201
    user = admin.post(
        "/v1/users",
        json={
            "name": "Ada",
            "email": "ada@example.com",
            "currency": "USD",
            "billing_mode": "postpaid",
            "tax_rate": "0.2",
        },
    ).json()
    return {"user": user["id"], "provider": provider["id"]}


def test_subscribe_move_the_clock_and_read_the_invoice(
    ctx: Context, server: LiveServer, admin: httpx.Client, billing_setup: dict[str, str]
) -> None:
    ctx.settings.test_clock = True
    user = billing_setup["user"]
    created = admin.post(
        "/v1/subscriptions",
        json={"user": user, "plan": "pro", "start": "2026-11-01T12:00:00Z", "billing_anchor": 15},
        headers={"Idempotency-Key": "sub-1"},
    )
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["current_period_end"].startswith("2026-11-15")
    replay = admin.post(
        "/v1/subscriptions",
        json={"user": user, "plan": "pro", "start": "2026-11-01T12:00:00Z", "billing_anchor": 15},
        headers={"Idempotency-Key": "sub-1"},
    )
    assert replay.headers.get("Idempotent-Replayed") == "true"
    moved = admin.post("/v1/test-clock", json={"now": "2026-11-15T00:00:00Z"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["bill_run"]["invoices_finalized"] == 1
    listed = admin.get("/v1/invoices", params={"user": user}).json()["data"]
    first = next(i for i in listed if i["status"] == "open")
    # Nov 1 - Nov 15 of the Oct 15 - Nov 15 period: 50 * 14 / 31 = 22.58, tax 20%.
    assert [line["amount"] for line in first["lines"]] == ["22.58"]
    assert (first["subtotal"], first["tax"], first["total"]) == ("22.58", "4.52", "27.10")
    assert first["number"] == "BF-2026-000001"
    html = admin.get(f"/v1/invoices/{first['id']}.html")
    # An invoice page may load nothing from anywhere (its styles are inline).
    assert html.headers["content-security-policy"].startswith("default-src 'none'")
    assert html.status_code == 200 and "BF-2026-000001" in html.text and "Ada" in html.text
    assert "Prorated by days: 14 of the period&#39;s 31 days" in html.text
    chinese = admin.get(f"/v1/invoices/{first['id']}.html", params={"locale": "zh-CN"})
    assert "按天折算：本期 31 天中的 14 天" in chinese.text
    assert admin.get(f"/v1/invoices/{first['id']}.html?locale=fr").status_code == 400
    pdf = admin.get(f"/v1/invoices/{first['id']}.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert len(pdf.content) > 2000
    # The user sees its own invoice; another user does not.
    user_key = ctx.run(create_key, SYSTEM, role=Role.USER, user_id=user)[1]
    with server.client(user_key) as me:
        assert me.get(f"/v1/invoices/{first['id']}").status_code == 200
        short = me.post(f"/v1/invoices/{first['id']}/pay")
        assert short.status_code == 402 or short.json()["error"]["type"] == "insufficient_funds"
    other = admin.post(
        "/v1/users", json={"name": "B", "email": "b@example.com", "currency": "USD"}
    ).json()
    other_key = ctx.run(create_key, SYSTEM, role=Role.USER, user_id=other["id"])[1]
    with server.client(other_key) as them:
        assert them.get(f"/v1/invoices/{first['id']}").status_code == 404
        assert them.post(f"/v1/subscriptions/{sub['id']}/cancel", json={}).status_code == 404
    admin.post(f"/v1/users/{user}/top-ups", json={"amount": "100"})
    # Postpaid: the cash waits in the wallet until the user pays the invoice with it.
    assert admin.get(f"/v1/invoices/{first['id']}").json()["status"] == "open"
    with server.client(user_key) as me:
        paid = me.post(f"/v1/invoices/{first['id']}/pay")
        assert paid.status_code == 200, paid.text
    assert admin.get(f"/v1/invoices/{first['id']}").json()["status"] == "paid"
    note = admin.post(
        "/v1/credit-notes", json={"invoice": first["id"], "amount": "5.00", "reason": "goodwill"}
    )
    assert note.status_code == 201, note.text
    too_much = admin.post(
        "/v1/credit-notes", json={"invoice": first["id"], "amount": "50", "reason": "x"}
    )
    assert too_much.status_code == 400
    assert admin.get("/v1/ledger/verify").json()["ok"] is True


def test_bad_requests_are_clear_4xx(admin: httpx.Client, billing_setup: dict[str, str]) -> None:
    user = billing_setup["user"]
    for body, param in (
        ({"user": user, "plan": "nope"}, "plan"),
        ({"user": user, "plan": "pro", "billing_anchor": 32}, "billing_anchor"),
        ({"user": user, "plan": "pro", "start": "2020-01-01T00:00:00Z"}, "start"),
    ):
        answer = admin.post("/v1/subscriptions", json=body)
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.json()["error"]["param"] == param
    assert admin.get("/v1/subscriptions").json()["data"] == []
    assert admin.post("/v1/test-clock", json={"now": "2030-01-01T00:00:00Z"}).status_code == 404


def test_an_operator_records_a_bank_transfer_over_http(
    ctx: Context, server: LiveServer, admin: httpx.Client, billing_setup: dict[str, str]
) -> None:
    ctx.settings.test_clock = True
    user = billing_setup["user"]
    admin.post("/v1/subscriptions", json={"user": user, "plan": "pro"})
    assert admin.post("/v1/test-clock", json={"now": "2026-12-01T00:00:00Z"}).status_code == 200
    listed = admin.get("/v1/invoices", params={"user": user, "status": "open"}).json()["data"]
    assert len(listed) == 1
    inv = listed[0]
    assert (
        admin.get("/v1/invoices", params={"user": user, "status": "finalized"}).json()["data"]
        == listed
    )  # The older name of the status still filters.
    due = inv["amount_due"]
    aging = admin.get("/v1/reports/receivables", params={"by": "user"}).json()
    assert [(r["party"], r["current"], r["total"]) for r in aging["data"]] == [(user, due, due)]
    body = {"amount": "10.00", "method": "bank_transfer", "reference": "SEPA 2026-12-01 X1"}
    headers = {"Idempotency-Key": "pay-x1"}
    first = admin.post(f"/v1/invoices/{inv['id']}/payments", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = admin.post(f"/v1/invoices/{inv['id']}/payments", json=body, headers=headers)
    assert again.json() == first.json()
    assert first.json()["invoice_status"] == "open"
    for bad in (
        {**body, "amount": "abc"},
        {**body, "method": "cash"},
        {**body, "reference": ""},
        {**body, "amount": "100000"},
    ):
        refused = admin.post(f"/v1/invoices/{inv['id']}/payments", json=bad)
        assert refused.status_code == 400, (bad, refused.text)
    assert admin.post("/v1/invoices/inv_nope/payments", json=body).status_code == 404
    listed_payments = admin.get(f"/v1/invoices/{inv['id']}/payments").json()["data"]
    assert [p["reference"] for p in listed_payments] == ["SEPA 2026-12-01 X1"]
    rest = admin.get(f"/v1/invoices/{inv['id']}").json()["amount_due"]
    done = admin.post(
        f"/v1/invoices/{inv['id']}/payments",
        json={"amount": rest, "method": "cheque", "reference": "CHQ 0001"},
    )
    assert done.json()["invoice_status"] == "paid"
    assert admin.get("/v1/reports/receivables").json()["data"] == []
    assert admin.get("/v1/ledger/verify").json()["ok"] is True


def test_the_test_clock_runs_the_arrears_and_the_invoice_mail(
    ctx: Context, server: LiveServer, admin: httpx.Client, billing_setup: dict[str, str]
) -> None:
    ctx.settings.test_clock = True
    user = billing_setup["user"]
    admin.post("/v1/subscriptions", json={"user": user, "plan": "pro"})
    issued = admin.post("/v1/test-clock", json={"now": "2026-12-01T00:00:00Z"}).json()
    assert issued["bill_run"]["invoice_mails_sent"] == 1  # The invoice, with its PDF.
    assert issued["bill_run"]["arrears_steps"] == 0  # Open, not yet due.
    late = admin.post("/v1/test-clock", json={"now": "2026-12-16T00:00:00Z"}).json()
    assert late["bill_run"]["arrears_steps"] >= 1  # Overdue: into the arrears at once.
    seen = admin.get(f"/v1/users/{user}/entitlements", params={"service": "maps"}).json()
    assert (seen["has_access"], seen["reason"]) == (False, "suspended")


def test_a_yes_or_no_is_json_true_or_false(
    admin: httpx.Client, billing_setup: dict[str, str]
) -> None:
    """Found by schemathesis: `"enabled": 0` was taken for false."""
    user = billing_setup["user"]
    for value in (0, 1, "yes", "true", "on"):
        refused = admin.post(f"/v1/users/{user}/billing-profile", json={"autopay_invoices": value})
        assert refused.status_code == 400, (value, refused.text)
    assert admin.get(f"/v1/users/{user}/billing-profile").json()["autopay_invoices"] is False
    taken = admin.post(f"/v1/users/{user}/billing-profile", json={"autopay_invoices": True})
    assert taken.json()["autopay_invoices"] is True
