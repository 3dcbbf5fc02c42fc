"""A Python client for providers: report usage and ask for authorizations.

    from billfold.client import BillfoldClient

    with BillfoldClient("https://billing.example.com", api_key) as billing:
        decision = billing.authorize(user="usr_...", service="maps", metric="calls", quantity=1)
        if decision["status"] == "approved":
            serve_the_call()
            billing.report(user="usr_...", service="maps", metric="calls")

Usage is buffered and sent in batches (by size, or every `flush_interval_s` from a
background thread, and on exit). Each event gets its id when it is reported, so a batch
that is retried after a timeout or a server error is sent with the same ids and billfold
counts every event once. Events that billfold rejects (bad input) are not retried; they
are kept in `rejected` with the reason. The buffer is bounded: when it is full,
`report` sends a batch before it returns.

The client needs only httpx; amounts and values are sent as decimal strings.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import httpx

MAX_BATCH = 10_000
log = logging.getLogger("billfold.client")
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class BillfoldClientError(Exception):
    """billfold refused a request for a reason that retrying will not fix."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"{status} {error.get('code', '')}: {error.get('message', body)}")
        self.status = status
        self.error = error


@dataclass
class FlushResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _text(value: object, name: str) -> str:
    if isinstance(value, float):
        raise TypeError(f"{name} must be an int, a Decimal or a decimal string, not a float")
    if isinstance(value, Decimal | int | str):
        return str(value)
    raise TypeError(f"{name} must be an int, a Decimal or a decimal string")


class BillfoldClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        batch_size: int = 1000,
        max_buffer: int = 100_000,
        flush_interval_s: float | None = 1.0,
        max_retries: int = 8,
        backoff_s: float = 0.2,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH}")
        self.batch_size = batch_size
        self.max_buffer = max(max_buffer, batch_size)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.rejected: list[dict[str, Any]] = []
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
            transport=transport,
        )
        self._buffer: list[dict[str, Any]] = []
        self._buffer_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if flush_interval_s:
            self._flusher = threading.Thread(
                target=self._flush_periodically,
                args=(flush_interval_s,),
                name="billfold-client-flush",
                daemon=True,
            )
            self._flusher.start()
        # Flush on interpreter exit without keeping the client alive for it.
        atexit.register(_close_at_exit, weakref.ref(self))

    # --- usage ------------------------------------------------------------------------

    def report(
        self,
        *,
        user: str,
        service: str,
        metric: str,
        value: Decimal | int | str = 1,
        timestamp: datetime | None = None,
        properties: Mapping[str, Any] | None = None,
        event_id: str | None = None,
    ) -> str:
        """Buffers one usage event and returns its id (send it again with the same id)."""
        if self._closed:
            raise RuntimeError("the client is closed")
        moment = timestamp or datetime.now(UTC)
        if moment.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")
        event: dict[str, Any] = {
            "id": event_id or f"evt_{uuid.uuid4().hex}",
            "user": user,
            "service": service,
            "metric": metric,
            "timestamp": moment.isoformat(),
            "value": _text(value, "value"),
        }
        if properties:
            event["properties"] = dict(properties)
        with self._buffer_lock:
            self._buffer.append(event)
            full = len(self._buffer) >= self.max_buffer
        if full:
            self.flush()
        return str(event["id"])

    def flush(self) -> FlushResult:
        """Sends everything buffered, in batches; returns what billfold made of it."""
        result = FlushResult()
        with self._send_lock:
            while True:
                with self._buffer_lock:
                    batch = self._buffer[: self.batch_size]
                    del self._buffer[: self.batch_size]
                if not batch:
                    return result
                try:
                    body = self._post("/v1/events", {"events": batch})
                except Exception:
                    # Not sent: put the batch back in front, with the same ids, for later.
                    with self._buffer_lock:
                        self._buffer[:0] = batch
                    raise
                result.accepted += int(body["accepted"])
                result.duplicates += int(body["duplicates"])
                for rejection in body["rejected"]:
                    entry = {"event": batch[rejection["index"]], "error": rejection["error"]}
                    result.rejected.append(entry)
                    self.rejected.append(entry)

    @property
    def pending(self) -> int:
        with self._buffer_lock:
            return len(self._buffer)

    # --- limits -----------------------------------------------------------------------

    def authorize(
        self,
        *,
        user: str,
        service: str | None = None,
        metric: str | None = None,
        quantity: Decimal | int | str | None = None,
        amount: Decimal | int | str | None = None,
        expires_in_s: int | None = None,
    ) -> dict[str, Any]:
        """Whether the user may use this much now; an approval holds the funds."""
        body: dict[str, Any] = {"user": user}
        if service is not None:
            body["service"] = service
        if metric is not None:
            body["metric"] = metric
        if quantity is not None:
            body["quantity"] = _text(quantity, "quantity")
        if amount is not None:
            body["amount"] = _text(amount, "amount")
        if expires_in_s is not None:
            body["expires_in"] = expires_in_s
        return self._post("/v1/authorizations", body)

    def capture(
        self,
        authorization_id: str,
        *,
        quantity: Decimal | int | str | None = None,
        amount: Decimal | int | str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if quantity is not None:
            body["quantity"] = _text(quantity, "quantity")
        if amount is not None:
            body["amount"] = _text(amount, "amount")
        return self._post(f"/v1/authorizations/{authorization_id}/capture", body)

    def void(self, authorization_id: str) -> dict[str, Any]:
        return self._post(f"/v1/authorizations/{authorization_id}/void", {})

    def entitlements(self, user: str, service: str) -> dict[str, Any]:
        response = self._http.get(f"/v1/users/{user}/entitlements", params={"service": service})
        if response.status_code >= 400:
            raise BillfoldClientError(response.status_code, _json(response))
        return dict(response.json())

    # --- plumbing ---------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POSTs with one Idempotency-Key across retries, backing off on transient errors."""
        key = uuid.uuid4().hex
        for attempt in range(self.max_retries + 1):
            try:
                response = self._http.post(path, json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                if attempt == self.max_retries:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES:
                    if response.status_code >= 400:
                        raise BillfoldClientError(response.status_code, _json(response))
                    return dict(response.json())
                if attempt == self.max_retries:
                    raise BillfoldClientError(response.status_code, _json(response))
            # Exponential back-off with full jitter, capped at 30 seconds.
            time.sleep(random.uniform(0, min(30.0, self.backoff_s * 2**attempt)))  # noqa: S311
        raise AssertionError("unreachable")

    def _flush_periodically(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if self.pending:
                try:
                    self.flush()
                except Exception:
                    # The events stay in the buffer and the next round sends them; the
                    # caller sees the error on its own flush() or close().
                    log.warning("billfold client: background flush failed", exc_info=True)

    def close(self) -> None:
        """Sends what is buffered and closes the connection; safe to call twice."""
        if self._closed:
            return
        self._stop.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
        try:
            self.flush()
        finally:
            self._closed = True
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _close_at_exit(reference: weakref.ref[BillfoldClient]) -> None:
    client = reference()
    if client is not None:
        client.close()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
