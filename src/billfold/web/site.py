"""Puts the console on the app: its pages, its static files and the npm packages it
loads (Chart.js, Swagger UI, ReDoc), served by billfold itself, never from a CDN."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from billfold.domain.errors import BillfoldError
from billfold.web import admin, prepaid, provider, public, user
from billfold.web.console import (
    _ENVIRONMENTS,
    FormRefused,
    NotHere,
    Redirect,
    Viewer,
    person,
    render,
    say,
    viewer,
)

STATIC: Final = Path(__file__).resolve().parent / "static"
NODE_MODULES: Final = Path(__file__).resolve().parents[3] / "node_modules"
"""Where `make` installs the npm packages of package.json (its lock file is committed)."""
ASSETS: Final = {
    "/assets/chart.js": "chart.js/dist",
    "/assets/swagger-ui": "swagger-ui-dist",
}
REDOC_BUNDLE: Final = NODE_MODULES / "redoc" / "bundles" / "redoc.standalone.js"
REDOC_LOGO: Final = "https://cdn.redoc.ly/redoc/logo-mini.svg"
"""ReDoc's bundle draws its maker's logo from this address, whatever its options say; the
bundle is served with it pointed at an empty local image, so /redoc needs no internet."""
EMPTY_IMAGE: Final = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"
log = structlog.get_logger("billfold.web")

MACHINE_PATHS = frozenset({"/metrics", "/healthz"})
"""Paths outside /v1 that programs call: their errors are the API's JSON, not a page."""


def nav_items(seen: Viewer) -> list[tuple[str, str]]:
    t = seen.t
    if seen.role == "user":
        return [
            ("/", t("Home")),
            ("/catalog", t("Catalog")),
            ("/subscriptions", t("Subscriptions")),
            ("/usage", t("Usage")),
            ("/wallet", t("Wallet")),
            ("/packages", t("Resource packages")),
            ("/invoices", t("Invoices")),
            ("/alerts", t("Budget")),
            ("/keys", t("API keys")),
            ("/account", t("Account")),
        ]
    if seen.role == "provider":
        return [
            ("/", t("Home")),
            ("/provider/services", t("Services")),
            ("/provider/plans", t("Plans")),
            ("/provider/packages", t("Resource packages")),
            ("/provider/customers", t("Customers")),
            ("/usage", t("Usage")),
            ("/provider/statements", t("Statements")),
            ("/provider/events", t("Events")),
            ("/keys", t("API keys")),
            ("/account", t("Account")),
        ]
    return [
        ("/", t("Platform")),
        ("/admin/providers", t("Providers")),
        ("/admin/users", t("Users")),
        ("/admin/coupons", t("Coupons")),
        ("/invoices", t("Invoices")),
        ("/admin/dunning", t("Dunning")),
        ("/admin/operations", t("Checks")),
        ("/admin/audit", t("Audit trail")),
        ("/account", t("Account")),
    ]


def _flash_text(raw: str) -> str:
    return unquote(raw)[:500]


for _env in _ENVIRONMENTS.values():
    _env.globals.update(nav_items=nav_items, flash_text=_flash_text)


def install(app: FastAPI, status_of: Callable[[BillfoldError], int]) -> None:
    """The console's routes, files and error pages; the API keeps its JSON errors."""

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        seen = person(request)
        if seen.role == "user":
            return user.user_home(request, seen)
        if seen.role == "provider":
            return provider.provider_home(request, seen)
        return admin.admin_home(request, seen)

    for module in (public, user, provider, prepaid, admin):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for prefix, folder in ASSETS.items():
        where = NODE_MODULES / folder
        if not where.is_dir():
            log.warning("console_assets_missing", folder=str(where), fix="run make")
        app.mount(prefix, StaticFiles(directory=where, check_dir=False), name=prefix)

    redoc_bundle: list[bytes] = []

    @app.get("/assets/redoc/redoc.standalone.js", include_in_schema=False)
    def redoc_bundle_js() -> Response:
        if not redoc_bundle:
            if not REDOC_BUNDLE.is_file():
                return Response("ReDoc is not installed: run make", status_code=404)
            text = REDOC_BUNDLE.read_text(encoding="utf-8").replace(REDOC_LOGO, EMPTY_IMAGE)
            redoc_bundle.append(text.encode())
        return Response(
            redoc_bundle[0],
            media_type="text/javascript; charset=utf-8",
            headers={"cache-control": "public, max-age=86400"},
        )

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="billfold API",
            swagger_js_url="/assets/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/assets/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/assets/swagger-ui/favicon-32x32.png",
            # No badge from the public validator: the page needs nothing from outside.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="billfold API",
            redoc_js_url="/assets/redoc/redoc.standalone.js",
            redoc_favicon_url="/assets/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )

    api_errors = app.exception_handlers.get(BillfoldError)

    async def on_redirect(_request: Request, signal: Exception) -> Response:
        assert isinstance(signal, Redirect)
        return RedirectResponse(signal.location, status_code=303)

    async def on_not_here(request: Request, _signal: Exception) -> Response:
        seen = viewer(request)
        return render(
            request,
            seen,
            "console/error.html",
            status=404,
            title=seen.t("Not found"),
            message=seen.t("There is no such page, or it is not yours to see."),
        )

    async def on_refused(request: Request, signal: Exception) -> Response:
        assert isinstance(signal, FormRefused)
        seen = viewer(request)
        return render(
            request,
            seen,
            "console/error.html",
            status=403,
            title=seen.t("Refused"),
            message=signal.message,
        )

    async def on_error(request: Request, error: Exception) -> Any:
        assert isinstance(error, BillfoldError)
        machine = request.url.path.startswith("/v1/") or request.url.path in MACHINE_PATHS
        if machine and api_errors is not None:
            return await api_errors(request, error)  # type: ignore[misc]
        seen = viewer(request)
        status = status_of(error)
        title = seen.t("Not found") if status == 404 else seen.t("Something is wrong")
        return render(
            request,
            seen,
            "console/error.html",
            status=status,
            title=title,
            message=say(seen, error),
        )

    app.add_exception_handler(Redirect, on_redirect)
    app.add_exception_handler(NotHere, on_not_here)
    app.add_exception_handler(FormRefused, on_refused)
    app.add_exception_handler(BillfoldError, on_error)
