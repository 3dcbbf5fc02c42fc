"""The FastAPI application."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from billfold import __version__, web
from billfold.alerts import router as alerts_router
from billfold.analytics import router as analytics_router
from billfold.api import errors, test_clock
from billfold.api.middleware import (
    BodyLimitMiddleware,
    IdempotencyMiddleware,
    RateLimitMiddleware,
    RequestLogMiddleware,
    SecurityHeadersMiddleware,
)
from billfold.authorizations import router as authorizations_router
from billfold.catalog import router as catalog_router
from billfold.core import router as core_router
from billfold.core.context import Context
from billfold.core.http import document_security
from billfold.identity import router as identity_router
from billfold.invoicing import router as invoicing_router
from billfold.ledger import router as ledger_router
from billfold.metering import router as metering_router
from billfold.parties import router as parties_router
from billfold.payments import router as payments_router
from billfold.prepaid import router as prepaid_router
from billfold.settlement import router as settlement_router
from billfold.subscriptions import router as subscriptions_router
from billfold.workers.housekeeping import Housekeeper


def create_app(ctx: Context, *, housekeeping: bool = False) -> FastAPI:
    """The app over `ctx`; with `housekeeping`, it also expires holds and old keys."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        housekeeper = Housekeeper(ctx) if housekeeping else None
        if housekeeper is not None:
            housekeeper.start()
        try:
            yield
        finally:
            if housekeeper is not None:
                housekeeper.stop()

    app = FastAPI(
        lifespan=lifespan,
        # Served by the console from local npm packages (billfold.web), never a CDN.
        docs_url=None,
        redoc_url=None,
        title="billfold",
        version=__version__,
        description="Billing for open platforms: metering, pricing, an exact double-entry "
        "ledger, invoices and payouts. Amounts are decimal strings; the contract is docs/API.md.",
    )
    app.state.ctx = ctx
    errors.install(app)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = errors.document_errors(document_security(default_openapi()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # FastAPI tries the routers in order, each route in turn, and matching a path costs
    # more per route than `GET /v1/me` does otherwise: the keys' own routes (six, among
    # them /v1/me, which gateways ask) come first (docs/DECISIONS.md, 122). No path of
    # one router is also a path of another, so the order changes no answer.
    for feature in (
        core_router,
        parties_router,
        identity_router,
        catalog_router,
        metering_router,
        authorizations_router,
        prepaid_router,
        payments_router,
        subscriptions_router,
        invoicing_router,
        analytics_router,
        settlement_router,
        alerts_router,
        ledger_router,
        test_clock,
    ):
        app.include_router(feature.router)
    app.include_router(core_router.health)
    web.install(app, errors.status_of)
    # Middleware runs outermost-last: the request id and log wrap everything, then the
    # body limit, then idempotency (which reads the body, already bounded).
    app.add_middleware(IdempotencyMiddleware, ctx=ctx)
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=ctx.settings.max_body_bytes,
        limits={"/v1/events": ctx.settings.max_event_body_bytes},
    )
    if ctx.settings.cors_origins:
        # Off unless configured: browsers may call the API only from these origins.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=ctx.settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    app.add_middleware(
        RateLimitMiddleware, limit=ctx.settings.rate_limit, redis_url=ctx.settings.redis_url
    )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestLogMiddleware)
    return app


SWITCH_INTERVAL_S = 0.0005
"""How long a thread may hold the GIL while another waits (Python's default: 5 ms)."""


def tune_interpreter(database_url: str) -> None:
    """Fewer, cheaper collections and, on PostgreSQL, a shorter GIL turn, for a
    long-running server.

    Ingestion allocates many short-lived objects per batch, and with the default
    thresholds Python also walks every long-lived object (catalog, SQLAlchemy, the app)
    many times a second. Freezing what start-up created takes it out of collections, and a
    higher first threshold collects less often: about 20% more events per second,
    measured on the ingestion path.

    A group commit's writer thread waits on the database a dozen times per request; each
    time its answer is in, the thread must win the GIL back from the event loop, which may
    keep it for the whole switch interval. At Python's 5 ms, those waits, not the database,
    bounded PostgreSQL's charges; at 0.5 ms charges there ran about 1.7 times as fast.
    SQLite answers in microseconds, and its routes ran about 10% slower at 0.5 ms, so
    there Python's default stays (DECISIONS 106).
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    if database_url.startswith("postgresql"):
        sys.setswitchinterval(SWITCH_INTERVAL_S)


def app_from_environment() -> FastAPI:
    """The app of one `billfold serve --workers N` process, configured from BILLFOLD_*.

    The parent process has already created or upgraded the schema.
    """
    from billfold.config import Settings
    from billfold.core.context import build_context
    from billfold.logging import configure

    settings = Settings()
    configure(settings.log_level, json=settings.log_json)
    app = create_app(build_context(settings, migrate=False), housekeeping=True)
    tune_interpreter(settings.resolved_database_url())
    return app
