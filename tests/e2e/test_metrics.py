"""GET /metrics: Prometheus' text, for the operator or the scrape token only, with labels
that are route templates, and one sum over all of `serve --workers`' processes."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from tests.conftest import LiveServer, make_context
from tests.e2e.test_crash import serve
from tests.integration.helpers import funded_user, metered_catalog

PLAN = {
    "code": "maps-payg",
    "name": "Pay as you go",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.01"}],
}
TOKEN = "m" * 40


def value(text: str, name: str, **labels: str) -> float:
    """A sample's value in Prometheus' text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        if found == labels:
            return float(match[3])
    return 0.0


def scrape(client: httpx.Client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_metrics_count_requests_by_route_template_and_events_by_outcome(
    ctx: Context, server: LiveServer, admin_key: str
) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "10")
    key = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)[1]
    with server.client(admin_key) as admin, server.client(key) as provider:
        before = scrape(admin)
        assert admin.get(f"/v1/users/{user}").status_code == 200
        assert admin.get("/v1/no-such-route").status_code == 404
        now = ctx.clock.now().isoformat()
        event = {"user": user, "service": "maps", "metric": "calls", "timestamp": now}
        answer = provider.post(
            "/v1/events",
            json={"events": [{**event, "id": "a"}, {**event, "id": "a"}, {**event, "id": ""}]},
        ).json()
        assert (answer["accepted"], answer["duplicates"], len(answer["rejected"])) == (1, 1, 1)
        after = scrape(admin)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # A route's template is its label, never a user's id or an unknown path.
    assert grew("billfold_http_requests_total", method="GET", route="/v1/users/{user_id}",
                status="200") == 1  # fmt: skip
    assert grew("billfold_http_requests_total", method="GET", route="(unmatched)",
                status="404") == 1  # fmt: skip
    assert user not in after and "no-such-route" not in after
    assert grew("billfold_http_request_duration_seconds_count", method="POST",
                route="/v1/events") == 1  # fmt: skip
    assert grew("billfold_usage_events_total", outcome="accepted") == 1
    assert grew("billfold_usage_events_total", outcome="duplicate") == 1
    assert grew("billfold_usage_events_total", outcome="rejected") == 1
    assert grew("billfold_usage_transfers_total") == 1
    assert grew("billfold_group_commit_size_count", kind="usage") == 1


def test_metrics_are_for_the_operator_or_the_scrape_token(
    ctx: Context, server: LiveServer, admin_key: str
) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "10")
    provider_key = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)[1]
    user_key = ctx.run(create_key, SYSTEM, role=Role.USER, user_id=user)[1]
    with server.client() as anonymous:
        refused = anonymous.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "missing_api_key"
        assert (
            anonymous.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
            == 401
        )
    for key in (provider_key, user_key):
        with server.client(key) as client:
            refused = client.get("/metrics")
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "admin_only"
    ctx.settings = ctx.settings.model_copy(update={"metrics_token": TOKEN})
    with server.client(TOKEN) as scraper:
        assert "billfold_http_requests_total" in scrape(scraper)
    with server.client("m" * 39 + "n") as wrong:
        assert wrong.get("/metrics").status_code == 401
    with server.client(admin_key) as admin:
        scrape(admin)


def test_a_scrape_of_any_worker_adds_up_every_worker(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    setup = make_context(sqlite_database_url, tmp_path)
    key = setup.run(create_key, SYSTEM, role=Role.ADMIN, name="scrape")[1]
    setup.db.dispose()
    seen = set()
    headers = {"Authorization": f"Bearer {key}"}
    with serve(sqlite_database_url, tmp_path, workers=2) as (_process, base):
        for _ in range(40):
            # New connections, so that both workers answer some.
            assert httpx.get(f"{base}/healthz").status_code == 200
        for _ in range(6):
            # Each scrape on a new connection too, answered by whichever worker takes it.
            with httpx.Client(base_url=base, headers=headers) as client:
                text = scrape(client)
            labels = {"method": "GET", "route": "/healthz", "status": "200"}
            seen.add(value(text, "billfold_http_requests_total", **labels))
    # serve's own readiness checks add a few; every scrape, whichever worker, saw the sum.
    assert len(seen) == 1 and seen.pop() >= 40


@pytest.mark.parametrize("path", ["/metrics"])
def test_metrics_is_in_the_openapi_document_with_its_errors(server: LiveServer, path: str) -> None:
    with server.client() as client:
        operation = client.get("/openapi.json").json()["paths"][path]["get"]
    assert {"200", "401", "403"} <= set(operation["responses"])
    assert "text/plain" in operation["responses"]["200"]["content"]
