"""Metering and real-time charging over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from billfold.domain.pricing import parse_plan, parse_usage, quote
from billfold.domain.rating import units_due
from billfold.ledger.verify import verify
from billfold.store.ledger_tables import accounts, postings, transfers
from billfold.store.tables import usage_events, usage_periods
from billfold.workers.housekeeping import run_once
from tests.conftest import START, LiveServer, make_context

PLAN: dict[str, Any] = {
    "code": "maps-payg",
    "name": "Maps pay-as-you-go",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [
        {
            "metric": "calls",
            "model": "graduated",
            "tiers": [{"up_to": 100, "unit_price": "0.01"}, {"up_to": None, "unit_price": "0.005"}],
        },
        {"metric": "gb", "model": "per_unit", "unit_price": "0.1", "free_units": 5},
        {"metric": "seats", "model": "per_unit", "unit_price": "2"},
    ],
}


@dataclass
class World:
    server: LiveServer
    ctx: Context
    keys: dict[str, str]
    prepaid: str
    postpaid: str
    poor: str
    provider_a: str

    def client(self, who: str) -> httpx.Client:
        return self.server.client(self.keys[who])

    def send(self, events: list[dict[str, Any]], who: str = "a") -> dict[str, Any]:
        with self.client(who) as client:
            response = client.post("/v1/events", json={"events": events})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def balance(self, user: str) -> dict[str, Any]:
        with self.client("admin") as admin:
            return dict(admin.get(f"/v1/users/{user}/balance").json())


def event(n: int | str, user: str, metric: str = "calls", **extra: Any) -> dict[str, Any]:
    return {
        "id": f"e-{n}",
        "user": user,
        "service": "maps",
        "metric": metric,
        "timestamp": "2026-11-01T12:00:00Z",
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
        prepaid = make(
            "/v1/users",
            {"name": "Pre", "email": "pre@u.io", "currency": "USD", "external_id": "ext-pre"},
        )
        postpaid = make(
            "/v1/users",
            {"name": "Post", "email": "post@u.io", "currency": "USD", "billing_mode": "postpaid"},
        )
        poor = make("/v1/users", {"name": "Poor", "email": "poor@u.io", "currency": "USD"})
        admin.post(f"/v1/users/{prepaid}/top-ups", json={"amount": "10"}).raise_for_status()
        admin.post(f"/v1/users/{poor}/top-ups", json={"amount": "1"}).raise_for_status()
    keys = {
        "admin": admin_key,
        "a": ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=pa)[1],
        "b": ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=pb)[1],
        "user": ctx.run(create_key, SYSTEM, role=Role.USER, user_id=prepaid)[1],
    }
    with server.client(keys["a"]) as a:
        assert a.post("/v1/services", json={"code": "maps", "name": "Maps"}).status_code == 201
        for metric in (
            {"code": "calls", "name": "Calls", "aggregation": "count"},
            {"code": "gb", "name": "Storage", "aggregation": "sum", "field": "gb"},
            {"code": "seats", "name": "Seats", "aggregation": "unique_count", "field": "seat"},
        ):
            assert a.post("/v1/services/maps/metrics", json=metric).status_code == 201
        assert a.post("/v1/plans", json=PLAN).status_code == 201
    with server.client(admin_key) as admin:
        # Each chose provider A's service, a month back (late events are tried).
        since = (START - timedelta(days=31)).isoformat()
        for user in (prepaid, postpaid, poor):
            body = {"user": user, "service": "maps", "start": since}
            response = admin.post("/v1/subscriptions", json=body)
            assert response.status_code == 201, response.text
    with server.client(keys["b"]) as b:
        assert b.post("/v1/services", json={"code": "geo", "name": "Geo"}).status_code == 201
        b.post(
            "/v1/services/geo/metrics",
            json={"code": "calls", "name": "Calls", "aggregation": "count"},
        ).raise_for_status()
    yield World(server, ctx, keys, prepaid, postpaid, poor, pa)


def test_usage_is_rated_split_and_charged_at_once(world: World) -> None:
    result = world.send(
        [
            event(1, world.prepaid, value=50),
            event(2, "ext-pre", value=50),
            event(3, world.prepaid, value=50),
        ]
    )
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (3, 0, [])
    # 100 calls at 0.01 and 50 at 0.005: 1.25, charged in the same request.
    assert world.balance(world.prepaid)["posted"] == "8.75"
    with world.client("user") as me:
        charges = [
            t
            for t in me.get(f"/v1/users/{world.prepaid}/transactions").json()["data"]
            if t["kind"] == "charge"
        ]
    assert len(charges) == 1
    assert (
        charges[0]["service"],
        charges[0]["metric"],
        charges[0]["quantity"],
        charges[0]["amount"],
    ) == ("maps", "calls", "150", "-1.25")
    with world.client("admin") as admin:
        report = admin.get("/v1/ledger/verify").json()
    assert report["ok"]


def test_a_single_event_is_resolved_as_one_in_a_batch_is(world: World) -> None:
    """One user's events of one service take statements of their own (DECISIONS 118):
    the same users, by id or external id, the same services and the same refusals."""
    alone = {
        "by-external-id": (event("x-1", "ext-pre", value=10), None),
        "unknown-user": (event("x-2", "usr_nobody"), "user_not_found"),
        "unknown-external-id": (event("x-3", "ext-nobody"), "user_not_found"),
        "unknown-service": (
            {**event("x-4", world.prepaid), "service": "nope"},
            "service_not_found",
        ),
        # Provider b's service: provider a may not meter it, nor learn that it exists.
        "strangers-service": (
            {**event("x-5", world.prepaid), "service": "geo"},
            "service_not_found",
        ),
        "unknown-metric": (event("x-6", world.prepaid, metric="sms"), "metric_not_found"),
    }
    for name, (sent, refused) in alone.items():
        result = world.send([sent])
        codes = [r["error"]["code"] for r in result["rejected"]]
        assert codes == ([refused] if refused else []), name
        assert result["accepted"] == (0 if refused else 1), name
    # Ten calls at 0.01, charged to the user the external id names.
    assert world.balance(world.prepaid)["posted"] == "9.90"


def test_a_users_own_id_wins_over_another_users_external_id_that_spells_it(
    world: World,
) -> None:
    """A careless (or hostile) admin gives a new user an external id that is another
    user's id: usage sent by that id is still the first user's, alone or in a batch."""
    with world.client("admin") as admin:
        spelled = {"name": "S", "email": "s@u.io", "currency": "USD", "external_id": world.prepaid}
        assert admin.post("/v1/users", json=spelled).status_code == 201
    assert world.send([event("own-1", world.prepaid)])["accepted"] == 1
    batch = world.send([event("own-2", world.prepaid), event("own-3", world.postpaid)])
    assert (batch["accepted"], batch["rejected"]) == (2, [])
    assert world.balance(world.prepaid)["posted"] == "9.98"


def test_each_event_is_checked_on_its_own(world: World, clock: TestClock) -> None:
    future = (clock.now() + timedelta(hours=1)).isoformat()
    batch = [
        event("ok-1", world.prepaid),
        event("bad-user", "usr_nobody"),
        {**event("bad-service", world.prepaid), "service": "nope"},
        {**event("other-provider", world.prepaid), "service": "geo"},
        event("bad-metric", world.prepaid, metric="sms"),
        {**event("bad-time", world.prepaid), "timestamp": "yesterday"},
        {**event("naive-time", world.prepaid), "timestamp": "2026-11-01T12:00:00"},
        {**event("future", world.prepaid), "timestamp": future},
        event("no-gb", world.prepaid, metric="gb"),
        event("text-gb", world.prepaid, metric="gb", properties={"gb": "lots"}),
        {**event("extra", world.prepaid), "colour": "red"},
        "not an object",
        {"user": world.prepaid, "service": "maps", "metric": "calls"},
        event("ok-2", world.prepaid, metric="gb", properties={"gb": "7.5"}),
    ]
    result = world.send(batch)
    assert result["accepted"] == 2
    codes = {r["index"]: r["error"]["code"] for r in result["rejected"]}
    assert codes == {
        1: "user_not_found",
        2: "service_not_found",
        3: "service_not_found",
        4: "metric_not_found",
        5: "invalid_timestamp",
        6: "invalid_timestamp",
        7: "timestamp_in_future",
        8: "missing_value",
        9: "invalid_value",
        10: "invalid_event",
        11: "invalid_event",
        12: "invalid_event",
    }
    assert all(r["error"]["message"] for r in result["rejected"])
    # One call (0.01) and 2.5 GB past the 5 free (0.25).
    assert world.balance(world.prepaid)["posted"] == "9.74"
    with world.client("a") as a:
        single = a.post("/v1/events", json=event("lone", "usr_nobody"))
        assert single.status_code == 404 and single.json()["error"]["code"] == "user_not_found"
        too_many = a.post(
            "/v1/events", json={"events": [event(n, world.prepaid) for n in range(10_001)]}
        )
        assert too_many.status_code == 400
        assert too_many.json()["error"]["type"] == "limit_exceeded"
    with world.client("user") as me:
        assert me.post("/v1/events", json=event("x", world.prepaid)).status_code == 403


def test_properties_are_bounded_in_depth_and_size(world: World) -> None:
    """Properties are kept as sent: a hostile client's deeply nested or oversized object
    is that event's refusal, never an error of the request."""

    def nested(levels: int, leaf: object = 1) -> object:
        value = leaf
        for _ in range(levels - 1):
            value = {"a": value}
        return {"a": value}

    batch = [
        event("depth-32", world.prepaid, properties=nested(32)),
        event("depth-33", world.prepaid, properties=nested(33)),
        event("depth-600", world.prepaid, properties=nested(600)),
        event("too-big", world.prepaid, properties={"k": "x" * 9000}),
    ]
    result = world.send(batch)
    assert result["accepted"] == 1
    refused = {r["index"]: (r["error"]["code"], r["error"]["param"]) for r in result["rejected"]}
    assert refused == dict.fromkeys((1, 2, 3), ("invalid_event", "properties"))
    with world.client("a") as a:
        body = json.dumps({"events": [event("nul", world.prepaid, properties=nested(600, "\x00"))]})
        answer = a.post("/v1/events", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 400, answer.text  # A NUL anywhere: the body's refusal.
        assert answer.json()["error"]["code"] == "malformed_json"


def test_a_resent_event_changes_nothing_even_after_a_restart(world: World, tmp_path: Any) -> None:
    batch = [event(n, world.prepaid) for n in range(5)] + [event(0, world.prepaid)]
    first = world.send(batch)
    assert (first["accepted"], first["duplicates"]) == (5, 1)
    again = world.send(batch)
    assert (again["accepted"], again["duplicates"], again["charges"]) == (0, 6, [])
    # Another server process on the same database (a restart) still knows them.
    fresh = make_context(world.ctx.db.url, tmp_path / "restart", world.ctx.clock)  # type: ignore[arg-type]
    try:
        with LiveServer(fresh) as restarted, restarted.client(world.keys["a"]) as a:
            response = a.post("/v1/events", json={"events": batch}).json()
            assert (response["accepted"], response["duplicates"]) == (0, 6)
    finally:
        fresh.db.dispose()
    assert world.balance(world.prepaid)["posted"] == "9.95"
    # The same id from another provider is another event.
    with world.client("b") as b:
        b.post(
            "/v1/plans",
            json={
                **PLAN,
                "code": "geo-payg",
                "service": "geo",
                "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "1"}],
            },
        ).raise_for_status()
    with world.client("user") as me:
        body = {"user": world.prepaid, "service": "geo"}
        assert me.post("/v1/subscriptions", json=body).status_code == 201
    with world.client("b") as b:
        other = b.post(
            "/v1/events", json={"events": [{**event(0, world.prepaid), "service": "geo"}]}
        ).json()
        assert other["accepted"] == 1


def test_cloudevents(world: World) -> None:
    cloud = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/gateway",
        "type": "calls",
        "subject": world.prepaid,
        "time": "2026-11-01T12:00:00Z",
        "data": {"service": "maps", "value": "3", "region": "eu"},
        "traceparent": "x",
    }
    with world.client("a") as a:
        one = a.post(
            "/v1/events",
            content=httpx.Request("POST", "/", json=cloud).content,
            headers={"content-type": "application/cloudevents+json"},
        )
        assert one.status_code == 200 and one.json()["accepted"] == 1, one.text
        batch = [
            {**cloud, "id": "ce-2"},
            {**cloud, "id": "ce-1"},
            {**cloud, "id": "ce-3", "specversion": "0.3"},
        ]
        many = a.post(
            "/v1/events",
            content=httpx.Request("POST", "/", json=batch).content,
            headers={"content-type": "application/cloudevents-batch+json"},
        ).json()
        assert (many["accepted"], many["duplicates"]) == (1, 1)
        assert many["rejected"][0]["index"] == 2
    with world.ctx.db.unit_of_work(read_only=True) as uow:
        stored = uow.conn.execute(
            select(usage_events.c.properties).where(usage_events.c.event_id == "ce-1")
        ).scalar_one()
    assert stored == '{"region": "eu"}'
    assert world.balance(world.prepaid)["posted"] == "9.94"


def test_late_events_belong_to_the_period_of_their_timestamp(world: World) -> None:
    world.send([event(n, world.prepaid, value=100) for n in range(2)])  # November: 100 + 50 x 0.5.
    late = world.send(
        [{**event("late", world.prepaid, value=100), "timestamp": "2026-10-15T08:00:00Z"}]
    )
    assert late["accepted"] == 1
    with world.ctx.db.unit_of_work(read_only=True) as uow:
        periods = {
            row.period_start.month: row.quantity for row in uow.conn.execute(select(usage_periods))
        }
    assert periods == {10: "100", 11: "200"}
    # October's 100 calls are priced in October's first tier, not November's second.
    assert world.balance(world.prepaid)["posted"] == "7.50"


def test_charges_of_a_period_add_up_exactly_to_its_quote(world: World) -> None:
    rng = random.Random(5)
    all_events = []
    for batch in range(6):
        events = [
            event(
                f"{batch}-{n}",
                world.prepaid,
                metric=rng.choice(["calls", "gb"]),
                value=str(Decimal(rng.randint(1, 40000)).scaleb(-3)),
            )
            for n in range(rng.randint(1, 30))
        ]
        for item in events:
            if item["metric"] == "gb":
                item["properties"] = {"gb": item.pop("value")}
        all_events += events
        assert world.send(events)["accepted"] == len(events)
    usage = parse_usage(
        {
            "events": [
                {
                    "metric": e["metric"],
                    "timestamp": e["timestamp"],
                    "value": e.get("value", e.get("properties", {}).get("gb")),
                }
                for e in all_events
            ]
        }
    )
    expected = units_due(quote(parse_plan(PLAN), usage).total, 8)
    balance = world.balance(world.prepaid)
    # What the wallet paid plus what it could not (the debt).
    spent = Decimal(10) - Decimal(balance["posted"]) + Decimal(balance["receivable"])
    assert spent.scaleb(8) == expected


def test_unique_count_counts_distinct_values_per_period(world: World) -> None:
    seats = [
        event(f"s{n}", world.prepaid, metric="seats", properties={"seat": name})
        for n, name in enumerate(["ana", "bo", "ana", "cy"])
    ]
    world.send(seats[:2])
    world.send(seats[2:])
    assert world.balance(world.prepaid)["posted"] == "4.00"  # 3 seats at 2.


def test_authorizations_hold_capture_void_and_expire(world: World, clock: TestClock) -> None:
    with world.client("a") as a:
        approved = a.post(
            "/v1/authorizations",
            json={"user": world.prepaid, "service": "maps", "metric": "calls", "quantity": 150},
        )
        assert approved.status_code == 201, approved.text
        auth = approved.json()
        assert (auth["status"], auth["amount"]) == ("approved", "1.25")
        assert world.balance(world.prepaid)["available"] == "8.75"
        captured = a.post(f"/v1/authorizations/{auth['id']}/capture", json={"quantity": 120})
        assert captured.status_code == 200 and captured.json()["status"] == "captured"
        balance = world.balance(world.prepaid)
        assert (balance["posted"], balance["held"]) == ("8.90", "0.00")  # 100 x .01 + 20 x .005.
        assert a.post(f"/v1/authorizations/{auth['id']}/capture").json()["status"] == "captured"
        declined = a.post("/v1/authorizations", json={"user": world.prepaid, "amount": "50"})
        assert declined.status_code == 200
        assert (declined.json()["status"], declined.json()["reason"]) == (
            "declined",
            "insufficient_funds",
        )
        by_amount = a.post("/v1/authorizations", json={"user": world.prepaid, "amount": "3"})
        assert by_amount.status_code == 201
        partial = a.post(
            f"/v1/authorizations/{by_amount.json()['id']}/capture", json={"amount": "2"}
        ).json()
        assert partial["captured"] == "2.00"
        assert world.balance(world.prepaid)["posted"] == "6.90"
    with world.client("admin") as admin:
        listed = admin.get(f"/v1/users/{world.prepaid}/transactions").json()["data"]
    (split,) = [t for t in listed if t["kind"] == "capture"]
    assert split["amount"] == "-2.00"
    # The amount captured is split at the provider's commission rate (0.2), as a charge is.
    with world.ctx.db.unit_of_work() as uow:
        legs = dict(
            uow.conn.execute(
                select(accounts.c.kind, postings.c.amount)
                .join(transfers, transfers.c.seq == postings.c.transfer_seq)
                .join(accounts, accounts.c.id == postings.c.account_id)
                .where(transfers.c.id == split["id"])
            ).all()
        )
    assert legs["provider_earnings"] == 4 * legs["platform_revenue"] > 0
    assert sum(legs.values()) == 0
    with world.client("a") as a:
        voided = a.post("/v1/authorizations", json={"user": world.prepaid, "amount": "1"}).json()
        assert a.post(f"/v1/authorizations/{voided['id']}/void").json()["status"] == "voided"
        lapsing = a.post(
            "/v1/authorizations", json={"user": world.prepaid, "amount": "1", "expires_in": 60}
        ).json()
        assert world.balance(world.prepaid)["held"] == "1.00"
        clock.advance(minutes=2)
        run_once(world.ctx)
        assert world.balance(world.prepaid)["held"] == "0.00"
        late = a.post(f"/v1/authorizations/{lapsing['id']}/capture")
        assert late.status_code == 400 and late.json()["error"]["code"] == "authorization_expired"
    with world.client("b") as b:
        assert b.get(f"/v1/authorizations/{auth['id']}").status_code == 404
        assert b.post(f"/v1/authorizations/{auth['id']}/void").status_code == 404


def test_usage_past_the_balance_becomes_debt_and_suspends(world: World) -> None:
    # 300 calls cost 1.00 + 1.00 = 2.00; the wallet holds 1.00.
    assert world.send([event(n, world.poor, value=100) for n in range(3)])["accepted"] == 3
    balance = world.balance(world.poor)
    assert (balance["posted"], balance["receivable"]) == ("0.00", "1.00")
    with world.client("a") as a:
        access = a.get(f"/v1/users/{world.poor}/entitlements", params={"service": "maps"}).json()
        # The provider learns why, not how much its customer owes.
        assert (access["has_access"], access["reason"], access["debt"]) == (
            False,
            "suspended",
            None,
        )
    with world.client("admin") as admin:
        access = admin.get(
            f"/v1/users/{world.poor}/entitlements", params={"service": "maps"}
        ).json()
        assert access["debt"] == "1.00"
    with world.client("a") as a:
        refused = a.post(
            "/v1/authorizations",
            json={"user": world.poor, "service": "maps", "metric": "calls", "quantity": 1},
        ).json()
        assert (refused["status"], refused["reason"]) == ("declined", "suspended")
    with world.client("admin") as admin:
        admin.post(f"/v1/users/{world.poor}/top-ups", json={"amount": "5"}).raise_for_status()
        assert admin.get("/v1/ledger/verify").json()["ok"]
    balance = world.balance(world.poor)
    assert (balance["posted"], balance["receivable"]) == ("4.00", "0.00")  # The debt first.
    with world.client("admin") as admin:
        listed = admin.get(f"/v1/users/{world.poor}/transactions").json()["data"]
        # Each transfer once, with its whole effect on the user, wherever it landed.
        assert [(t["kind"], t["amount"], t["account"]) for t in listed] == [
            ("top_up", "5.00", "wallet+receivable"),
            ("charge", "-2.00", "wallet+receivable"),
            ("top_up", "1.00", "wallet"),
        ]
        pages, after = [], None
        while True:
            params: dict[str, Any] = {"limit": 1}
            if after:
                params["starting_after"] = after
            page = admin.get(f"/v1/users/{world.poor}/transactions", params=params).json()
            pages += page["data"]
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
        assert [t["id"] for t in pages] == [t["id"] for t in listed]
    with world.client("a") as a:
        access = a.get(f"/v1/users/{world.poor}/entitlements", params={"service": "maps"}).json()
        assert (access["has_access"], access["reason"]) == (True, "ok")
        assert access["remaining"] == {"gb": "5"}


def test_postpaid_usage_accrues_to_the_receivable(world: World) -> None:
    world.send([event(n, world.postpaid, value=100) for n in range(2)])
    balance = world.balance(world.postpaid)
    assert (balance["posted"], balance["receivable"]) == ("0.00", "1.50")
    with world.client("admin") as admin:
        access = admin.get(
            f"/v1/users/{world.postpaid}/entitlements", params={"service": "maps"}
        ).json()
    assert access["has_access"]


def test_entitlements_access(world: World) -> None:
    with world.client("user") as me:
        assert me.get(f"/v1/users/{world.prepaid}/entitlements", params={"service": "maps"}).json()[
            "has_access"
        ]
        assert (
            me.get(f"/v1/users/{world.poor}/entitlements", params={"service": "maps"}).status_code
            == 404
        )
    with world.client("b") as b:
        assert (
            b.get(f"/v1/users/{world.prepaid}/entitlements", params={"service": "maps"}).status_code
            == 404
        )


def test_books_and_counts_after_everything(world: World) -> None:
    world.send([event(n, world.prepaid) for n in range(20)])
    with world.ctx.db.unit_of_work(read_only=True) as uow:
        assert uow.conn.execute(select(func.count()).select_from(usage_events)).scalar_one() == 20
    assert world.ctx.read(verify, SYSTEM).ok


def test_capturing_nothing_closes_the_hold_without_a_charge(world: World) -> None:
    with world.client("a") as a:
        auth = a.post(
            "/v1/authorizations",
            json={"user": world.prepaid, "service": "maps", "metric": "calls", "quantity": 10},
        ).json()
        assert world.balance(world.prepaid)["held"] == "0.10"
        captured = a.post(f"/v1/authorizations/{auth['id']}/capture", json={"quantity": 0})
        assert captured.json()["status"] == "captured"
        assert a.post(f"/v1/authorizations/{auth['id']}/void").status_code == 409
    balance = world.balance(world.prepaid)
    assert (balance["posted"], balance["held"]) == ("10.00", "0.00")
