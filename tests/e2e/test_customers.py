"""Customers by consent, over HTTP on SQLite and PostgreSQL.

A provider acts only on users who subscribed to one of its plans. Tried as a hostile
provider would: every way a provider key can touch a user (events, charges, holds,
captures, entitlements, subscriptions, invoices, refunds) is tried on a stranger, on
another provider's customer, and on a former customer, and must leave them untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from alembic import command

from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from billfold.invoicing import bill_run
from billfold.store.migrate import alembic_config, upgrade
from tests.conftest import START, LiveServer

PAYG: dict[str, Any] = {
    "code": "maps-payg",
    "name": "Maps pay-as-you-go",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.5"}],
}
MONTHLY: dict[str, Any] = {
    **PAYG,
    "code": "maps-pro",
    "name": "Maps Pro",
    "interval": "month",
    "fixed_fee": "3",
}


@dataclass
class World:
    server: LiveServer
    ctx: Context
    keys: dict[str, str]
    users: dict[str, str]

    def client(self, who: str) -> httpx.Client:
        return self.server.client(self.keys[who])

    def balance(self, user: str) -> dict[str, Any]:
        with self.client("admin") as admin:
            return dict(admin.get(f"/v1/users/{self.users[user]}/balance").json())

    def event(self, n: str, user: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": f"e-{n}",
            "user": self.users.get(user, user),
            "service": "maps",
            "metric": "calls",
            **extra,
        }


@pytest.fixture
def world(ctx: Context, server: LiveServer, admin_key: str) -> Iterator[World]:
    with server.client(admin_key) as admin:

        def make(path: str, body: dict[str, Any]) -> str:
            response = admin.post(path, json=body)
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        pa = make("/v1/providers", {"name": "A", "email": "a@p.io", "commission_rate": "0.2"})
        pb = make("/v1/providers", {"name": "B", "email": "b@p.io", "commission_rate": "0.2"})
        users = {
            name: make(
                "/v1/users",
                {"name": name.title(), "email": f"{name}@u.io", "currency": "USD"},
            )
            for name in ("alice", "bob", "carol")
        }
        for user in users.values():
            admin.post(f"/v1/users/{user}/top-ups", json={"amount": "20"}).raise_for_status()
    keys = {
        "admin": admin_key,
        "a": ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=pa)[1],
        "b": ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=pb)[1],
        **{
            name: ctx.run(create_key, SYSTEM, role=Role.USER, user_id=user)[1]
            for name, user in users.items()
        },
    }
    with server.client(keys["a"]) as a:
        assert a.post("/v1/services", json={"code": "maps", "name": "Maps"}).status_code == 201
        a.post(
            "/v1/services/maps/metrics",
            json={"code": "calls", "name": "Calls", "aggregation": "count"},
        ).raise_for_status()
        assert a.post("/v1/plans", json=PAYG).status_code == 201
        assert a.post("/v1/plans", json=MONTHLY).status_code == 201
    with server.client(keys["b"]) as b:
        assert b.post("/v1/services", json={"code": "geo", "name": "Geo"}).status_code == 201
        b.post(
            "/v1/services/geo/metrics",
            json={"code": "calls", "name": "Calls", "aggregation": "count"},
        ).raise_for_status()
        geo = {**PAYG, "code": "geo-payg", "service": "geo"}
        assert b.post("/v1/plans", json=geo).status_code == 201
    # Alice chooses provider A (the service's default plan); carol chooses B; bob no one.
    with server.client(keys["alice"]) as alice:
        response = alice.post("/v1/subscriptions", json={"user": users["alice"], "service": "maps"})
        assert response.status_code == 201, response.text
        assert (response.json()["plan"], response.json()["interval"]) == ("maps-payg", "none")
    with server.client(keys["carol"]) as carol:
        response = carol.post(
            "/v1/subscriptions", json={"user": users["carol"], "plan": "geo-payg"}
        )
        assert response.status_code == 201, response.text
    yield World(server, ctx, keys, users)


def test_a_provider_meters_only_its_customers_and_keeps_the_rest_of_the_batch(
    world: World,
) -> None:
    before = world.balance("bob")
    with world.client("a") as a:
        response = a.post(
            "/v1/events",
            json={
                "events": [
                    world.event("1", "alice"),
                    world.event("2", "bob"),
                    world.event("3", "carol"),  # B's customer, not A's.
                    world.event("4", "alice"),
                ]
            },
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["accepted"] == 2
        assert {r["index"]: r["error"]["code"] for r in result["rejected"]} == {
            1: "not_subscribed",
            2: "not_subscribed",
        }
        single = a.post("/v1/events", json=world.event("5", "bob"))
        assert single.status_code == 404
        assert single.json()["error"]["code"] == "not_subscribed"
    assert world.balance("alice")["posted"] == "19.00"
    assert world.balance("bob") == before
    assert world.balance("carol")["posted"] == "20.00"


@pytest.mark.parametrize("target", ["bob", "carol"])
def test_a_provider_cannot_touch_a_non_customer(world: World, target: str) -> None:
    """Every action of provider A on a stranger (bob) or on B's customer (carol) is a 404
    that names no internal id, and changes nothing."""
    user = world.users[target]
    before = world.balance(target)
    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/v1/charges", {"user": user, "amount": "5", "description": "x"}),
        (
            "POST",
            "/v1/charges",
            {"user": user, "amount": "5", "description": "x", "service": "maps"},
        ),
        ("POST", "/v1/authorizations", {"user": user, "amount": "5"}),
        (
            "POST",
            "/v1/authorizations",
            {"user": user, "service": "maps", "metric": "calls", "quantity": "2"},
        ),
        ("GET", f"/v1/users/{user}/entitlements?service=maps", None),
        ("POST", "/v1/subscriptions", {"user": user, "plan": "maps-pro"}),
        ("POST", "/v1/subscriptions", {"user": user, "service": "maps"}),
        ("GET", f"/v1/invoices?user={user}", None),
        ("GET", f"/v1/subscriptions?user={user}", None),
        ("GET", f"/v1/users/{user}", None),
        ("GET", f"/v1/users/{user}/balance", None),
        ("GET", f"/v1/users/{user}/transactions", None),
    ]
    with world.client("a") as a:
        for method, path, body in attempts:
            response = a.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["type"] == "not_found"
    assert world.balance(target) == before
    with world.client("admin") as admin:
        subs = admin.get(f"/v1/subscriptions?user={user}").json()["data"]
        assert all(s["plan"] != "maps-pro" for s in subs)
        holds = world.balance(target)["held"]
        assert holds == "0.00"


def test_a_charge_finds_its_user_service_and_commission_as_asked(world: World) -> None:
    """A one-off charge reads its user, service, commission and the customer check in one
    statement (DECISIONS 121): the same answers, refusals and order of refusals as four."""
    alice = world.users["alice"]
    with world.client("admin") as admin:
        # Another user whose external id spells alice's id: alice's own id wins.
        spelled = {"name": "Dave", "email": "dave@u.io", "currency": "USD", "external_id": alice}
        assert admin.post("/v1/users", json=spelled).status_code == 201
        erin = admin.post(
            "/v1/users",
            json={"name": "Erin", "email": "erin@u.io", "currency": "USD", "external_id": "e-1"},
        ).json()["id"]
        admin.post(f"/v1/users/{erin}/top-ups", json={"amount": "20"}).raise_for_status()
        admin.post("/v1/subscriptions", json={"user": erin, "service": "maps"}).raise_for_status()
    body = {"amount": "5", "description": "x", "service": "maps"}
    with world.client("a") as a:
        charged = a.post("/v1/charges", json={**body, "user": alice})
        assert charged.status_code == 201, charged.text
        assert (charged.json()["user"], charged.json()["provider_amount"]) == (alice, "4.00")
        assert charged.json()["commission"] == "1.00"
        by_external_id = a.post("/v1/charges", json={**body, "user": "e-1"})
        assert by_external_id.status_code == 201 and by_external_id.json()["user"] == erin
        refusals = {
            "user_not_found": {**body, "user": "usr_nobody", "amount": "not money"},
            "service_not_found": {**body, "user": alice, "service": "nope"},
        }
        for code, sent in refusals.items():
            refused = a.post("/v1/charges", json=sent)
            assert refused.status_code == 404 and refused.json()["error"]["code"] == code
        assert a.post("/v1/charges", json={**body, "user": alice, "amount": "0"}).status_code == 400
    with world.client("b") as b:
        # Provider B may not bill in the name of A's service, even for A's customer.
        stranger = b.post("/v1/charges", json={**body, "user": alice})
        assert stranger.status_code == 404
        assert stranger.json()["error"]["code"] == "service_not_found"
    assert world.balance("alice")["posted"] == "15.00"


def test_only_the_user_or_an_admin_makes_the_first_subscription(world: World) -> None:
    bob = world.users["bob"]
    with world.client("a") as a:
        assert a.post("/v1/subscriptions", json={"user": bob, "service": "maps"}).status_code == 404
    with world.client("alice") as alice:
        # A user subscribes only itself.
        response = alice.post("/v1/subscriptions", json={"user": bob, "service": "maps"})
        assert response.status_code == 404
    with world.client("bob") as me:
        response = me.post("/v1/subscriptions", json={"user": bob, "service": "maps"})
        assert response.status_code == 201, response.text
    with world.client("a") as a:
        assert a.post("/v1/events", json=world.event("1", "bob")).status_code == 200
        # Now a customer, bob may be put on a further plan by the provider: the monthly
        # plan replaces pay-as-you-go for the service.
        response = a.post("/v1/subscriptions", json={"user": bob, "plan": "maps-pro"})
        assert response.status_code == 201, response.text
        subs = a.get(f"/v1/subscriptions?user={bob}").json()["data"]
    assert sorted((s["plan"], s["status"]) for s in subs) == [
        ("maps-payg", "canceled"),
        ("maps-pro", "active"),
    ]


def test_a_provider_sees_no_name_email_or_balance(world: World) -> None:
    alice = world.users["alice"]
    with world.client("a") as a:
        charge = a.post(
            "/v1/charges",
            json={"user": alice, "amount": "2", "description": "Setup", "service": "maps"},
        )
        assert charge.status_code == 201, charge.text
        assert charge.json()["balance_after"] is None
        entitled = a.get(f"/v1/users/{alice}/entitlements?service=maps").json()
        assert entitled["has_access"] is True
        assert entitled["available"] is None and entitled["debt"] is None
        refund = a.post(f"/v1/charges/{charge.json()['id']}/refunds", json={"amount": "1"})
        assert refund.status_code == 201 and refund.json()["balance_after"] is None
        # One-off charges name only the provider's own services.
        foreign = a.post(
            "/v1/charges",
            json={"user": alice, "amount": "2", "description": "x", "service": "geo"},
        )
        assert foreign.status_code == 404
        assert foreign.json()["error"]["code"] == "service_not_found"
        subscribed = a.post("/v1/subscriptions", json={"user": alice, "plan": "maps-pro"})
        assert subscribed.status_code == 201, subscribed.text
        invoices = a.get(f"/v1/invoices?user={alice}").json()["data"]
        assert invoices
        html = a.get(f"/v1/invoices/{invoices[0]['id']}.html")
        assert html.status_code == 200
        assert "alice@u.io" not in html.text and "Alice" not in html.text
    with world.client("alice") as me:
        own = me.get(f"/v1/invoices/{invoices[0]['id']}.html")
        assert "alice@u.io" in own.text and "Alice" in own.text
        assert me.get(f"/v1/users/{alice}/entitlements?service=maps").json()["available"]
    with world.client("b") as b:
        assert b.get(f"/v1/invoices/{invoices[0]['id']}").status_code == 404
        assert b.get(f"/v1/invoices?user={alice}").status_code == 404


def test_cancelling_ends_the_relationship_for_new_usage(world: World, clock: TestClock) -> None:
    alice = world.users["alice"]
    with world.client("a") as a:
        hold = a.post("/v1/authorizations", json={"user": alice, "amount": "3"}).json()
        assert hold["status"] == "approved"
        kept = a.post("/v1/authorizations", json={"user": alice, "amount": "1"}).json()
        assert a.post("/v1/events", json=world.event("1", "alice")).status_code == 200
    with world.client("alice") as me:
        sub = me.get("/v1/subscriptions").json()["data"][0]
        clock.set(START + timedelta(minutes=5))
        response = me.post(f"/v1/subscriptions/{sub['id']}/cancel", json={})
        assert response.status_code == 200 and response.json()["status"] == "canceled"
    with world.client("a") as a:
        late = world.event("2", "alice", timestamp=(START + timedelta(minutes=1)).isoformat())
        after = world.event("3", "alice", timestamp=(START + timedelta(minutes=6)).isoformat())
        result = a.post("/v1/events", json={"events": [late, after]}).json()
        # Usage from while she was a customer still counts; usage after does not.
        assert result["accepted"] == 1
        assert result["rejected"][0]["error"]["code"] == "not_subscribed"
        capture = a.post(f"/v1/authorizations/{hold['id']}/capture", json={})
        assert capture.status_code == 404
        # Releasing a hold gives the user's money back: still allowed.
        assert a.post(f"/v1/authorizations/{kept['id']}/void").status_code == 200
        assert (
            a.post(
                "/v1/charges", json={"user": alice, "amount": "1", "description": "x"}
            ).status_code
            == 404
        )
        # Its own records of a former customer stay readable.
        assert a.get(f"/v1/subscriptions?user={alice}").status_code == 200
    assert world.balance("alice")["posted"] == "19.00"


def test_usage_before_the_subscription_is_not_the_providers(world: World, clock: TestClock) -> None:
    with world.client("a") as a:
        before = world.event("1", "alice", timestamp=(START - timedelta(hours=1)).isoformat())
        result = a.post("/v1/events", json={"events": [before]}).json()
    assert result["rejected"][0]["error"]["code"] == "not_subscribed"


def test_pay_as_you_go_has_no_fees_renewals_or_invoices(world: World, clock: TestClock) -> None:
    alice = world.users["alice"]
    with world.client("a") as a:
        assert a.post("/v1/events", json=world.event("1", "alice")).status_code == 200
    clock.set(START + timedelta(days=70))
    totals = bill_run(world.ctx, clock.now())
    assert totals.get("subscriptions_processed", 0) == 0
    with world.client("admin") as admin:
        sub = admin.get(f"/v1/subscriptions?user={alice}").json()["data"][0]
        assert (sub["status"], sub["interval"]) == ("active", "none")
        # Its current period is the calendar month of now.
        assert sub["current_period_start"].startswith("2027-01-01")
        assert admin.get(f"/v1/invoices?user={alice}").json()["data"] == []
        with world.client("a") as a:
            # Usage is rated in calendar months: January's call is charged at once.
            assert a.post("/v1/events", json=world.event("2", "alice")).status_code == 200
    assert world.balance("alice")["posted"] == "19.00"


def test_subscribing_without_a_plan_needs_a_default_plan(world: World) -> None:
    with world.client("b") as b:
        assert b.post("/v1/services/geo/default-plan", json={"plan": None}).status_code == 204
    with world.client("bob") as me:
        bob = world.users["bob"]
        response = me.post("/v1/subscriptions", json={"user": bob, "service": "geo"})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "no_default_plan"
        response = me.post("/v1/subscriptions", json={"user": bob, "service": "nope"})
        assert response.status_code == 404
        response = me.post("/v1/subscriptions", json={"user": bob})
        assert response.status_code == 400
        wrong = me.post(
            "/v1/subscriptions", json={"user": bob, "plan": "maps-pro", "service": "geo"}
        )
        assert wrong.status_code == 400
        assert me.get("/v1/subscriptions").json()["data"] == []


def test_upgrading_turns_implied_relationships_into_subscriptions(
    world: World, ctx: Context
) -> None:
    """An installation from before consent: its pay-as-you-go users had no subscription.
    The migration gives each a pay-as-you-go subscription, so nothing stops working."""
    alice, bob = world.users["alice"], world.users["bob"]
    with world.client("a") as a:
        assert a.post("/v1/events", json=world.event("1", "alice")).status_code == 200
    with world.client("admin") as admin:
        # A one-off charge the operator made in A's name, as the old API allowed.
        pa = admin.get("/v1/providers").json()["data"]
        a_id = next(p["id"] for p in pa if p["name"] == "A")
        response = admin.post(
            "/v1/charges",
            json={"user": bob, "amount": "1", "description": "old", "provider_id": a_id},
        )
        assert response.status_code == 201
    # Back to how an old installation looked: revision 0007, whose data had no
    # pay-as-you-go subscriptions (migration 0008's downgrade removes them all).
    command.downgrade(alembic_config(ctx.db.engine), "0007")
    with world.client("a") as a:
        assert a.post("/v1/events", json=world.event("2", "alice")).status_code == 404
    upgrade(ctx.db.engine)
    with world.client("admin") as admin:
        found = {
            user: [
                (s["plan"], s["interval"], s["status"])
                for s in admin.get(f"/v1/subscriptions?user={user}").json()["data"]
            ]
            for user in world.users.values()
        }
    assert found[alice] == [("maps-payg", "none", "active")]
    assert found[bob] == [("maps-payg", "none", "active")]
    assert found[world.users["carol"]] == []  # She had neither usage nor charges.
    with world.client("a") as a:
        late = world.event("3", "alice")
        assert a.post("/v1/events", json=late).status_code == 200
        charge = a.post("/v1/charges", json={"user": bob, "amount": "1", "description": "y"})
        assert charge.status_code == 201
        # Strangers stay strangers.
        carol = world.users["carol"]
        assert (
            a.post(
                "/v1/charges", json={"user": carol, "amount": "1", "description": "z"}
            ).status_code
            == 404
        )


def test_a_malformed_capture_is_refused_even_after_the_capture(world: World) -> None:
    """Found by schemathesis: capturing an already captured hold answered 200 to any body."""
    alice = world.users["alice"]
    with world.client("a") as a:
        hold = a.post("/v1/authorizations", json={"user": alice, "amount": "2"}).json()
        assert a.post(f"/v1/authorizations/{hold['id']}/capture", json={}).status_code == 200
        for body in ({"amount": False}, {"quantity": "1e3"}, {"amount": "1", "quantity": "1"}):
            again = a.post(f"/v1/authorizations/{hold['id']}/capture", json=body)
            assert again.status_code == 400, (body, again.text)
        same = a.post(f"/v1/authorizations/{hold['id']}/capture", json={})
        assert same.status_code == 200 and same.json()["status"] == "captured"
    assert world.balance("alice")["posted"] == "18.00"
