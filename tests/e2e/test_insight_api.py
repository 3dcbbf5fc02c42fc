"""Analytics, statements, payouts, the simulator and exports over real HTTP."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import httpx

from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from tests.conftest import LiveServer

PLAN = {
    "code": "maps-payg",
    "name": "PAYG",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.013"}],
}


def test_analytics_settlement_and_exports_over_http(
    ctx: Context, server: LiveServer, admin: httpx.Client
) -> None:
    providers = []
    for name, service in (("A", "maps"), ("B", "geo")):
        provider = admin.post(
            "/v1/providers",
            json={"name": name, "email": f"{name}@p.io", "commission_rate": "0.2"},
        ).json()
        admin.post(
            "/v1/services", json={"provider_id": provider["id"], "code": service, "name": service}
        )
        admin.post(
            f"/v1/services/{service}/metrics",
            json={"code": "calls", "name": "Calls", "aggregation": "count"},
        )
        assert (
            admin.post(
                "/v1/plans", json={**PLAN, "code": f"{service}-payg", "service": service}
            ).status_code
            == 201
        )
        providers.append(provider["id"])
    user = admin.post(
        "/v1/users",
        json={
            "name": "Ada",
            "email": "ada@example.com",
            "currency": "USD",
            "billing_mode": "prepaid",
        },
    ).json()["id"]
    admin.post(f"/v1/users/{user}/top-ups", json={"amount": "100"})
    payg = admin.post("/v1/subscriptions", json={"user": user, "service": "maps"})
    assert payg.status_code == 201, payg.text
    pkey = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=providers[0])[1]
    other = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=providers[1])[1]
    ukey = ctx.run(create_key, SYSTEM, role=Role.USER, user_id=user)[1]
    now = ctx.clock.now()
    stamp = now.replace(minute=0, second=0, microsecond=0)
    with server.client(pkey) as prov, server.client(other) as prov_b, server.client(ukey) as me:
        events = [
            {
                "id": f"e{n}",
                "user": user,
                "service": "maps",
                "metric": "calls",
                "timestamp": stamp.isoformat(),
            }
            for n in range(100)
        ]
        assert prov.post("/v1/events", json={"events": events}).json()["accepted"] == 100
        day = stamp.strftime("%Y-%m-%dT00:00:00Z")
        params = {
            "from": day,
            "to": f"{stamp:%Y-%m}-28T00:00:00Z",
            "window": "day",
            "group_by": "metric",
        }
        series = prov.get("/v1/analytics/usage", params=params)
        assert series.status_code == 200, series.text
        (group,) = series.json()["data"]
        assert group["group"] == {"metric": "calls"}
        assert sum(Decimal(p["amount"]) for p in group["points"]) == Decimal("1.3")
        assert sum(Decimal(p["quantity"]) for p in group["points"]) == 100
        # The other provider and the user see only their own.
        assert prov_b.get("/v1/analytics/usage", params=params).json()["data"] == []
        assert len(me.get("/v1/analytics/usage", params=params).json()["data"]) == 1
        assert (
            prov_b.get(
                "/v1/analytics/usage", params={**params, "provider": providers[0]}
            ).status_code
            == 400
        )
        assert (
            me.get("/v1/analytics/revenue", params={**params, "group_by": "provider"}).status_code
            == 403
        )
        revenue = admin.get(
            "/v1/analytics/revenue", params={**params, "group_by": "provider", "window": "month"}
        ).json()["data"]
        (point,) = [p for s in revenue for p in s["points"] if Decimal(p["gross"])]
        assert (point["gross"], point["commission"], point["net"]) == ("1.30", "0.26", "1.04")
        # Bad input: a clear 4xx.
        assert (
            prov.get("/v1/analytics/usage", params={**params, "window": "week"}).status_code == 400
        )
        assert (
            prov.get("/v1/analytics/usage", params={**params, "tz": "Nope/Nope"}).status_code == 400
        )
        assert (
            prov.get("/v1/analytics/usage", params={**params, "group_by": "colour"}).status_code
            == 400
        )
        # Statements and payouts.
        period = f"{stamp:%Y-%m}"
        st = prov.get(f"/v1/providers/{providers[0]}/statements", params={"period": period}).json()
        assert (st["gross"], st["commission"], st["refunds"], st["net"]) == (
            "1.30",
            "0.26",
            "0.00",
            "1.04",
        )
        assert (
            prov_b.get(
                f"/v1/providers/{providers[0]}/statements", params={"period": period}
            ).status_code
            == 404
        )
        too_much = admin.post("/v1/payouts", json={"provider": providers[0], "amount": "2"})
        assert too_much.json()["error"]["type"] == "insufficient_funds"
        assert too_much.json()["error"]["code"] == "payout_exceeds_balance"
        body = {"provider": providers[0], "amount": "1"}
        paid = admin.post("/v1/payouts", json=body, headers={"Idempotency-Key": "po-1"})
        assert paid.status_code == 201, paid.text
        again = admin.post("/v1/payouts", json=body, headers={"Idempotency-Key": "po-1"})
        assert again.json()["id"] == paid.json()["id"] and paid.json()["balance_after"] == "0.04"
        assert prov.post("/v1/payouts", json=body).status_code == 403
        st = prov.get(f"/v1/providers/{providers[0]}/statements", params={"period": period}).json()
        assert (st["payouts"], st["closing_balance"]) == ("1.00", "0.04")
        report = admin.get("/v1/reports/commission", params={"period": period}).json()["data"]
        assert [r["commission"] for r in report if r["provider"] == providers[0]] == ["0.26"]
        # The simulator and the exports.
        draft = {
            **PLAN,
            "code": "maps-v2",
            "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.02"}],
        }
        sim = prov.post("/v1/plans/maps-payg/simulate", json={"plan": draft, "period": period})
        assert sim.status_code == 200, sim.text
        assert (sim.json()["current"], sim.json()["draft"], sim.json()["difference"]) == (
            "1.3",
            "2",
            "0.7",
        )
        assert (
            prov_b.post(
                "/v1/plans/maps-payg/simulate", json={"plan": draft, "period": period}
            ).status_code
            == 404
        )
        exported = prov.get("/v1/exports/usage.csv", params={"period": period})
        assert exported.headers["content-type"].startswith("text/csv")
        assert len(list(csv.DictReader(io.StringIO(exported.text)))) == 100
        assert prov_b.get("/v1/exports/usage.csv", params={"period": period}).text.count("\n") == 1
        assert me.get("/v1/exports/statements.csv", params={"period": period}).status_code == 403
        # Forecast, alert settings and webhook endpoints.
        fc = me.get(f"/v1/users/{user}/forecast").json()
        assert fc["available"] == "98.70" and fc["days_left"] is not None
        assert prov.get(f"/v1/users/{user}/forecast").status_code == 404
        settings = me.post(
            f"/v1/users/{user}/alert-settings", json={"monthly_budget": "10", "low_balance": "5"}
        )
        assert settings.status_code == 200 and settings.json()["thresholds"] == [50, 80, 100]
        hook = prov.post("/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/x"})
        assert hook.status_code == 201 and hook.json()["secret"].startswith("whsec_")
        listed = prov.get("/v1/webhook-endpoints").json()["data"]
        assert [h["id"] for h in listed] == [hook.json()["id"]] and listed[0]["secret"] is None
        assert prov_b.get(f"/v1/webhook-endpoints/{hook.json()['id']}/messages").status_code == 404
    assert "/v1/analytics/usage" in admin.get("/openapi.json").json()["paths"]
