"""Alerts and webhooks over real HTTP, the plan simulator, and CSV exports that add up."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from billfold import alerts, analytics, catalog, metering, parties
from billfold.analytics import simulator
from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.domain.errors import InvalidRequest, NotFound, PermissionDenied
from billfold.settlement import exports
from tests.integration.helpers import subscribe

DAY0 = datetime(2026, 11, 2, tzinfo=UTC)


class Receiver:
    """A real HTTP endpoint that records what it gets and fails the first `fail` posts."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = len(outer.received) <= outer.fail
                self.send_response(503 if failing else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail=2)
    yield r
    r.close()


def _setup(ctx: Context, clock: TestClock) -> tuple[Principal, str]:
    clock.set(DAY0)
    provider = ctx.run(
        parties.create_provider, SYSTEM, name="A", email="a@p.io", commission_rate="0.2"
    )
    me = Principal("kp", Role.PROVIDER, provider_id=provider.id)
    ctx.run(catalog.create_service, me, code="maps", name="Maps")
    ctx.run(catalog.create_metric, me, "maps", code="calls", name="Calls", aggregation="count")
    ctx.run(
        catalog.create_plan,
        me,
        {
            "code": "maps-payg",
            "name": "PAYG",
            "service": "maps",
            "currency": "USD",
            "interval": "none",
            "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.1"}],
        },
    )
    user = ctx.run(parties.create_user, SYSTEM, name="U", email="u@u.io", currency_code="USD")
    ctx.run(parties.top_up, SYSTEM, user.id, amount="100")
    subscribe(ctx, user.id)
    return me, user.id


def _use(ctx: Context, me: Principal, user: str, day: int, count: int, tag: str = "") -> None:
    start = DAY0 + timedelta(days=day, hours=9)
    metering.ingest(
        ctx,
        me,
        [
            {
                "id": f"{tag}{day}-{n}",
                "user": user,
                "service": "maps",
                "metric": "calls",
                "timestamp": (start + timedelta(seconds=n)).isoformat(),
            }
            for n in range(count)
        ],
    )


def test_alerts_are_signed_retried_and_delivered_once_with_one_id(
    ctx: Context, clock: TestClock, receiver: Receiver
) -> None:
    me, user = _setup(ctx, clock)
    endpoint = ctx.run(alerts.create_endpoint, me, url=receiver.url, event_types=None)
    mine = Principal("ku", Role.USER, user_id=user)
    ctx.run(alerts.create_endpoint, mine, url=receiver.url, event_types=["budget.threshold"])
    ctx.run(
        alerts.set_settings, mine, user, monthly_budget="20", thresholds=[50, 100], low_balance="85"
    )
    # 14 quiet days of 20 calls (2.00 a day), then a day of 300 calls (30.00).
    for day in range(14):
        clock.set(DAY0 + timedelta(days=day, hours=10))
        _use(ctx, me, user, day, 20)
    clock.set(DAY0 + timedelta(days=14, hours=10))
    _use(ctx, me, user, 14, 300)
    clock.set(DAY0 + timedelta(days=15, hours=1))
    analytics.fold(ctx)
    raised = alerts.evaluate(ctx)
    assert raised == {"budget": 2, "low_balance": 1, "spike": 1, "package": 0}
    assert alerts.evaluate(ctx) == {
        "budget": 0,
        "low_balance": 0,
        "spike": 0,
        "package": 0,
    }  # Once each.
    kinds = {a.type for a in ctx.run(alerts.list_alerts, SYSTEM)}
    assert kinds == {"budget.threshold", "balance.low", "usage.spike"}
    spike = next(a for a in ctx.run(alerts.list_alerts, me) if a.type == "usage.spike")
    assert spike.data["amount"] == "30.00" and spike.data["day"] == "2026-11-16"
    # The provider hears of the spike (its own user); the user of its budget alerts.
    assert {a.type for a in ctx.run(alerts.list_alerts, me)} == {"usage.spike"}
    other = Principal("kx", Role.USER, user_id="usr_other")
    assert ctx.run(alerts.list_alerts, other) == []
    # Delivery: the receiver fails the first two posts; they are retried with backoff.
    first = alerts.deliver_due(ctx)
    assert first["retried"] == 2 and first["delivered"] == 1
    assert alerts.deliver_due(ctx) == {"delivered": 0, "retried": 0, "failed": 0}  # Not due.
    clock.set(clock.now() + timedelta(seconds=6))
    assert alerts.deliver_due(ctx)["delivered"] == 2
    by_id: dict[str, list[tuple[dict[str, str], bytes]]] = {}
    for headers, body in receiver.received:
        by_id.setdefault(headers["webhook-id"], []).append((headers, body))
    assert len(by_id) == 3 and sorted(len(v) for v in by_id.values()) == [1, 2, 2]
    secrets_ = {endpoint.id: endpoint.secret}
    for attempts in by_id.values():
        assert len({body for _, body in attempts}) == 1  # Same id, same content.
        for headers, body in attempts:
            payload = json.loads(body)
            assert payload["type"] in alerts.EVENT_TYPES
            signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body.decode()}"
            candidates = [
                base64.b64encode(
                    hmac.new(
                        base64.b64decode(s.removeprefix("whsec_")),
                        signed.encode(),
                        hashlib.sha256,
                    ).digest()
                ).decode()
                for s in secrets_.values()
                if s
            ]
            sig = headers["webhook-signature"].removeprefix("v1,")
            if payload["data"]["provider"]:  # The provider's endpoint (we know its secret).
                assert sig in candidates
    messages = ctx.run(alerts.list_messages, me, endpoint.id)
    assert {m.status for m in messages} == {"delivered"}
    with pytest.raises(NotFound):
        ctx.run(alerts.list_messages, mine, endpoint.id)


def test_messages_give_up_after_the_backoff_schedule(ctx: Context, clock: TestClock) -> None:
    me, user = _setup(ctx, clock)
    dead = Receiver(fail=100)
    try:
        ctx.run(alerts.create_endpoint, SYSTEM, url=dead.url, event_types=["balance.low"])
        ctx.run(
            alerts.set_settings,
            SYSTEM,
            user,
            monthly_budget=None,
            thresholds=None,
            low_balance="500",
        )
        assert alerts.evaluate(ctx)["low_balance"] == 1
        for _ in range(len(alerts.BACKOFF_S) + 1):
            alerts.deliver_due(ctx)
            clock.set(clock.now() + timedelta(hours=11))
        assert len(dead.received) == len(alerts.BACKOFF_S) + 1
        assert len({h["webhook-id"] for h, _ in dead.received}) == 1
    finally:
        dead.close()
    with pytest.raises(InvalidRequest):
        ctx.run(alerts.create_endpoint, me, url="ftp://x", event_types=None)
    with pytest.raises(InvalidRequest):
        ctx.run(alerts.create_endpoint, me, url="http://x.io", event_types=["nope"])


def test_forecast_from_the_ledger(ctx: Context, clock: TestClock) -> None:
    me, user = _setup(ctx, clock)
    for day in range(7):
        clock.set(DAY0 + timedelta(days=day, hours=10))
        _use(ctx, me, user, day, 20)  # 2.00 a day.
    clock.set(DAY0 + timedelta(days=7))
    code, available, f = ctx.run(alerts.balance_forecast, SYSTEM, user, days=7)
    assert (code, available) == ("USD", Decimal(86))
    assert f.burn_per_day == 2 and f.days_left == Decimal("43.0")
    with pytest.raises(NotFound):
        ctx.run(alerts.balance_forecast, Principal("kx", Role.USER, user_id="usr_x"), user)


def test_simulator_reprices_recorded_usage(ctx: Context, clock: TestClock) -> None:
    me, user = _setup(ctx, clock)
    second = ctx.run(parties.create_user, SYSTEM, name="V", email="v@u.io", currency_code="USD")
    ctx.run(parties.top_up, SYSTEM, second.id, amount="100")
    subscribe(ctx, second.id)
    clock.set(DAY0 + timedelta(days=2))
    _use(ctx, me, user, 0, 30)
    _use(ctx, me, second.id, 1, 150, tag="b")
    draft = {
        "code": "maps-v2",
        "name": "Tiered",
        "service": "maps",
        "currency": "USD",
        "interval": "none",
        "charges": [
            {
                "metric": "calls",
                "model": "graduated",
                "tiers": [
                    {"up_to": "100", "unit_price": "0.05"},
                    {"up_to": None, "unit_price": "0.2"},
                ],
            }
        ],
    }
    sim = ctx.run(simulator.simulate, me, "maps-payg", draft, "2026-11")
    got = {u.user_id: (u.current, u.draft) for u in sim.users}
    assert got == {user: (Decimal(3), Decimal("1.5")), second.id: (Decimal(15), Decimal(15))}
    assert sim.draft - sim.current == Decimal("-1.5")
    other = Principal("kq", Role.PROVIDER, provider_id="prv_other")
    with pytest.raises(NotFound):
        ctx.run(simulator.simulate, other, "maps-payg", draft, "2026-11")
    with pytest.raises(InvalidRequest):
        ctx.run(simulator.simulate, me, "maps-payg", {**draft, "currency": "EUR"}, "2026-11")


def test_exports_add_up_to_the_ledger(ctx: Context, clock: TestClock) -> None:
    me, user = _setup(ctx, clock)
    clock.set(DAY0 + timedelta(days=1))
    _use(ctx, me, user, 0, 37)
    charge = ctx.run(parties.charge, me, user_ref=user, amount="2.5", description='Setup, "quoted"')
    ctx.run(parties.refund, me, charge.transfer.id, amount="1")

    def rows(principal: Principal, kind: str) -> list[dict[str, str]]:
        text = "".join(exports.export_csv(ctx, principal, kind, "2026-11"))
        return list(csv.DictReader(io.StringIO(text)))

    usage = rows(me, "usage")
    assert len(usage) == 37 and {r["service"] for r in usage} == {"maps"}
    charges = rows(SYSTEM, "charges")
    assert sum(Decimal(r["amount"]) for r in charges) == Decimal("3.7") + Decimal("2.5") - 1
    assert any(r["description"] == 'Setup, "quoted"' for r in charges)
    (statement,) = rows(me, "statements")
    assert Decimal(statement["net"]) == sum(Decimal(r["provider_share"]) for r in charges)
    assert rows(Principal("kx", Role.USER, user_id="usr_x"), "usage") == []
    with pytest.raises(PermissionDenied):
        exports.export_csv(ctx, Principal("ku", Role.USER, user_id=user), "statements", "2026-11")
    with pytest.raises(InvalidRequest):
        exports.export_csv(ctx, me, "secrets", "2026-11")
