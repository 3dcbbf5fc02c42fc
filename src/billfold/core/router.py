"""API keys, who am I, and health."""

from __future__ import annotations

import hmac
from typing import Annotated

import structlog
from fastapi import Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials

from billfold.core import audit, keys
from billfold.core.access import Principal, Role
from billfold.core.context import Context
from billfold.core.http import (
    Limit,
    Read,
    SegmentRouter,
    UnitOfWorkRoute,
    Write,
    bearer,
    get_context,
    get_principal,
    json_answer,
    maybe_aware,
)
from billfold.core.metrics import exposition, observe_lag
from billfold.core.schemas import (
    ApiKeyCreate,
    ApiKeyOut,
    ApiKeyRotate,
    AuditEventOut,
    HealthOut,
    ListOf,
    MeOut,
    Moment,
)
from billfold.core.stream import EventStream, consumer_name, state
from billfold.domain.errors import PermissionDenied

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["operator"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]


@router.get("/me", response_model=MeOut)
async def whoami(who: Who) -> Response:
    """The role and party of the API key in use."""
    # Encoded once, not validated again on the way out: a gateway may ask this often.
    return json_answer(
        MeOut(
            key_id=who.key_id, role=str(who.role), provider_id=who.provider_id, user_id=who.user_id
        )
    )


@router.post("/api-keys", status_code=201, response_model=ApiKeyOut)
def create_api_key(body: ApiKeyCreate, work: Write, who: Who) -> ApiKeyOut:
    """A new API key; its secret is in this answer only (the operator for anyone; a
    provider or a user for itself)."""
    key, secret = keys.create_key(
        work,
        who,
        role=Role(body.role) if body.role else None,
        provider_id=body.provider_id,
        user_id=body.user_id,
        name=body.name,
        expires_at=maybe_aware(body.expires_at, "expires_at"),
        scopes=body.scopes,
    )
    return ApiKeyOut.of(key, secret)


@router.get("/api-keys", response_model=ListOf[ApiKeyOut])
def list_api_keys(work: Read, who: Who, limit: Limit = 100) -> ListOf[ApiKeyOut]:
    """The asker's keys (the operator: all), never their secrets."""
    found = keys.list_keys(work, who, limit=limit)
    return ListOf[ApiKeyOut](data=[ApiKeyOut.of(k) for k in found], has_more=False)


@router.post("/api-keys/{key_id}/rotate", status_code=201, response_model=ApiKeyOut)
def rotate_api_key(key_id: str, body: ApiKeyRotate, work: Write, who: Who) -> ApiKeyOut:
    """A new key in the old one's place; the old one works for `grace_s` more seconds."""
    key, secret = keys.rotate_key(work, who, key_id, grace_s=body.grace_s)
    return ApiKeyOut.of(key, secret)


@router.post("/api-keys/{key_id}/revoke", status_code=204, response_class=Response)
def revoke_api_key(key_id: str, work: Write, who: Who) -> Response:
    """Stops a key at once."""
    keys.revoke_key(work, who, key_id)
    return Response(status_code=204)


@router.get("/audit-events", response_model=ListOf[AuditEventOut])
def list_audit_events(
    work: Read,
    who: Who,
    actor: Annotated[str | None, Query(max_length=64, description="An API key id.")] = None,
    object: Annotated[
        str | None, Query(max_length=300, description="TYPE or TYPE:ID, e.g. user:usr_1.")
    ] = None,
    start: Annotated[Moment | None, Query(alias="from")] = None,
    to: Annotated[Moment | None, Query()] = None,
    limit: Limit = 100,
    starting_after: Annotated[int | None, Query(ge=1)] = None,
) -> ListOf[AuditEventOut]:
    """Who did what, when, to which object (the operator: all; a provider: its own
    actions and its own provider object), newest first."""
    object_type, _, object_id = (object or "").partition(":")
    found = audit.entries(
        work,
        who,
        actor=actor,
        object_type=object_type or None,
        object_id=object_id or None,
        since=maybe_aware(start, "from"),
        until=maybe_aware(to, "to"),
        limit=limit + 1,
        before_id=starting_after,
    )
    return ListOf[AuditEventOut](
        data=[AuditEventOut.of(e) for e in found[:limit]], has_more=len(found) > limit
    )


log = structlog.get_logger("billfold.api")
health = SegmentRouter(tags=["operator"])
ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


@health.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Prometheus' text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        401: {"description": "No operator's key and not the metrics token", "content": ERROR},
        403: {"description": "A key that is not an operator's", "content": ERROR},
    },
)
async def metrics(
    request: Request,
    ctx: Ctx,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Response:
    """The process's Prometheus metrics (with `serve --workers`, all its processes'):
    requests and latencies by route, usage events by outcome, group-commit sizes, the
    usage stream's lag (with BILLFOLD_NATS_URL). For an
    operator's key, or the scrape token `BILLFOLD_METRICS_TOKEN`."""
    token = ctx.settings.metrics_token
    given = credentials.credentials if credentials is not None else ""
    if token is None or not hmac.compare_digest(given.encode(), token.encode()):
        who = await get_principal(request)
        if who.role != Role.ADMIN:
            raise PermissionDenied("metrics are for the operator", code="admin_only")
    if ctx.settings.nats_url:
        # The stream's lag as JetStream reports it now (a worker reports it too).
        stream = EventStream.of(ctx)
        try:
            observe_lag((await state(stream, consumer_name)).lag)
        except Exception:  # A scrape still answers while NATS is away.
            log.warning("stream_lag_unknown", exc_info=True)
    body, content_type = exposition()
    return Response(body, media_type=content_type)


@health.get("/healthz", response_model=HealthOut)
async def healthz() -> HealthOut:
    """The server is up (no database work; for load balancers)."""
    return HealthOut()
