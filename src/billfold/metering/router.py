"""Usage events and default plans."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from starlette.concurrency import run_in_threadpool

from billfold import metering
from billfold.core import idempotency, metrics
from billfold.core.access import Principal, Role, require_role
from billfold.core.context import Context
from billfold.core.http import (
    SegmentRouter,
    UnitOfWorkRoute,
    Write,
    get_context,
    get_principal,
    key_recorded,
    key_reserved,
    pending_claim,
    replay_answer,
)
from billfold.core.stream import HOLDERS, EventStream, consumer_name, lock_key, messages
from billfold.core.stream import state as stream_status
from billfold.domain.errors import InvalidRequest, NotFound, StreamUnavailable
from billfold.metering.schemas import DefaultPlanSet, IngestOut, StreamOut

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["usage"])
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
    responses={
        503: {
            "description": "With the usage stream: JetStream did not acknowledge the "
            "events (stream_unavailable); send them again with the same ids",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
    },
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
    body = await _json_body(request)
    cloudevents = content_type.startswith("application/cloudevents")
    if "ce-specversion" in request.headers:
        # CloudEvents in binary mode: the attributes in ce-* headers, the data as the body.
        body, cloudevents = _binary_cloudevent(request, body), True
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
    claim = pending_claim(request)
    if ctx.settings.nats_url:
        if claim is not None:
            # No transaction here to claim it in: reserved first, as for any route.
            earlier = await run_in_threadpool(
                idempotency.reserve, ctx, claim.reservation, claim.path, claim.digest
            )
            if earlier is not None:
                key_recorded(request)
                return replay_answer(earlier)
            key_reserved(request)
        result = await _publish(ctx, who, items, cloudevents)
        return _answer(_outcome(result, single, streamed=True))
    keyed = None
    if claim is not None:
        keyed = metering.Keyed(claim, lambda result: _outcome(result, single))
    result = await run_in_threadpool(
        partial(metering.ingest, ctx, who, items, cloudevents=cloudevents, keyed=keyed)
    )
    if keyed is not None and keyed.replay is not None:
        key_recorded(request)
        return replay_answer(keyed.replay)
    if keyed is not None and keyed.answered is not None:
        key_recorded(request)
        return _answer(keyed.answered)
    return _answer(_outcome(result, single))


def _outcome(
    result: metering.IngestResult, single: bool, *, streamed: bool = False
) -> tuple[int, bytes]:
    """The status and body that answer a batch: a single event that was refused is the
    request's error; otherwise the batch's counts, with each rejected event's error."""
    if single and result.rejected:
        rejection = result.rejected[0]
        # A user who is not the provider's customer is, to the provider, not there.
        missing = rejection.code.endswith("_not_found") or rejection.code == "not_subscribed"
        error = {
            "error": {
                "type": "not_found" if missing else "invalid_request",
                "code": rejection.code,
                "message": rejection.message,
                "param": rejection.param,
            }
        }
        return 404 if missing else 400, bytes(JSONResponse(error).body)
    out = IngestOut.of(result, streamed=streamed)
    return 200, out.model_dump_json(by_alias=True).encode()


def _answer(outcome: tuple[int, bytes]) -> Response:
    status, body = outcome
    return Response(body, status_code=status, media_type="application/json")


PUBLISH_TIMEOUT_S = 5.0
"""How long the edge waits for JetStream's acknowledgements before it answers 503."""


async def _publish(
    ctx: Context, who: Principal, items: list[Any], cloudevents: bool
) -> metering.IngestResult:
    """The stream's edge: checks the events as `ingest` does, publishes the valid ones,
    and answers once JetStream holds them; a worker charges them (DECISIONS 108)."""
    checked, events = await run_in_threadpool(
        metering.for_stream, ctx, who, items, cloudevents=cloudevents
    )
    if not events:
        return checked
    stream = EventStream.of(ctx)
    sent = messages(ctx.settings, events)
    try:
        held = await asyncio.wait_for(stream.publish(sent), PUBLISH_TIMEOUT_S)
    except (NatsError, OSError, TimeoutError) as error:
        # Some messages may be held already: the same request sent again is safe, as the
        # stream and the workers drop what they already have.
        raise StreamUnavailable(
            "the usage stream did not acknowledge these events; send them again, with the "
            f"same ids ({type(error).__name__})"
        ) from error
    again = sum(m.events for m, duplicate in zip(sent, held, strict=True) if duplicate)
    metrics.observe_ingest(
        len(events) - again, checked.duplicates + again, len(checked.rejected), 0
    )
    return metering.IngestResult(len(events) - again, checked.duplicates + again, checked.rejected)


async def _json_body(request: Request) -> Any:
    """The body as exact JSON; anything else (empty, not JSON, not UTF-8) is a 400."""
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError) as error:
        detail = str(error)[:120]
        raise InvalidRequest(
            f"the request body is not valid JSON ({detail})", code="malformed_json", param="body"
        ) from None


CE_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype")


def _binary_cloudevent(request: Request, data: Any) -> dict[str, Any]:
    """A binary-mode CloudEvent as the structured form billfold parses."""
    event: dict[str, Any] = {
        name: request.headers[f"ce-{name}"]
        for name in CE_ATTRIBUTES
        if f"ce-{name}" in request.headers
    }
    event["data"] = data
    return event


@router.get("/admin/stream", response_model=StreamOut, tags=["operator"])
async def stream_state(ctx: Ctx, who: Who) -> StreamOut:
    """The usage stream (operator): the events it holds, and per shard those waiting for
    a worker, those being charged, and which worker holds the shard."""
    require_role(who, Role.ADMIN)
    if not ctx.settings.nats_url:
        raise NotFound(
            "the usage stream is not configured (BILLFOLD_NATS_URL)", code="route_not_found"
        )
    stream = EventStream.of(ctx)
    found = await stream_status(stream, consumer_name)
    holders = await run_in_threadpool(_holders, ctx)
    return StreamOut.of(found, holders)


def _holders(ctx: Context) -> dict[int, dict[str, object]]:
    with ctx.work(read_only=True) as work:
        rows = work.conn.exec_driver_sql(HOLDERS, {"key": lock_key(ctx.settings)}).all()
    return {int(r.shard): {"pid": r.pid, "address": r.address, "since": r.since} for r in rows}


@router.post("/services/{code}/default-plan", status_code=204)
def set_default_plan(code: str, body: DefaultPlanSet, work: Write, who: Who) -> None:
    """The plan that prices usage by users without a subscription (pay-as-you-go)."""
    metering.set_default_plan(work, who, code, body.plan)
