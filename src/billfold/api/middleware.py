"""ASGI middleware: request ids and logs, body size limits, and idempotent POSTs."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from billfold.api.errors import error_body
from billfold.core.context import Context
from billfold.ids import new_id
from billfold.store.tables import idempotency_keys

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_IDEMPOTENCY_KEY_LENGTH = 255
IN_PROGRESS_LEASE = timedelta(seconds=60)
KEY_IN_USE = error_body(
    "conflict",
    "idempotency_key_in_use",
    "a request with this Idempotency-Key is still being processed; retry later",
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
            log.info(
                "request",
                request_id=request_id,
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                key_id=getattr(principal, "key_id", None),
            )


class BodyLimitError(Exception):
    pass


class BodyLimitMiddleware:
    """Refuses request bodies past a bound (larger for usage events) with 413."""

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

    The key is reserved before the request runs (a lease, so a crashed request does not
    block its key forever), and the response is stored after it. A different body under
    the same key, or a concurrent request with it, is a 409. Keys are scoped to the API
    key that sent them. Server errors free the key so that the client can retry.
    """

    def __init__(self, app: ASGIApp, *, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if scope["type"] != "http" or scope["method"] != "POST" or key is None:
            await self.app(scope, receive, send)
            return
        if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            await _send_json(
                send,
                400,
                error_body(
                    "invalid_request",
                    "invalid_idempotency_key",
                    f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
                    "Idempotency-Key",
                ),
            )
            return
        authorization = _header(scope, b"authorization")
        if not authorization:
            await self.app(scope, receive, send)
            return
        principal = hashlib.sha256(authorization.encode()).hexdigest()
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        query = scope.get("query_string", b"").decode("latin-1")
        request_hash = hashlib.sha256(
            b"\x1f".join([scope["path"].encode(), query.encode(), body])
        ).hexdigest()

        from starlette.concurrency import run_in_threadpool

        decision = await run_in_threadpool(
            self._reserve, principal, key, scope["path"], request_hash
        )
        if decision is not None:
            status, payload, replayed = decision
            headers = [(b"idempotent-replayed", b"true")] if replayed else []
            await _send_json(send, status, payload, headers)
            return

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
            await run_in_threadpool(self._finish, principal, key, response_status, b"".join(chunks))
        for message in held:
            await send(message)

    def _reserve(
        self, principal: str, key: str, path: str, request_hash: str
    ) -> tuple[int, dict[str, Any], bool] | None:
        """None if this request now holds the key; else the response to send instead."""
        now = self.ctx.clock.now()
        with self.ctx.db.unit_of_work() as uow:
            try:
                uow.conn.execute(
                    idempotency_keys.insert().values(
                        principal=principal,
                        key=key,
                        method="POST",
                        path=path[:500],
                        request_hash=request_hash,
                        state="in_progress",
                        response_status=None,
                        response_body=None,
                        created_at=now,
                        locked_until=now + IN_PROGRESS_LEASE,
                    )
                )
                uow.commit()
                return None
            except IntegrityError:
                uow.rollback()
            row = uow.conn.execute(
                select(idempotency_keys).where(
                    idempotency_keys.c.principal == principal, idempotency_keys.c.key == key
                )
            ).one()
            if row.request_hash != request_hash:
                return (
                    409,
                    error_body(
                        "conflict",
                        "idempotency_key_reused",
                        "this Idempotency-Key was used with a different request; use a new key",
                        "Idempotency-Key",
                    ),
                    False,
                )
            if row.state == "done":
                return int(row.response_status), json.loads(row.response_body), True
            if row.locked_until > now:
                return 409, KEY_IN_USE, False
            # The earlier attempt died without an answer: this one takes the key over.
            taken = uow.conn.execute(
                update(idempotency_keys)
                .where(
                    idempotency_keys.c.principal == principal,
                    idempotency_keys.c.key == key,
                    idempotency_keys.c.state == "in_progress",
                    idempotency_keys.c.locked_until == row.locked_until,
                )
                .values(locked_until=now + IN_PROGRESS_LEASE)
            ).rowcount
            uow.commit()
            if taken != 1:
                return 409, KEY_IN_USE, False
            return None

    def _finish(self, principal: str, key: str, status: int, body: bytes) -> None:
        where = (idempotency_keys.c.principal == principal, idempotency_keys.c.key == key)
        with self.ctx.db.unit_of_work() as uow:
            if status >= 500:
                uow.conn.execute(delete(idempotency_keys).where(*where))
            else:
                try:
                    text = json.dumps(json.loads(body)) if body else "null"
                except ValueError:
                    text = json.dumps(None)
                uow.conn.execute(
                    update(idempotency_keys)
                    .where(*where)
                    .values(state="done", response_status=status, response_body=text)
                )
            uow.commit()
