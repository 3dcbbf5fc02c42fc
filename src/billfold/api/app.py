"""The FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from billfold import __version__
from billfold.api import errors
from billfold.api.middleware import BodyLimitMiddleware, IdempotencyMiddleware, RequestLogMiddleware
from billfold.api.routers import admin, catalog, parties, usage
from billfold.services.context import Context


def create_app(ctx: Context) -> FastAPI:
    app = FastAPI(
        title="billfold",
        version=__version__,
        description="Billing for open platforms: metering, pricing, an exact double-entry "
        "ledger, invoices and payouts. Amounts are decimal strings; see API.md.",
    )
    app.state.ctx = ctx
    errors.install(app)
    app.include_router(parties.router)
    app.include_router(catalog.router)
    app.include_router(usage.router)
    app.include_router(admin.router)
    app.include_router(admin.health)
    # Middleware runs outermost-last: the request id and log wrap everything, then the
    # body limit, then idempotency (which reads the body, already bounded).
    app.add_middleware(IdempotencyMiddleware, ctx=ctx)
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=ctx.settings.max_body_bytes,
        limits={"/v1/events": ctx.settings.max_event_body_bytes},
    )
    app.add_middleware(RequestLogMiddleware)
    return app
