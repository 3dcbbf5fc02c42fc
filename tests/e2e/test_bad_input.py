"""Bad input is a 4xx, always, and changes nothing; valid events beside it are kept.

Over real HTTP, on SQLite and PostgreSQL (where a NUL or a lone surrogate reaching the
database would be a server error, not a refusal).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cloudevents.v1.conversion import to_binary
from cloudevents.v1.http import CloudEvent
from sqlalchemy import func, select

from billfold.core.context import Context
from billfold.store.ledger_tables import transfers
from billfold.store.tables import plan_versions, subscriptions, usage_events

PLAN = {
    "code": "maps-payg",
    "name": "Maps",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.01"}],
}
MONTHLY = {**PLAN, "code": "maps-monthly", "interval": "month", "fixed_fee": "1"}


@dataclass
class Platform:
    admin: httpx.Client
    provider: str
    user: str


@pytest.fixture
def platform(ctx: Context, admin: httpx.Client) -> Iterator[Platform]:
    provider = admin.post(
        "/v1/providers", json={"name": "P", "email": "p@p.io", "commission_rate": "0.2"}
    ).json()["id"]
    admin.post("/v1/services", json={"provider_id": provider, "code": "maps", "name": "Maps"})
    admin.post(
        "/v1/services/maps/metrics", json={"code": "calls", "name": "Calls", "aggregation": "count"}
    )
    assert admin.post("/v1/plans", json=PLAN).status_code == 201
    assert admin.post("/v1/plans", json=MONTHLY).status_code == 201
    user = admin.post("/v1/users", json={"name": "U", "email": "u@u.io", "currency": "USD"}).json()[
        "id"
    ]
    assert admin.post(f"/v1/users/{user}/top-ups", json={"amount": "10"}).status_code == 201
    payg = admin.post("/v1/subscriptions", json={"user": user, "service": "maps"})
    assert payg.status_code == 201, payg.text
    yield Platform(admin, provider, user)


def _state(ctx: Context) -> dict[str, int]:
    with ctx.work(read_only=True) as work:
        return {
            table.name: int(work.conn.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (usage_events, transfers, subscriptions, plan_versions)
        }


def _refused(answer: httpx.Response) -> None:
    assert 400 <= answer.status_code < 500, answer.text
    body = answer.json()["error"]
    assert body["type"] and body["code"] and body["message"]


def _event(platform: Platform, event_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "user": platform.user, "service": "maps", "metric": "calls", **extra}


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"", "application/json"),
        (b"hello", "application/json"),
        (b'{"id": "\xff\xfe"}', "application/json"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),
        (b'{"events": 3}', "application/json"),
        (b"{}", "application/cloudevents-batch+json"),
        (b'{"id": "a\\u0000b", "service": "maps", "metric": "calls"}', "application/json"),
        (b'{"id": "a\\ud800b", "service": "maps", "metric": "calls"}', "application/json"),
        (b'{"events": [{"id": "x", "properties": {"k\\u0000": 1}}]}', "application/json"),
    ],
)
def test_malformed_event_bodies_are_refused(
    ctx: Context, platform: Platform, content: bytes, content_type: str
) -> None:
    before = _state(ctx)
    _refused(
        platform.admin.post("/v1/events", content=content, headers={"content-type": content_type})
    )
    assert _state(ctx) == before


def test_events_with_dates_near_year_1_or_9999_are_refused_one_by_one(
    ctx: Context, platform: Platform
) -> None:
    answer = platform.admin.post(
        "/v1/events",
        json={
            "events": [
                _event(platform, "early", timestamp="0001-01-01T00:00:00Z"),
                _event(platform, "fine"),
                _event(platform, "late", timestamp="9999-12-31T23:59:59Z"),
            ]
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [0, 2]


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("post", "/v1/quotes", {"plan": "maps-payg", "usage": {}, "at": "9999-12-31T23:59:59Z"}),
        (
            "post",
            "/v1/quotes",
            {
                "plan": "maps-payg",
                "usage": {"events": [{"metric": "calls", "timestamp": "0001-01-01T00:00:00Z"}]},
            },
        ),
        ("get", "/v1/users/{user}/balance?as_of=0001-01-01T00:00:00Z", None),
        ("get", "/v1/analytics/usage?from=9999-12-31T00:00:00Z&to=9999-12-31T23:45:00Z", None),
        ("get", "/v1/analytics/revenue?from=0001-01-01T00:00:00Z&to=0001-01-02T00:00:00Z", None),
        (
            "get",
            "/v1/analytics/subscriptions?from=0001-01-01T00:00:00Z&to=9999-01-01T00:00:00Z",
            None,
        ),
        ("get", "/v1/providers/{provider}/statements?period=9999-12", None),
        ("get", "/v1/providers/{provider}/statements?period=0001-01", None),
        ("get", "/v1/reports/commission?period=9999-12", None),
        ("get", "/v1/exports/usage.csv?period=9999-12", None),
        (
            "post",
            "/v1/subscriptions",
            {"user": "{user}", "plan": "maps-monthly", "start": "0001-01-01T00:00:00Z"},
        ),
        (
            "post",
            "/v1/plans/maps-payg/versions",
            {"plan": PLAN, "effective_from": "9999-12-31T23:59:59Z"},
        ),
    ],
)
def test_times_near_year_1_or_9999_are_refused_everywhere(
    ctx: Context, platform: Platform, method: str, path: str, payload: dict[str, Any] | None
) -> None:
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.format(user=platform.user, provider=platform.provider)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    before = _state(ctx)
    answer = platform.admin.request(method, fill(path), json=fill(payload))
    _refused(answer)
    assert _state(ctx) == before


@pytest.mark.parametrize("amount", ["1_000", "１０", " 10 ", "10 ", "1e2", "+5", "0x10", ""])
def test_amounts_outside_the_pattern_are_refused(
    ctx: Context, platform: Platform, amount: str
) -> None:
    before = _state(ctx)
    answer = platform.admin.post(f"/v1/users/{platform.user}/top-ups", json={"amount": amount})
    _refused(answer)
    assert answer.json()["error"]["param"] == "amount"
    assert _state(ctx) == before


@pytest.mark.parametrize(
    "path", ["/v1/users/%00", "/v1/users/a%00b", "/v1/services?limit=1%00", "/v1/plans/%00x"]
)
def test_urls_with_nul_are_refused(platform: Platform, path: str) -> None:
    _refused(platform.admin.get(path))


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "a\u0000b", "email": "x@x.io", "currency": "USD"},
        {"name": "a\ud800b", "email": "x@x.io", "currency": "USD"},
        {"name": "ok", "email": "x\u0000@x.io", "currency": "USD"},
    ],
)
def test_text_with_nul_or_lone_surrogates_never_reaches_the_database(
    ctx: Context, platform: Platform, payload: dict[str, str]
) -> None:
    before = _state(ctx)
    # httpx would refuse to encode a lone surrogate, so the body is written by hand.
    import json as _json

    content = _json.dumps(payload, ensure_ascii=True).encode()
    answer = platform.admin.post(
        "/v1/users", content=content, headers={"content-type": "application/json"}
    )
    _refused(answer)
    assert _state(ctx) == before


def test_binary_mode_cloudevents_are_accepted(ctx: Context, platform: Platform) -> None:
    event = CloudEvent(
        {
            "type": "calls",
            "source": "gateway",
            "subject": platform.user,
            "id": "ce-binary-1",
            "time": ctx.clock.now().isoformat(),
        },
        {"service": "maps", "value": 3},
    )
    headers, body = to_binary(event)
    answer = platform.admin.post(
        "/v1/events", content=body, headers={**headers, "content-type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
    again = platform.admin.post(
        "/v1/events", content=body, headers={**headers, "content-type": "application/json"}
    )
    assert again.json()["duplicates"] == 1
