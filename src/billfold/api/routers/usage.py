"""Usage events, authorizations and entitlements: the real-time path."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse

from billfold.api.auth import get_context, get_principal
from billfold.api.exact_json import ExactJSONRoute
from billfold.api.schemas import (
    AuthorizationCapture,
    AuthorizationCreate,
    AuthorizationOut,
    DefaultPlanSet,
    EntitlementsOut,
    IngestOut,
)
from billfold.domain.errors import InvalidRequest
from billfold.services import limits, metering
from billfold.services.access import Principal
from billfold.services.context import Context

router = APIRouter(prefix="/v1", route_class=ExactJSONRoute, tags=["usage and limits"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]
EVENT_EXAMPLE = {
    "id": "evt_123",
    "user": "usr_...",
    "service": "maps",
    "metric": "api_calls",
    "timestamp": "2026-11-23T01:30:00Z",
    "value": "1",
}


@router.post(
    "/events",
    response_model=IngestOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object"},
                    "examples": {
                        "one": {"value": EVENT_EXAMPLE},
                        "batch": {"value": {"events": [EVENT_EXAMPLE]}},
                    },
                },
                "application/cloudevents+json": {"schema": {"type": "object"}},
                "application/cloudevents-batch+json": {"schema": {"type": "array"}},
            },
        }
    },
)
async def ingest_events(request: Request, ctx: Ctx, who: Who) -> Any:
    """Records usage: one EVENT, {"events": [...]} (up to 10,000), or CloudEvents 1.0.

    Each event is checked on its own; valid ones are stored, rated and charged before the
    response is sent, and the response lists every rejected event's index and error.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.json()
    cloudevents = content_type.startswith("application/cloudevents")
    if content_type == "application/cloudevents-batch+json":
        if not isinstance(body, list):
            raise InvalidRequest("a CloudEvents batch is a JSON array", param="body")
        items, single = body, False
    elif cloudevents or not (isinstance(body, dict) and "events" in body):
        items, single = [body], True
    else:
        if set(body) != {"events"} or not isinstance(body["events"], list):
            raise InvalidRequest('a batch is {"events": [EVENT, ...]}', param="events")
        items, single = body["events"], False
    from starlette.concurrency import run_in_threadpool

    result = await run_in_threadpool(metering.ingest, ctx, who, items, cloudevents=cloudevents)
    out = IngestOut.of(result)
    if single and result.rejected:
        rejection = result.rejected[0]
        return JSONResponse(
            {
                "error": {
                    "type": "invalid_request"
                    if rejection.code
                    not in ("user_not_found", "service_not_found", "metric_not_found")
                    else "not_found",
                    "code": rejection.code,
                    "message": rejection.message,
                    "param": rejection.param,
                }
            },
            status_code=404 if rejection.code.endswith("_not_found") else 400,
        )
    return out


@router.post(
    "/authorizations", response_model=AuthorizationOut, responses={201: {"model": AuthorizationOut}}
)
def authorize(body: AuthorizationCreate, ctx: Ctx, who: Who) -> JSONResponse:
    """May this user use this much now? An approval (201) holds the funds; a decline is 200."""
    result = limits.authorize(
        ctx,
        who,
        user_ref=body.user,
        service_code=body.service,
        metric_code=body.metric,
        quantity=body.quantity,
        amount=body.amount,
        expires_in_s=body.expires_in,
    )
    status = 201 if result.status == "approved" else 200
    return JSONResponse(AuthorizationOut.of(result).model_dump(mode="json"), status_code=status)


@router.get("/authorizations/{auth_id}", response_model=AuthorizationOut)
def get_authorization(auth_id: str, ctx: Ctx, who: Who) -> AuthorizationOut:
    return AuthorizationOut.of(limits.get_authorization(ctx, who, auth_id))


@router.post("/authorizations/{auth_id}/capture", response_model=AuthorizationOut)
def capture(
    auth_id: str, ctx: Ctx, who: Who, body: Annotated[AuthorizationCapture | None, Body()] = None
) -> AuthorizationOut:
    """Charges the authorized use: the quantity used (default: as authorized) or an amount."""
    body = body or AuthorizationCapture()
    return AuthorizationOut.of(
        limits.capture(ctx, who, auth_id, quantity=body.quantity, amount=body.amount)
    )


@router.post("/authorizations/{auth_id}/void", response_model=AuthorizationOut)
def void(auth_id: str, ctx: Ctx, who: Who) -> AuthorizationOut:
    """Releases the held funds."""
    return AuthorizationOut.of(limits.void(ctx, who, auth_id))


@router.get("/users/{user_id}/entitlements", response_model=EntitlementsOut)
def entitlements(
    user_id: str, ctx: Ctx, who: Who, service: Annotated[str, Query(max_length=64)]
) -> EntitlementsOut:
    """Whether the user may use the service now, why, and the included quota left."""
    return EntitlementsOut.of(limits.entitlements(ctx, who, user_id, service))


@router.post("/services/{code}/default-plan", status_code=204)
def set_default_plan(code: str, body: DefaultPlanSet, ctx: Ctx, who: Who) -> None:
    """The plan that prices usage by users without a subscription (pay-as-you-go)."""
    metering.set_default_plan(ctx, who, code, body.plan)
