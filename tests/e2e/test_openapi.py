"""The OpenAPI document describes what the server really sends."""

from __future__ import annotations

import re

import httpx

from billfold.api.errors import ErrorBody
from tests.conftest import LiveServer


def test_the_document_has_the_real_errors_and_no_422(server: LiveServer) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            if path.startswith("/v1/"):
                for status in ("400", "401", "404", "429"):
                    ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/ErrorBody", (method, path, status)
                if method == "post":
                    assert {"409", "413"} <= set(responses), (method, path)
    exports = spec["paths"]["/v1/exports/{kind}.csv"]["get"]["responses"]["200"]["content"]
    assert "text/csv" in exports
    pdf = spec["paths"]["/v1/invoices/{invoice_id}.pdf"]["get"]["responses"]["200"]["content"]
    assert "application/pdf" in pdf


def test_errors_are_the_documented_body(server: LiveServer, admin: httpx.Client) -> None:
    for answer in (
        admin.post("/v1/users", json={"name": "x"}),  # 400
        httpx.get(f"{server.url}/v1/me"),  # 401
        admin.get("/v1/users/usr_nobody"),  # 404
        admin.post("/v1/events", content=b"not json"),  # 400
        admin.get("/v1/users/%00"),  # 400, from the middleware
    ):
        assert answer.status_code in (400, 401, 404), answer.text
        ErrorBody.model_validate(answer.json())


def test_the_document_asks_for_a_key_exactly_where_the_server_does(server: LiveServer) -> None:
    # get_principal reads the key itself, out of FastAPI's sight (DECISIONS 124): each
    # operation must still name the bearer scheme, and only those that ask for a key.
    spec = httpx.get(f"{server.url}/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["HTTPBearer"]
    assert scheme == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: admin, provider or user.",
    }
    asked, documented = set(), set()
    with httpx.Client(base_url=server.url) as anonymous:
        for path, operations in spec["paths"].items():
            if not path.startswith("/v1/"):
                continue
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            for method, operation in operations.items():
                if operation.get("security") == [{"HTTPBearer": []}]:
                    documented.add((method, path))
                answer = anonymous.request(method.upper(), concrete, json={})
                if answer.status_code == 401 and answer.json()["error"]["code"] == (
                    "missing_api_key"
                ):
                    asked.add((method, path))
    assert len(asked) > 100
    assert asked == documented
