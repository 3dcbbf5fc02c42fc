"""The catalog over HTTP: services, metrics, versioned plans, retirement and quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from tests.conftest import LiveServer


@dataclass
class Catalog:
    server: LiveServer
    keys: dict[str, str]
    provider_a: str

    def client(self, who: str) -> httpx.Client:
        return self.server.client(self.keys[who])


def plan(code: str = "maps-pro", price: str = "0.01", **extra: Any) -> dict[str, Any]:
    return {
        "code": code,
        "name": "Maps Pro",
        "service": "maps",
        "currency": "USD",
        "interval": "month",
        "fixed_fee": "30",
        "charges": [{"metric": "api_calls", "model": "per_unit", "unit_price": price}],
        **extra,
    }


@pytest.fixture
def catalog(ctx: Context, server: LiveServer, admin_key: str) -> Iterator[Catalog]:
    with server.client(admin_key) as admin:
        pa = admin.post(
            "/v1/providers", json={"name": "A", "email": "a@p.io", "commission_rate": "0.2"}
        ).json()["id"]
        pb = admin.post(
            "/v1/providers", json={"name": "B", "email": "b@p.io", "commission_rate": "0.2"}
        ).json()["id"]
        user = admin.post(
            "/v1/users", json={"name": "U", "email": "u@u.io", "currency": "USD"}
        ).json()["id"]
    keys = {
        "admin": admin_key,
        "a": ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=pa)[1],
        "b": ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=pb)[1],
        "user": ctx.run(create_key, SYSTEM, role=Role.USER, user_id=user)[1],
    }
    world = Catalog(server, keys, pa)
    with world.client("a") as a:
        assert a.post("/v1/services", json={"code": "maps", "name": "Maps"}).status_code == 201
        for metric in (
            {"code": "api_calls", "name": "API calls", "aggregation": "count"},
            {"code": "storage_gb", "name": "Storage", "aggregation": "max", "field": "gb"},
        ):
            response = a.post("/v1/services/maps/metrics", json=metric)
            assert response.status_code == 201, response.text
    yield world


def test_services_and_metrics_belong_to_their_provider(catalog: Catalog) -> None:
    with catalog.client("b") as b:
        assert b.get("/v1/services/maps").status_code == 404
        response = b.post(
            "/v1/services/maps/metrics", json={"code": "x", "name": "X", "aggregation": "count"}
        )
        assert response.status_code == 404
        assert b.post("/v1/services", json={"code": "maps", "name": "Again"}).status_code == 409
        other = b.post(
            "/v1/services", json={"code": "geo", "name": "Geo", "provider_id": catalog.provider_a}
        )
        assert other.status_code == 403
        assert [s["code"] for s in b.get("/v1/services").json()["data"]] == []
    with catalog.client("user") as user:
        assert user.post("/v1/services", json={"code": "u", "name": "U"}).status_code == 403
        assert [s["code"] for s in user.get("/v1/services").json()["data"]] == ["maps"]
        metrics = user.get("/v1/services/maps/metrics").json()["data"]
        assert {m["code"]: m["aggregation"] for m in metrics} == {
            "api_calls": "count",
            "storage_gb": "max",
        }
    with catalog.client("a") as a:
        bad = a.post(
            "/v1/services/maps/metrics", json={"code": "gb", "name": "GB", "aggregation": "sum"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "field"
        again = a.post(
            "/v1/services/maps/metrics",
            json={"code": "api_calls", "name": "X", "aggregation": "count"},
        )
        assert again.status_code == 409


def test_plans_are_validated_against_the_catalog(catalog: Catalog) -> None:
    with catalog.client("a") as a:
        created = a.post("/v1/plans", json=plan())
        assert created.status_code == 201, created.text
        body = created.json()
        assert (body["code"], body["version"], body["fixed_fee"], body["status"]) == (
            "maps-pro",
            1,
            "30",
            "active",
        )
        assert body["charges"][0]["unit_price"] == "0.01"
        assert a.post("/v1/plans", json=plan()).status_code == 409
        unknown = a.post(
            "/v1/plans",
            json={
                **plan("x"),
                "charges": [{"metric": "sms", "model": "per_unit", "unit_price": "1"}],
            },
        )
        assert unknown.status_code == 400
        assert unknown.json()["error"]["param"] == "charges[0].metric"
        bad = a.post(
            "/v1/plans",
            json={
                **plan("y"),
                "charges": [
                    {
                        "metric": "api_calls",
                        "model": "volume",
                        "tiers": [{"up_to": 5, "unit_price": 1}],
                    }
                ],
            },
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "charges[0].tiers[0].up_to"
        assert (
            a.post(
                "/v1/plans", content=b'{"code": ', headers={"content-type": "application/json"}
            ).status_code
            == 400
        )
    with catalog.client("b") as b:
        assert b.post("/v1/plans", json=plan("z")).status_code == 404  # Not B's service.
        assert b.get("/v1/plans/maps-pro").status_code == 404
        assert b.get("/v1/plans").json()["data"] == []
    with catalog.client("user") as user:
        assert user.post("/v1/plans", json=plan("w")).status_code == 403
        assert user.get("/v1/plans/maps-pro").json()["code"] == "maps-pro"


def test_a_new_version_never_reprices_the_past(catalog: Catalog, clock: TestClock) -> None:
    t0 = clock.now()
    usage = {"quantities": {"api_calls": 1000}}
    with catalog.client("a") as a:
        a.post("/v1/plans", json=plan(price="0.01")).raise_for_status()
        clock.advance(days=1)
        past = a.post(
            "/v1/plans/maps-pro/versions",
            json={"plan": plan(price="0.02"), "effective_from": t0.isoformat()},
        )
        assert past.status_code == 400 and past.json()["error"]["code"] == "effective_in_past"
        starts = clock.now() + timedelta(days=1)
        added = a.post(
            "/v1/plans/maps-pro/versions",
            json={"plan": plan(price="0.02"), "effective_from": starts.isoformat()},
        )
        assert added.status_code == 201, added.text
        assert added.json()["version"] == 2
        changed = a.post(
            "/v1/plans/maps-pro/versions", json={"plan": {**plan(price="0.03"), "currency": "EUR"}}
        )
        assert changed.status_code == 400 and changed.json()["error"]["param"] == "currency"
        # Now (before the change) the first prices apply; from `starts` on, the new ones.
        assert a.get("/v1/plans/maps-pro").json()["version"] == 1
        later = a.get(
            "/v1/plans/maps-pro", params={"at": (starts + timedelta(hours=1)).isoformat()}
        )
        assert later.json()["version"] == 2 and later.json()["charges"][0]["unit_price"] == "0.02"

        def quote_at(moment: str) -> str:
            response = a.post("/v1/quotes", json={"plan": "maps-pro", "usage": usage, "at": moment})
            assert response.status_code == 200, response.text
            return str(response.json()["total"])

        assert quote_at(t0.isoformat()) == "40"
        assert quote_at(starts.isoformat()) == "50"
        versions = a.get("/v1/plans/maps-pro/versions").json()["data"]
        assert [v["version"] for v in versions] == [1, 2]


def test_retired_plans_leave_the_users_catalog(catalog: Catalog) -> None:
    with catalog.client("a") as a:
        a.post("/v1/plans", json=plan()).raise_for_status()
        retired = a.post("/v1/plans/maps-pro/retire")
        assert retired.status_code == 200 and retired.json()["status"] == "retired"
        assert a.get("/v1/plans", params={"status": "retired"}).json()["data"][0]["code"] == (
            "maps-pro"
        )
        assert a.post("/v1/plans/maps-pro/versions", json={"plan": plan()}).status_code == 409
    with catalog.client("b") as b:
        assert b.post("/v1/plans/maps-pro/retire").status_code == 404
    with catalog.client("user") as user:
        assert user.get("/v1/plans/maps-pro").status_code == 404
        assert user.get("/v1/plans").json()["data"] == []


def test_quotes_inline_and_by_code_for_every_role(catalog: Catalog) -> None:
    with catalog.client("a") as a:
        a.post("/v1/plans", json=plan()).raise_for_status()
    inline = plan(
        charges=[
            {
                "metric": "api_calls",
                "model": "graduated",
                "tiers": [
                    {"up_to": 5, "unit_price": 7},
                    {"up_to": 10, "unit_price": "6.5"},
                    {"up_to": None, "unit_price": 6},
                ],
            }
        ]
    )
    for who in ("admin", "a", "user"):
        with catalog.client(who) as client:
            response = client.post(
                "/v1/quotes", json={"plan": inline, "usage": {"quantities": {"api_calls": 20}}}
            )
            assert response.status_code == 200, response.text
            assert response.json()["total"] == "157.5"
            by_code = client.post(
                "/v1/quotes",
                json={
                    "plan": "maps-pro",
                    "usage": {
                        "events": [{"metric": "api_calls", "timestamp": "2026-11-02T10:00:00Z"}] * 3
                    },
                },
            )
            assert by_code.json()["total"] == "30.03"
    with catalog.client("b") as b:
        assert b.post("/v1/quotes", json={"plan": "maps-pro", "usage": {}}).status_code == 404
    with catalog.client("user") as user:
        bad = user.post(
            "/v1/quotes",
            json={"plan": inline, "usage": {"events": [{"metric": "api_calls", "value": "-2"}]}},
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "usage.events[0].value"
        assert user.post("/v1/quotes", json={"plan": "nope", "usage": {}}).status_code == 404
    with catalog.client("user") as anyone:
        assert "/v1/quotes" in anyone.get("/openapi.json").json()["paths"]


def test_cli_quote(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    usage_file = tmp_path / "usage.json"
    plan_file.write_text(json.dumps(plan()))
    usage_file.write_text('{"quantities": {"api_calls": 0.000001}}')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "billfold.cli",
            "quote",
            "--plan",
            str(plan_file),
            "--usage",
            str(usage_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"] == "30.00000001"
    plan_file.write_text(json.dumps({**plan(), "currency": "XXX"}))
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "billfold.cli",
            "quote",
            "--plan",
            str(plan_file),
            "--usage",
            str(usage_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "currency" in bad.stderr
