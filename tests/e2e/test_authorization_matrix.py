"""Every operation of the OpenAPI document, asked by every role of its own tenant and of a
foreign one, against what is written down for it here.

Two tenants: provider A with its customer Ursula (own), provider B with its customer
Victor (foreign). The roles are the operator (admin), provider A's key, Ursula's key and
no key. For each operation and role the table gives the outcome on the own tenant's
objects and on the foreign tenant's: `ok` (access granted: any answer but 401, 403, 404
and 5xx) or the exact denial. Besides the status:

- a denied request changes nothing (the rows of every table are counted before and after);
- no answer to a provider or a user holds an identifier of the foreign tenant that the
  request did not itself name, and no answer to a provider holds a user's name or email.

The table is checked against the OpenAPI document: a route added without an entry fails
the test, as does an entry for a route that is gone.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from billfold.store.tables import metadata, payments
from tests.conftest import LiveServer

ROLES = ("admin", "provider", "user", "none")
DENIALS = {"401", "403", "404"}

PAYG: dict[str, Any] = {
    "name": "Pay as you go",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.01"}],
}
MONTHLY: dict[str, Any] = {**PAYG, "interval": "month", "fixed_fee": "2", "charges": []}


# method path -> (body, query, expectations). Expectations name, per role, the outcome on
# the own tenant and on the foreign one ("ok/404"); a single outcome is for operations
# that name no tenant. Placeholders in braces are filled from the tenant's objects.
Entry = tuple[dict[str, Any] | None, str, dict[str, str]]
MATRIX: dict[str, Entry] = {
    # Parties and money.
    "POST /v1/providers": (
        {"name": "N{n}", "email": "n{n}@p.io", "commission_rate": "0.1"},
        "",
        {"admin": "ok", "provider": "403", "user": "403", "none": "401"},
    ),
    "GET /v1/providers": (
        None,
        "",
        {"admin": "ok", "provider": "403", "user": "403", "none": "401"},
    ),
    "GET /v1/providers/{provider_id}": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "404/404", "none": "401/401"},
    ),
    "POST /v1/providers/{provider_id}": (
        {"commission_rate": "0.2"},
        "",
        {"admin": "ok/ok", "provider": "403/403", "user": "403/403", "none": "401/401"},
    ),
    "POST /v1/providers/{provider_id}/approve": (
        None,
        "",
        {"admin": "ok/ok", "provider": "403/403", "user": "403/403", "none": "401/401"},
    ),
    "POST /v1/providers/{provider_id}/reject": (
        # An active provider is no application: the admin gets a 409, and nothing changes.
        None,
        "",
        {"admin": "ok/ok", "provider": "403/403", "user": "403/403", "none": "401/401"},
    ),
    # People: open to anyone, since they come before any key or session.
    "POST /v1/signup": (
        {"kind": "user", "name": "N", "email": "signup{n}@s.io", "password": "long enough pw"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "ok"},
    ),
    "POST /v1/email-verifications": (
        {"token": "not-a-token"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "ok"},
    ),
    "POST /v1/sessions": (
        # Wrong credentials: the same 401 for whoever asks, and nothing written.
        {"email": "nobody@s.io", "password": "not the password"},
        "",
        {"admin": "401", "provider": "401", "user": "401", "none": "401"},
    ),
    "DELETE /v1/sessions/current": (
        None,
        "",
        # With a key there is no session to end: a 400, not a denial.
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "DELETE /v1/sessions/{session_id}": (
        # Only the asker's own sessions can be ended; anyone else's is not found.
        None,
        "",
        {"admin": "404", "provider": "404", "user": "404", "none": "401"},
    ),
    "GET /v1/sessions": (
        None,
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "POST /v1/password-resets": (
        {"email": "nobody{n}@s.io"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "ok"},
    ),
    "POST /v1/password-resets/{token}": (
        {"password": "long enough pw"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "ok"},
    ),
    # A person's own account: with a key there is no person, so a 400, not a denial.
    "POST /v1/me/password": (
        {"current_password": "not the password", "password": "long enough pw"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "POST /v1/me/email": (
        {"password": "not the password", "email": "new{n}@s.io"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "POST /v1/me/preferences": (
        {"locale": "zh-CN"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "POST /v1/me/totp": (
        None,
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "POST /v1/me/totp/confirm": (
        {"code": "123456"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "POST /v1/me/totp/disable": (
        {"password": "not the password"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "GET /v1/providers/{provider_id}/members": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "404/404", "none": "401/401"},
    ),
    "POST /v1/providers/{provider_id}/members": (
        {"email": "member{n}@s.io"},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "404/404", "none": "401/401"},
    ),
    "DELETE /v1/providers/{provider_id}/members/{member_id}": (
        # No such member in either team: the provider's own is a 404 like the foreign one.
        None,
        "",
        {"admin": "404/404", "provider": "404/404", "user": "404/404", "none": "401/401"},
    ),
    "POST /v1/invitations/{token}": (
        {"password": "long enough pw"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "ok"},
    ),
    "POST /v1/users": (
        {"name": "N{n}", "email": "n{n}@u.io", "currency": "USD"},
        "",
        {"admin": "ok", "provider": "403", "user": "403", "none": "401"},
    ),
    "GET /v1/users": (
        None,
        "",
        {"admin": "ok", "provider": "403", "user": "403", "none": "401"},
    ),
    "GET /v1/users/{user_id}": (
        None,
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/users/{user_id}/credit-limit": (
        {"credit_limit": "5"},
        "",
        {"admin": "ok/ok", "provider": "403/403", "user": "403/403", "none": "401/401"},
    ),
    "GET /v1/providers/{provider_id}/seller-details": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "404/404", "none": "401/401"},
    ),
    "POST /v1/providers/{provider_id}/seller-details": (
        {"legal_name": "Legal {n} Ltd", "tax_number": "T{n}"},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "404/404", "none": "401/401"},
    ),
    "GET /v1/users/{user_id}/billing-profile": (
        None,
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/users/{user_id}/billing-profile": (
        {"company": "C{n}", "tax_number": "T{n}"},
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "GET /v1/users/{user_id}/balance": (
        None,
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/users/{user_id}/top-ups": (
        {"amount": "1"},
        "",
        {"admin": "ok/ok", "provider": "403/403", "user": "403/403", "none": "401/401"},
    ),
    "GET /v1/users/{user_id}/transactions": (
        None,
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/charges": (
        {"user": "{user_id}", "amount": "0.01", "description": "m"},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "POST /v1/charges/{charge_id}/refunds": (
        {"amount": "0.01"},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    # Catalog.
    "POST /v1/services": (
        {"code": "s{n}", "name": "S"},
        "",
        {"admin": "ok", "provider": "ok", "user": "403", "none": "401"},
    ),
    "GET /v1/services": (
        None,
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "GET /v1/services/{code}": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/ok", "none": "401/401"},
    ),
    "POST /v1/services/{code}/metrics": (
        {"code": "m{n}", "name": "M", "aggregation": "count"},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "GET /v1/services/{code}/metrics": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/ok", "none": "401/401"},
    ),
    "POST /v1/plans": (
        {"code": "p{n}", "service": "{code}", "currency": "USD", "interval": "none"},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "GET /v1/plans": (
        None,
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "GET /v1/plans/{code}": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/ok", "none": "401/401"},
    ),
    "GET /v1/plans/{code}/versions": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/ok", "none": "401/401"},
    ),
    "POST /v1/plans/{code}/versions": (
        {"plan": {"code": "{code}", "service": "{spare_service}", **PAYG, "charges": []}},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "POST /v1/plans/{code}/retire": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "POST /v1/quotes": (
        {"plan": "{payg_plan}", "usage": {"quantities": {"calls": "3"}}},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/ok", "none": "401/401"},
    ),
    "POST /v1/services/{code}/default-plan": (
        {"plan": "{payg_plan}"},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    # Usage and real-time charging.
    "POST /v1/events": (
        {"id": "x{n}", "user": "{user_id}", "service": "{service}", "metric": "calls"},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "POST /v1/authorizations": (
        {"user": "{user_id}", "amount": "0.01"},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "GET /v1/authorizations/{auth_id}": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "POST /v1/authorizations/{auth_id}/capture": (
        {},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "POST /v1/authorizations/{auth_id}/void": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "GET /v1/users/{user_id}/entitlements": (
        None,
        "service={service}",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/404", "none": "401/401"},
    ),
    # Subscriptions and invoices.
    "POST /v1/subscriptions": (
        {"user": "{user_id}", "plan": "{extra_plan}"},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/404", "none": "401/401"},
    ),
    "GET /v1/subscriptions": (
        None,
        "user={user_id}",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/ok", "none": "401/401"},
    ),
    "GET /v1/subscriptions/{sub_id}": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/subscriptions/{sub_id}/change-plan": (
        {"plan": "{other_plan}", "timing": "period_end"},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/subscriptions/{sub_id}/cancel": (
        {"timing": "period_end"},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/404", "none": "401/401"},
    ),
    "GET /v1/invoices": (
        None,
        "user={user_id}",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/ok", "none": "401/401"},
    ),
    "GET /v1/invoices/{invoice_id}.html": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/404", "none": "401/401"},
    ),
    "GET /v1/invoices/{invoice_id}.pdf": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/404", "none": "401/401"},
    ),
    "GET /v1/invoices/{invoice_id}": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/invoices/{invoice_id}/pay": (
        None,
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/invoices/{invoice_id}/payments": (
        {"amount": "0.01", "method": "bank_transfer", "reference": "REF-{n}"},
        "",
        {"admin": "ok/ok", "provider": "403/403", "user": "403/403", "none": "401/401"},
    ),
    "GET /v1/invoices/{invoice_id}/payments": (
        None,
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/invoices/{invoice_id}/void": (
        None,
        "",
        {"admin": "ok/ok", "provider": "403/403", "user": "403/403", "none": "401/401"},
    ),
    "POST /v1/credit-notes": (
        {"invoice": "{invoice_id}", "amount": "0.01", "reason": "goodwill"},
        "",
        {"admin": "ok/ok", "provider": "403/403", "user": "403/403", "none": "401/401"},
    ),
    "POST /v1/test-clock": (
        {"now": "2026-11-01T13:00:00Z"},
        "",
        {"admin": "404", "provider": "403", "user": "403", "none": "401"},
    ),
    # Analytics and settlement.
    "GET /v1/analytics/usage": (
        None,
        "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&window=day&group_by=user",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "GET /v1/analytics/revenue": (
        None,
        "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&window=day&group_by=provider",
        {"admin": "ok", "provider": "ok", "user": "403", "none": "401"},
    ),
    "GET /v1/analytics/subscriptions": (
        None,
        "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z",
        {"admin": "ok", "provider": "ok", "user": "403", "none": "401"},
    ),
    "GET /v1/analytics/top": (
        None,
        "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&by=user",
        {"admin": "ok", "provider": "ok", "user": "403", "none": "401"},
    ),
    "POST /v1/plans/{code}/simulate": (
        {
            "plan": {"code": "{code}", "service": "{spare_service}", **PAYG, "charges": []},
            "period": "2026-11",
        },
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "GET /v1/providers/{provider_id}/statements": (
        None,
        "period=2026-11",
        {"admin": "ok/ok", "provider": "ok/404", "user": "404/404", "none": "401/401"},
    ),
    "POST /v1/payouts": (
        {"provider": "{provider_id}", "amount": "0.01"},
        "",
        {"admin": "ok/ok", "provider": "403/403", "user": "403/403", "none": "401/401"},
    ),
    "GET /v1/reports/commission": (
        None,
        "period=2026-11",
        {"admin": "ok", "provider": "403", "user": "403", "none": "401"},
    ),
    "GET /v1/reports/receivables": (
        None,
        "by=user",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "GET /v1/exports/{kind}.csv": (
        None,
        "period=2026-11",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "GET /v1/users/{user_id}/forecast": (
        None,
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/packages": (
        {
            "code": "pk{n}",
            "name": "P",
            "service": "{service}",
            "currency": "USD",
            "price": "1",
            "quantities": {"calls": "10"},
            "validity_days": 30,
        },
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "GET /v1/packages": (
        None,
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "GET /v1/packages/{package_id}": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/ok", "user": "ok/ok", "none": "401/401"},
    ),
    "POST /v1/users/{user_id}/packages": (
        {"package": "{package_id}"},
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "GET /v1/users/{user_id}/packages": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/coupons": (
        {
            "code": "CPN{n}",
            "kind": "amount",
            "currency": "USD",
            "amount": "1",
            "services": ["{service}"],
        },
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "403/403", "none": "401/401"},
    ),
    "GET /v1/coupons": (
        None,
        "",
        {"admin": "ok", "provider": "ok", "user": "403", "none": "401"},
    ),
    "POST /v1/users/{user_id}/coupons": (
        {"code": "{coupon_code}"},
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/users/{user_id}/credits": (
        {"amount": "1", "reason": "welcome"},
        "",
        {"admin": "ok/ok", "provider": "403/403", "user": "403/403", "none": "401/401"},
    ),
    "GET /v1/users/{user_id}/grants": (
        None,
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/users/{user_id}/checkouts": (
        {"gateway": "stripe", "amount": "5"},
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/gateways/{gateway}/webhook": (
        {"id": "evt_1", "type": "payment_intent.succeeded"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "ok"},
    ),
    "GET /v1/users/{user_id}/payments": (
        None,
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "GET /v1/payments/{payment_id}": (
        None,
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/payments/{payment_id}/sync": (
        {},
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/payments/{payment_id}/refunds": (
        {"amount": "1"},
        "",
        {"admin": "ok/ok", "provider": "403/403", "user": "403/403", "none": "401/401"},
    ),
    "POST /v1/users/{user_id}/payment-methods": (
        {"payment_method": "pm_card_visa"},
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "GET /v1/users/{user_id}/auto-recharge": (
        None,
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/users/{user_id}/auto-recharge": (
        {"threshold": "1", "amount": "5"},
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "GET /v1/users/{user_id}/alert-settings": (
        None,
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/users/{user_id}/alert-settings": (
        {"monthly_budget": "50"},
        "",
        {"admin": "ok/ok", "provider": "404/404", "user": "ok/404", "none": "401/401"},
    ),
    "GET /v1/alerts": (
        None,
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "GET /v1/webhook-endpoints": (
        None,
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "POST /v1/webhook-endpoints": (
        {"url": "http://127.0.0.1:9/hook"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "GET /v1/webhook-endpoints/{endpoint_id}/messages": (
        None,
        "",
        # Endpoints are their owner's alone, the operator's included.
        {"admin": "404/404", "provider": "ok/404", "user": "ok/404", "none": "401/401"},
    ),
    "GET /v1/ledger/verify": (
        None,
        "",
        {"admin": "ok", "provider": "403", "user": "403", "none": "401"},
    ),
    # Keys and the audit trail.
    "POST /v1/api-keys": (
        {"name": "spare"},
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "GET /v1/api-keys": (
        None,
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "POST /v1/api-keys/{key_id}/rotate": (
        {"grace_s": 0},
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/404", "none": "401/401"},
    ),
    "POST /v1/api-keys/{key_id}/revoke": (
        None,
        "",
        {"admin": "ok/ok", "provider": "ok/404", "user": "ok/404", "none": "401/401"},
    ),
    "GET /v1/audit-events": (
        None,
        "",
        {"admin": "ok", "provider": "ok", "user": "403", "none": "401"},
    ),
    "GET /v1/me": (
        None,
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "401"},
    ),
    "GET /healthz": (
        None,
        "",
        {"admin": "ok", "provider": "ok", "user": "ok", "none": "ok"},
    ),
    "GET /v1/admin/stream": (
        None,
        "",
        # The world runs without a stream: the operator is told it is not configured.
        {"admin": "404", "provider": "403", "user": "403", "none": "401"},
    ),
    "GET /metrics": (
        None,
        "",
        {"admin": "ok", "provider": "403", "user": "403", "none": "401"},
    ),
}


@dataclass
class Side:
    """One tenant's objects, by the names the table's placeholders use."""

    values: dict[str, str] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    """What of this tenant must never reach the other tenant's roles."""


def _side(
    admin: httpx.Client, ctx: Context, tag: str, name: str
) -> tuple[Side, Side, Side, str, str]:
    """A provider with its services and plans and a customer with usage, a charge, holds,
    subscriptions, an invoice, webhook endpoints and spare keys: (the provider's side,
    the customer's side, the provider's key, the customer's key)."""

    def made(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = admin.post(path, json=body)
        assert response.status_code in (200, 201), (path, response.text)
        return dict(response.json())

    provider = made(
        "/v1/providers",
        {"name": f"Provider {tag}", "email": f"{tag}@p.io", "commission_rate": "0.2"},
    )["id"]
    service, spare_service = f"svc-{tag}", f"svc2-{tag}"
    for code in (service, spare_service):
        made("/v1/services", {"provider_id": provider, "code": code, "name": code})
        made(
            f"/v1/services/{code}/metrics",
            {"code": "calls", "name": "Calls", "aggregation": "count"},
        )
    made("/v1/plans", {**PAYG, "code": f"{tag}-payg", "service": service})
    made("/v1/plans", {**MONTHLY, "code": f"{tag}-pro", "service": service})
    made("/v1/plans", {**MONTHLY, "code": f"{tag}-max", "service": service, "fixed_fee": "1"})
    made("/v1/plans", {**PAYG, "code": f"{tag}-old", "service": spare_service})
    made("/v1/plans", {**MONTHLY, "code": f"{tag}-extra", "service": spare_service})
    user = made(
        "/v1/users",
        {"name": f"{name} Secretname", "email": f"{name.lower()}@private.io", "currency": "USD"},
    )["id"]
    made(f"/v1/users/{user}/top-ups", {"amount": "100"})
    sub = made("/v1/subscriptions", {"user": user, "plan": f"{tag}-pro"})["id"]
    spare_sub = made("/v1/subscriptions", {"user": user, "plan": f"{tag}-old"})["id"]
    _, provider_key = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=provider)
    _, user_key = ctx.run(create_key, SYSTEM, role=Role.USER, user_id=user)
    with httpx.Client(
        base_url=str(admin.base_url), headers={"Authorization": f"Bearer {provider_key}"}
    ) as p:
        event = {"id": f"seed-{tag}", "user": user, "service": service, "metric": "calls"}
        assert p.post("/v1/events", json=event).status_code == 200
        charge = p.post("/v1/charges", json={"user": user, "amount": "1", "description": "c"})
        assert charge.status_code == 201, charge.text
        auths = [
            p.post("/v1/authorizations", json={"user": user, "amount": "1"}).json()
            for _ in range(2)
        ]
        provider_endpoint = p.post(
            "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/p"}
        ).json()
    spare_provider_key, _ = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=provider)
    admins_key, _ = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=provider)
    spare_user_key, _ = ctx.run(create_key, SYSTEM, role=Role.USER, user_id=user)
    with httpx.Client(
        base_url=str(admin.base_url), headers={"Authorization": f"Bearer {user_key}"}
    ) as u:
        user_endpoint = u.post("/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/u"}).json()
    invoice = admin.get("/v1/invoices", params={"user": user}).json()["data"][0]["id"]
    package = made(
        "/v1/packages",
        {"provider_id": provider, "code": f"pk-{tag}", "name": "Pack", "service": service,
         "currency": "USD", "price": "1", "quantities": {"calls": "10"}, "validity_days": 30},
    )["id"]  # fmt: skip
    made("/v1/coupons", {"code": f"GIFT-{tag}", "kind": "amount", "currency": "USD", "amount": "1"})
    payment = f"pay_{tag}_seeded"
    ctx.run(lambda work: work.conn.execute(payments.insert().values(
        id=payment, user_id=user, gateway="stripe", purpose="top_up", currency="USD",
        amount=10**9, status="succeeded", gateway_ref=f"pi_{tag}", refunded=0,
        created_at=ctx.clock.now(), updated_at=ctx.clock.now(),
    )))  # fmt: skip
    shared = {
        "user_id": user,
        "service": service,
        "sub_id": spare_sub,
        "main_sub": sub,
        "other_plan": f"{tag}-max",
        "payg_plan": f"{tag}-payg",
        "spare_service": spare_service,
        "extra_plan": f"{tag}-extra",
        "charge_id": charge.json()["id"],
        "invoice_id": invoice,
        "kind": "usage",
        "token": "not-a-token",
        "session_id": "ses_not_one_of_theirs",
        "member_id": "lgn_not_a_member",
        "provider_id": provider,
        "package_id": package,
        "coupon_code": f"GIFT-{tag}",
        "payment_id": payment,
        "gateway": "stripe",
    }
    provider_side = Side(
        {
            **shared,
            "code": f"{tag}-old",
            "auth_id": auths[0]["id"],
            "endpoint_id": provider_endpoint["id"],
            "key_id": spare_provider_key.id,
        },
        # The provider's id is public (the catalog names it); everything else is not.
        {
            user,
            sub,
            spare_sub,
            invoice,
            charge.json()["id"],
            auths[0]["id"],
            auths[1]["id"],
            provider_endpoint["id"],
            user_endpoint["id"],
            spare_provider_key.id,
            spare_user_key.id,
            f"{name.lower()}@private.io",
            f"{name} Secretname",
            payment,
        },
    )
    user_side = Side(
        {
            **shared,
            "code": f"{tag}-old",
            "auth_id": auths[1]["id"],
            "endpoint_id": user_endpoint["id"],
            "key_id": spare_user_key.id,
        },
        provider_side.secrets,
    )
    # The operator tries every key route on a key of its own choosing: what the provider
    # did to its spare key (rotated, revoked) is not the operator's business here.
    admin_side = Side({**provider_side.values, "key_id": admins_key.id}, provider_side.secrets)
    return admin_side, provider_side, user_side, provider_key, user_key


@dataclass
class World:
    server: LiveServer
    ctx: Context
    keys: dict[str, str | None]
    own: dict[str, Side]
    foreign: dict[str, Side]
    counter: Iterator[int] = field(default_factory=itertools.count)


@pytest.fixture
def world(sqlite_ctx: Context) -> Iterator[World]:
    ctx = sqlite_ctx
    admin_key = ctx.run(create_key, SYSTEM, role=Role.ADMIN)[1]
    with LiveServer(ctx) as server, server.client(admin_key) as admin:
        admin_a, a, ua, a_key, ua_key = _side(admin, ctx, "a", "Ursula")
        admin_b, b, ub, _, _ = _side(admin, ctx, "b", "Victor")
        yield World(
            server,
            ctx,
            {"admin": admin_key, "provider": a_key, "user": ua_key, "none": None},
            {"admin": admin_a, "provider": a, "user": ua, "none": a},
            {"admin": admin_b, "provider": b, "user": ub, "none": b},
        )


def _operations(world: World) -> set[str]:
    with world.server.client() as anyone:
        doc = anyone.get("/openapi.json").json()
    return {f"{method.upper()} {path}" for path, item in doc["paths"].items() for method in item}


def _fill(template: Any, values: dict[str, str], n: int) -> Any:
    if isinstance(template, str):
        return template.replace("{n}", str(n)).format(**values) if "{" in template else template
    if isinstance(template, dict):
        return {k: _fill(v, values, n) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values, n) for v in template]
    return template


def _route_values(op: str, side: Side) -> dict[str, str]:
    """The side's values, with `code` meaning a service on service routes."""
    values = dict(side.values)
    if "/v1/services/{code}" in op or op == "POST /v1/plans":
        values["code"] = values["service"]
    return values


# Logs of requests rather than state: the audit trail, stored answers, and the sender's
# own note of the events it sent that were refused (what its event debugger shows).
LOGS = ("audit_log", "audit_head", "idempotency_keys", "event_rejections")


def _fingerprint(ctx: Context) -> tuple[int, ...]:
    with ctx.db.engine.connect() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in metadata.sorted_tables
            if table.name not in LOGS
        )


def _outcome(status: int) -> str:
    if status >= 500:
        return f"server error {status}"
    return str(status) if str(status) in DENIALS else "ok"


def test_every_operation_has_an_entry(world: World) -> None:
    assert set(MATRIX) == _operations(world)


def test_every_operation_role_and_tenant_answers_as_written(world: World) -> None:
    assert set(MATRIX) == _operations(world), "every operation needs an entry in MATRIX"
    found: list[str] = []
    # Admins last: what they change (a voided invoice, a revoked key) must not change
    # what the others were tried on.
    for role in ("none", "user", "provider", "admin"):
        key = world.keys[role]
        with world.server.client(key) as client:
            for op, (body, query, expected) in MATRIX.items():
                wanted = expected[role].split("/")
                tenants = ["own", "foreign"] if len(wanted) == 2 else ["own"]
                for tenant, want in zip(tenants, wanted, strict=True):
                    side = (world.own if tenant == "own" else world.foreign)[role]
                    other = (world.foreign if tenant == "own" else world.own)[role]
                    found += _try(world, client, role, tenant, op, body, query, side, other, want)
    assert found == [], "\n".join(found)


def _try(
    world: World,
    client: httpx.Client,
    role: str,
    tenant: str,
    op: str,
    body: dict[str, Any] | None,
    query: str,
    side: Side,
    other: Side,
    want: str,
) -> list[str]:
    method, path = op.split(" ", 1)
    values = _route_values(op, side)
    n = next(world.counter)
    url = _fill(path, values, n)
    params = _fill(query, values, n)
    payload = _fill(body, values, n) if body is not None else None
    before = _fingerprint(world.ctx) if want != "ok" else None
    response = client.request(
        method,
        url + (f"?{params}" if params else ""),
        json=payload if payload is not None else None,
    )
    got = _outcome(response.status_code)
    problems = []
    where = f"{op} as {role} on the {tenant} tenant"
    if got != want:
        problems.append(f"{where}: {response.status_code} (want {want}) {response.text[:200]}")
    if before is not None and _fingerprint(world.ctx) != before:
        problems.append(f"{where}: a denied request changed the database")
    if role in ("provider", "user"):
        asked = json.dumps(payload) + url + params
        # The foreign tenant's identifiers, unless the request named them itself.
        text = response.text
        leaked = [s for s in other.secrets if s in text and s not in asked]
        if role == "provider":
            # A provider sees no names or emails, not even its own customers'.
            leaked += [
                s
                for s in side.secrets | other.secrets
                if ("@private.io" in s or "Secretname" in s) and s in text
            ]
        if leaked:
            problems.append(f"{where}: the answer holds {sorted(set(leaked))}")
    return problems
