"""Routing: routers skipped by a path's first segment still route every path as before,
and no path of one API router is a path of another (so their order changes no answer)."""

from __future__ import annotations

import importlib
import re

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from billfold.core.http import SegmentRouter, path_key

FEATURES = (
    "core",
    "parties",
    "identity",
    "catalog",
    "metering",
    "authorizations",
    "prepaid",
    "payments",
    "subscriptions",
    "invoicing",
    "analytics",
    "settlement",
    "alerts",
    "ledger",
)


def test_path_keys() -> None:
    assert path_key("/v1/users/usr_1/balance") == "users"
    assert path_key("/v1/me") == "me"
    assert path_key("/healthz") == "healthz"
    assert path_key("/v1") == "v1"
    assert path_key("/") == ""


def test_a_router_is_skipped_only_for_paths_none_of_its_routes_can_match() -> None:
    users = SegmentRouter(prefix="/v1")
    charges = SegmentRouter(prefix="/v1")
    anything = SegmentRouter()

    @users.get("/users/{user_id}")
    def user(user_id: str) -> dict[str, str]:
        return {"router": "users", "id": user_id}

    @charges.post("/charges")
    def charge() -> dict[str, str]:
        return {"router": "charges"}

    @anything.get("/{page}")
    def page(page: str) -> dict[str, str]:
        return {"router": "anything", "page": page}

    app = FastAPI()
    for router in (users, charges, anything):
        app.include_router(router)
    with TestClient(app) as client:
        assert client.get("/v1/users/u1").json() == {"router": "users", "id": "u1"}
        assert client.post("/v1/charges").json() == {"router": "charges"}
        # The path is the charges router's, the method is not: 405, as without skipping.
        assert client.get("/v1/charges").status_code == 405
        assert client.get("/v1/nothing/here").status_code == 404
        # A router whose route takes any first segment is always tried.
        assert client.get("/login").json() == {"router": "anything", "page": "login"}
    # What each router is tried for: its routes' first segments, or everything.
    assert (users._keys, charges._keys, anything._keys) == (
        frozenset({"users"}),
        frozenset({"charges"}),
        frozenset(),
    )


def test_no_path_of_one_api_router_is_a_path_of_another() -> None:
    routers = {name: importlib.import_module(f"billfold.{name}.router").router for name in FEATURES}
    routes = [
        (name, route)
        for name, router in routers.items()
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    clashes = [
        (a, first.path, b, second.path)
        for a, first in routes
        for b, second in routes
        if a < b
        and first.methods & second.methods
        and (
            first.path_regex.match(re.sub(r"\{[^}]+\}", "x1", second.path))
            or second.path_regex.match(re.sub(r"\{[^}]+\}", "x1", first.path))
        )
    ]
    assert clashes == []
