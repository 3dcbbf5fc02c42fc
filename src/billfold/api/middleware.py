"""ASGI middleware: request ids and logs, body size limits, and idempotent POSTs."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

import structlog
from limits import parse as parse_limit
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string
from starlette.concurrency import run_in_threadpool

from billfold.api.errors import error_body
from billfold.core import idempotency, keys, metrics
from billfold.core.context import Context
from billfold.core.http import (
    GROUPED_WRITES,
    IDEMPOTENCY_CLAIM,
    IDEMPOTENCY_RECORDED,
    IDEMPOTENCY_STATE,
)
from billfold.domain.errors import AuthenticationFailed
from billfold.ids import new_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KEY_IN_USE = idempotency.KEY_IN_USE
NUL_IN_URL = error_body(
    "invalid_request", "invalid_parameter", "the URL must not contain NUL (%00) characters"
)
KEY_REUSED = idempotency.KEY_REUSED
INVALID_KEY = error_body(
    "invalid_request",
    "invalid_idempotency_key",
    f"Idempotency-Key must be 1 to {idempotency.MAX_KEY_LENGTH} characters",
    "Idempotency-Key",
)
log = structlog.get_logger("billfold.http")


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


# A path segment that may be personal data: an email address, or a phone number (an
# external id may be either). Such segments are not written to the logs.
_PERSONAL = re.compile(r"@|\+?\d[\d\s().-]{6,}\d")
# One of billfold's own ids (billfold.ids): random, never personal, though its 26 base32
# characters may hold a run of digits that looks like a phone number.
_OWN_ID = re.compile(r"[a-z]{2,8}_[0-9a-hjkmnp-tv-z]{26}")


def redacted_path(path: str) -> str:
    """The path as logged: segments that look like an email or a phone number hidden."""
    return "/".join(
        "(redacted)" if _PERSONAL.search(part) and not _OWN_ID.fullmatch(part) else part
        for part in path.split("/")
    )


class RequestLogMiddleware:
    """Gives each request an id (X-Request-Id) and logs one structured line for it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id") or new_id("req")
        request_id = request_id[:64]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            principal = scope.get("state", {}).get("principal")
            seconds = time.perf_counter() - started
            metrics.observe_request(
                scope["method"], metrics.route_label(scope.get("route")), status, seconds
            )
            log.info(
                "request",
                request_id=request_id,
                method=scope["method"],
                path=redacted_path(scope["path"]),
                status=status,
                duration_ms=round(seconds * 1000, 2),
                key_id=getattr(principal, "key_id", None),
            )


class BodyLimitError(Exception):
    pass


class BodyLimitMiddleware:
    """Refuses request bodies past a bound (larger for usage events) with 413, and URLs
    that hold a NUL character with 400."""

    def __init__(self, app: ASGIApp, *, default_limit: int, limits: dict[str, int]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = limits

    def _limit(self, path: str) -> int:
        return self.limits.get(path, self.default_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_url = (scope.get("raw_path") or b"") + b"?" + scope.get("query_string", b"")
        if b"%00" in raw_url or "\x00" in scope["path"]:
            # No text billfold keeps may hold a NUL, and PostgreSQL refuses one outright.
            await _send_json(send, 400, NUL_IN_URL)
            return
        limit = self._limit(scope["path"])
        declared = _header(scope, b"content-length")
        too_large = error_body(
            "limit_exceeded", "body_too_large", f"the request body may be at most {limit} bytes"
        )
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_json(send, 413, too_large)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyLimitError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyLimitError:
            if not started:
                await _send_json(send, 413, too_large)


class IdempotencyMiddleware:
    """`Idempotency-Key` on POST: the same key and body replay the first response.

    The key is reserved before the request runs (billfold.core.idempotency). The route
    records a successful answer in the request's own transaction (`scope["state"]`
    carries the reservation to it); other answers are recorded here once sent back. A
    different body under the same key, or a concurrent request with it, is a 409. Keys
    are scoped to the API key that sent them.
    """

    def __init__(self, app: ASGIApp, *, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if scope["type"] != "http" or scope["method"] != "POST" or key is None:
            await self.app(scope, receive, send)
            return
        if not key or len(key) > idempotency.MAX_KEY_LENGTH:
            await _send_json(send, 400, INVALID_KEY)
            return
        key_id = _remembered_key(self.ctx, _header(scope, b"authorization"))
        if key_id is None:
            key_id = await run_in_threadpool(_key_of, self.ctx, _header(scope, b"authorization"))
        if key_id is None:
            # Not authenticated: the route answers 401, and nothing is reserved, stored or
            # replayed for a key that is revoked, unknown or missing.
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        reservation = idempotency.Reservation(idempotency.principal_of(key_id), key)
        digest = idempotency.request_hash(
            scope["path"], scope.get("query_string", b"").decode("latin-1"), body
        )
        state = scope.setdefault("state", {})
        grouped = bool(GROUPED_WRITES.match(scope["path"]))
        if grouped:
            # The group commit claims the key in the transaction that does the work.
            state[IDEMPOTENCY_CLAIM] = (scope["path"], digest)
        else:
            decision = await run_in_threadpool(
                idempotency.reserve, self.ctx, reservation, scope["path"], digest
            )
            if decision is not None:
                await _replay(send, decision)
                return
        state[IDEMPOTENCY_STATE] = reservation
        sent_body = False

        async def replay_receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        # The response is held back until it is recorded: a client that retries the
        # moment it has an answer must find the answer, not a key still in progress.
        response_status = 500
        held: list[Message] = []
        chunks: list[bytes] = []

        async def capture_send(message: Message) -> None:
            nonlocal response_status
            if message["type"] == "http.response.start":
                response_status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            held.append(message)

        try:
            await self.app(scope, replay_receive, capture_send)
        finally:
            if not state.get(IDEMPOTENCY_RECORDED):
                await run_in_threadpool(
                    partial(
                        idempotency.finish,
                        path=scope["path"],
                        # Still to claim (the route failed before its group claimed
                        # it, or never reached one): claimed and answered at once.
                        digest=digest if state.get(IDEMPOTENCY_CLAIM) else None,
                    ),
                    self.ctx,
                    reservation,
                    response_status,
                    b"".join(chunks),
                )
        for message in held:
            await send(message)


async def _replay(send: Send, decision: idempotency.Replay) -> None:
    if decision.conflict == "idempotency_key_reused":
        await _send_json(send, 409, KEY_REUSED)
    elif decision.conflict is not None:
        await _send_json(send, 409, KEY_IN_USE)
    elif decision.status == 204:
        # No content, as the first answer had none.
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [(b"idempotent-replayed", b"true")],
            }
        )
        await send({"type": "http.response.body", "body": b""})
    else:
        headers = [(b"idempotent-replayed", b"true")] if decision.replayed else []
        await _send_json(send, decision.status, decision.body, headers)


def _remembered_key(ctx: Context, authorization: str | None) -> str | None:
    """The id of a key looked up less than a second ago, without a thread or a query."""
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret:
        return None
    try:
        principal = keys.remembered(ctx, secret.strip())
    except AuthenticationFailed:
        return None
    return None if principal is None else principal.key_id


def _key_of(ctx: Context, authorization: str | None) -> str | None:
    """The id of the API key a request authenticates with, or None if it does not."""
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret:
        return None
    try:
        return keys.authenticate(ctx, secret.strip()).key_id
    except AuthenticationFailed:
        return None


# The console and API documentation pages (served from a CDN until they are packaged)
# are exempt; every other HTML answer, such as an invoice, may load nothing at all.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
CSP_EXEMPT = ("/docs", "/redoc")


class SecurityHeadersMiddleware:
    """Headers every answer carries: no MIME sniffing, no referrer, a strict content
    security policy for HTML, and HSTS when served over TLS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https"
        exempt = scope["path"].startswith(CSP_EXEMPT)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                content_type = dict(headers).get(b"content-type", b"")
                if (
                    content_type.startswith(b"text/html")
                    and not exempt
                    and b"content-security-policy" not in names
                ):
                    headers.append((b"content-security-policy", CSP.encode()))
                if secure and b"strict-transport-security" not in names:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


RATE_LIMITED = error_body(
    "rate_limited", "rate_limited", "too many requests; retry after the time given"
)


class RateLimitMiddleware:
    """Each API key, and each client address without one, may make `limit` requests (in
    the notation of the `limits` library, such as "1000/second") before the next gets
    429 with Retry-After. Counts are in memory for one process, or in Redis, shared by
    every process, when a Redis URL is given. If Redis cannot be reached, requests go
    through (logged): billing stays up rather than refuse everyone."""

    def __init__(self, app: ASGIApp, *, limit: str, redis_url: str | None) -> None:
        self.app = app
        self.item = parse_limit(limit)
        if redis_url:
            backend = storage_from_string(f"async+{redis_url}", implementation="redispy")
        else:
            backend = storage_from_string("async+memory://")
        self.limiter = FixedWindowRateLimiter(backend)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        who = _identity(scope)
        try:
            allowed = await self.limiter.hit(self.item, "billfold", who)
            retry = 0
            if not allowed:
                stats = await self.limiter.get_window_stats(self.item, "billfold", who)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
        except Exception as error:
            log.warning("rate_limit_unavailable", error=type(error).__name__)
            allowed = True
        if not allowed:
            await _send_json(send, 429, RATE_LIMITED, [(b"retry-after", str(retry).encode())])
            return
        await self.app(scope, receive, send)


def _identity(scope: Scope) -> str:
    """Whom a request counts against: its API key (a hash of it), else its address."""
    scheme, _, secret = (_header(scope, b"authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and secret:
        return "key:" + hashlib.sha256(secret.strip().encode()).hexdigest()[:32]
    client = scope.get("client") or ("unknown", 0)
    return f"ip:{client[0]}"
