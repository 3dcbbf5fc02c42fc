"""The audit trail: complete, hash-chained, checked by verify, readable by whom it concerns."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import delete, select, update

from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from billfold.invoicing import bill_run
from billfold.ledger.verify import verify
from billfold.store.tables import audit_log
from tests.conftest import START, LiveServer

PLAN = {
    "code": "maps-payg",
    "name": "Maps",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.5"}],
}


def _platform(ctx: Context, admin: httpx.Client) -> tuple[str, str, str]:
    provider = admin.post(
        "/v1/providers", json={"name": "P", "email": "p@p.io", "commission_rate": "0.2"}
    ).json()["id"]
    admin.post("/v1/services", json={"provider_id": provider, "code": "maps", "name": "Maps"})
    admin.post(
        "/v1/services/maps/metrics", json={"code": "calls", "name": "Calls", "aggregation": "count"}
    )
    admin.post("/v1/plans", json=PLAN)
    user = admin.post("/v1/users", json={"name": "U", "email": "u@u.io", "currency": "USD"}).json()[
        "id"
    ]
    admin.post(f"/v1/users/{user}/top-ups", json={"amount": "10"})
    admin.post("/v1/subscriptions", json={"user": user, "service": "maps"}).raise_for_status()
    _, key = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=provider)
    return provider, user, key


def test_mutations_are_audited_and_read_by_whom_they_concern(
    ctx: Context, server: LiveServer, admin: httpx.Client
) -> None:
    provider, user, key = _platform(ctx, admin)
    with server.client(key) as me:
        held = me.post("/v1/authorizations", json={"user": user, "amount": "1"}).json()
        assert me.post(f"/v1/authorizations/{held['id']}/capture", json={}).status_code == 200
        other = me.post("/v1/authorizations", json={"user": user, "amount": "1"}).json()
        assert me.post(f"/v1/authorizations/{other['id']}/void").status_code == 200
        assert me.post("/v1/services/maps/default-plan", json={"plan": "maps-payg"}).is_success
        mine = me.get("/v1/audit-events").json()["data"]
    actions = {e["action"] for e in mine}
    assert {"authorization.approved", "authorization.captured", "authorization.voided"} <= actions
    assert "service.default_plan_set" in actions
    assert "user.created" not in actions  # The operator's, about no provider object.
    assert all(e["role"] == "provider" or e["object_id"] == provider for e in mine)
    admin.post(f"/v1/users/{user}/alert-settings", json={"monthly_budget": "5"})
    admin.post("/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/x"})
    everything = admin.get("/v1/audit-events", params={"limit": 1000}).json()["data"]
    assert {"user.created", "alert_settings.set", "webhook_endpoint.created"} <= {
        e["action"] for e in everything
    }
    on_user = admin.get("/v1/audit-events", params={"object": f"user:{user}"}).json()["data"]
    assert on_user and {e["object_id"] for e in on_user} == {user}
    page = admin.get("/v1/audit-events", params={"limit": 2}).json()
    assert page["has_more"] and len(page["data"]) == 2
    after = page["data"][-1]["id"]
    rest = admin.get("/v1/audit-events", params={"starting_after": after}).json()["data"]
    assert all(e["id"] < after for e in rest)
    _, user_key = ctx.run(create_key, SYSTEM, role=Role.USER, user_id=user)
    with server.client(user_key) as someone:
        assert someone.get("/v1/audit-events").status_code == 403
    assert ctx.read(verify, SYSTEM).ok


def test_verify_finds_an_edited_or_removed_entry(ctx: Context, admin: httpx.Client) -> None:
    _platform(ctx, admin)

    def broken() -> list[str]:
        report = ctx.read(verify, SYSTEM)
        return [p for c in report.checks if c.name == "audit_chain" for p in c.problems]

    assert broken() == []
    with ctx.work() as work:
        ids = list(work.conn.execute(select(audit_log.c.id).order_by(audit_log.c.id)).scalars())
        original = work.conn.execute(
            select(audit_log.c.action).where(audit_log.c.id == ids[1])
        ).scalar_one()
        work.conn.execute(
            update(audit_log).where(audit_log.c.id == ids[1]).values(action="user.innocent")
        )
        work.commit()
    assert broken()  # An edited entry.
    with ctx.work() as work:
        work.conn.execute(update(audit_log).where(audit_log.c.id == ids[1]).values(action=original))
        work.commit()
    assert broken() == []  # Put back as it was.
    with ctx.work() as work:
        work.conn.execute(delete(audit_log).where(audit_log.c.id == ids[2]))
        work.commit()
    assert broken()  # A removed entry.


def test_usage_and_the_bill_run_are_audited(
    ctx: Context, server: LiveServer, admin: httpx.Client, clock: TestClock
) -> None:
    """One entry per request that recorded usage (by its key, whatever the group commit
    did with it), and one per subscription the bill run renewed, expired or suspended
    (by the system)."""
    _, user, key = _platform(ctx, admin)
    monthly = {**PLAN, "code": "maps-pro", "interval": "month", "fixed_fee": "4"}
    assert admin.post("/v1/plans", json=monthly).status_code == 201
    with server.client(key) as me:
        batch = [
            {"id": f"e{n}", "user": user, "service": "maps", "metric": "calls"} for n in range(3)
        ]
        assert me.post("/v1/events", json={"events": batch}).json()["accepted"] == 3
        again = me.post("/v1/events", json={"events": batch}).json()
        assert again["duplicates"] == 3
        mine = me.get("/v1/audit-events", params={"object": "service:maps"}).json()["data"]
    recorded = [e for e in mine if e["action"] == "usage.recorded"]
    # The resend recorded nothing, and is not entered.
    assert len(recorded) == 1
    assert recorded[0]["details"]["accepted"] == 3
    assert recorded[0]["role"] == "provider"
    # A monthly plan that the wallet (10, less 1.50 of usage) pays twice, not thrice.
    sub = admin.post("/v1/subscriptions", json={"user": user, "plan": "maps-pro"}).json()
    clock.set(START + timedelta(days=31))
    bill_run(ctx, clock.now())
    clock.set(START + timedelta(days=61))
    bill_run(ctx, clock.now())
    clock.set(START + timedelta(days=100))
    bill_run(ctx, clock.now())
    entries = admin.get(
        "/v1/audit-events", params={"object": f"subscription:{sub['id']}", "limit": 100}
    ).json()["data"]
    actions = [e["action"] for e in reversed(entries)]
    assert actions[0] == "subscription.created"
    assert "subscription.renewed" in actions
    assert "subscription.past_due" in actions and "subscription.suspended" in actions
    system = [e for e in entries if e["action"] != "subscription.created"]
    assert all(e["actor"] == "system" for e in system)
    assert ctx.read(verify, SYSTEM).ok
