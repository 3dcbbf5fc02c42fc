"""One unit of work per request: what a request did is all or nothing.

A request that fails after its first write leaves nothing behind, on SQLite and on
PostgreSQL: no transfer, no audit entry, no idempotency record that would replay it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from billfold import parties
from billfold.core.access import SYSTEM
from billfold.core.context import Context, Work
from billfold.invoicing import billing
from billfold.ledger.verify import verify
from billfold.store.ledger_tables import transfers
from billfold.store.tables import audit_log, idempotency_keys, subscriptions


def _counts(ctx: Context) -> dict[str, int]:
    with ctx.work(read_only=True) as work:
        return {
            table.name: work.conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (transfers, audit_log, subscriptions, idempotency_keys)
        }


def _user(ctx: Context) -> str:
    user = ctx.run(parties.create_user, SYSTEM, name="U", email="u@u.io", currency_code="USD")
    return user.id


def test_a_top_up_whose_debt_collection_fails_changes_nothing(
    ctx: Context, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = _user(ctx)
    before = _counts(ctx)

    def broken(work: Work, user_id: str) -> dict[str, int]:
        raise RuntimeError("the collection step failed")

    # The top-up's transfer is written first; the collection that follows it in the same
    # request fails, so the whole request must roll back.
    monkeypatch.setattr(billing, "collect_for_user", broken)
    headers = {"Idempotency-Key": "top-up-1"}
    # The server drops the connection after a 500; the retry must not reuse it.
    closing = {**headers, "Connection": "close"}
    failed = admin.post(f"/v1/users/{user}/top-ups", json={"amount": "10"}, headers=closing)
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "internal"
    assert "nothing was changed" in failed.json()["error"]["message"]
    assert _counts(ctx) == before
    assert ctx.read(parties.get_balance, SYSTEM, user).posted == 0
    assert ctx.read(verify, SYSTEM).ok

    # The key was freed: the retry runs, once, and its answer is then replayed.
    monkeypatch.undo()
    done = admin.post(f"/v1/users/{user}/top-ups", json={"amount": "10"}, headers=headers)
    assert done.status_code == 201, done.text
    again = admin.post(f"/v1/users/{user}/top-ups", json={"amount": "10"}, headers=headers)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == done.json()
    assert str(ctx.read(parties.get_balance, SYSTEM, user).posted) in ("10", "10.00000000")


def test_a_refused_request_after_a_write_leaves_nothing(ctx: Context, admin: httpx.Client) -> None:
    """A subscription is written before its first fee is taken; a fee the wallet cannot
    pay refuses the request, and the subscription must not remain."""
    provider = admin.post(
        "/v1/providers", json={"name": "P", "email": "p@p.io", "commission_rate": "0.2"}
    ).json()["id"]
    plan: dict[str, Any] = {
        "code": "pro",
        "name": "Pro",
        "service": "maps",
        "currency": "USD",
        "interval": "month",
        "fixed_fee": "30",
        "charges": [],
    }
    assert admin.post(
        "/v1/services", json={"provider_id": provider, "code": "maps", "name": "Maps"}
    ).is_success
    assert admin.post("/v1/plans", json=plan).is_success, "plan"
    user = _user(ctx)
    before = _counts(ctx)
    refused = admin.post(
        "/v1/subscriptions",
        json={"user": user, "plan": "pro"},
        headers={"Idempotency-Key": "sub-1"},
    )
    assert refused.status_code == 402, refused.text
    after = _counts(ctx)
    # The refusal itself is kept under its key (a retry gets the same answer); nothing else.
    assert {**after, "idempotency_keys": before["idempotency_keys"]} == before
    assert ctx.read(verify, SYSTEM).ok
