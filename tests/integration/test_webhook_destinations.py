"""No server-side request forgery: webhooks go out to the internet, never inside.

The receivers here are real local HTTP servers; what changes between creation and
delivery is the DNS answer, which the test gives through the resolver billfold asks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from billfold import alerts
from billfold.alerts import _destinations
from billfold.core.access import SYSTEM
from billfold.core.context import Context
from billfold.domain.errors import InvalidRequest
from billfold.ids import new_id
from billfold.store.tables import webhook_messages

PUBLIC = "93.184.216.34"


class Receiver:
    """A real endpoint on loopback; it can stall each request for `stall_s` seconds."""

    def __init__(self, stall_s: float = 0) -> None:
        self.received: list[float] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                time.sleep(stall_s)
                outer.received.append(time.monotonic())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def strict(ctx: Context) -> Iterator[Context]:
    """The context as production runs it: no http, no private destinations."""
    ctx.settings.webhook_allow_private = False
    yield ctx
    ctx.settings.webhook_allow_private = True


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example/x",  # Plain http.
        "https://127.0.0.1/x",
        "https://localhost/x",
        "https://10.1.2.3/x",
        "https://192.168.0.1/x",
        "https://169.254.169.254/latest/meta-data",  # A cloud's metadata service.
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://224.0.0.1/x",
        "https://0.0.0.0/x",
        "ftp://hooks.example/x",
        "https:///x",
    ],
)
def test_loopback_private_and_odd_destinations_are_refused_at_creation(
    strict: Context, url: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        strict.run(alerts.create_endpoint, SYSTEM, url=url, event_types=None)
    assert refused.value.param == "url"
    assert strict.read(alerts.list_endpoints, SYSTEM) == []


def test_a_public_destination_is_accepted(strict: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_destinations, "resolve", lambda host, port: [PUBLIC])
    made = strict.run(
        alerts.create_endpoint, SYSTEM, url="https://hooks.example/x", event_types=None
    )
    assert made.url == "https://hooks.example/x"


def _message(ctx: Context, endpoint_id: str) -> str:
    message_id = new_id("msg")
    now = ctx.clock.now()
    with ctx.work() as work:
        work.conn.execute(
            webhook_messages.insert().values(
                id=message_id,
                endpoint_id=endpoint_id,
                event_type="balance.low",
                payload='{"type": "balance.low"}',
                status="pending",
                attempts=0,
                next_attempt_at=now - timedelta(seconds=1),
                created_at=now,
            )
        )
        work.commit()
    return message_id


def test_a_name_that_turns_private_after_creation_is_refused_at_delivery(
    strict: Context, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = {"hooks.example": [PUBLIC]}
    monkeypatch.setattr(_destinations, "resolve", lambda host, port: answer[host])
    url = f"https://hooks.example:{receiver.port}/x"
    endpoint = strict.run(alerts.create_endpoint, SYSTEM, url=url, event_types=None)
    message = _message(strict, endpoint.id)
    answer["hooks.example"] = ["127.0.0.1"]  # DNS rebinding: now it points inside.
    assert alerts.deliver_due(strict) == {"delivered": 0, "retried": 1, "failed": 0}
    assert receiver.received == []
    with strict.work(read_only=True) as work:
        row = work.conn.execute(
            select(webhook_messages).where(webhook_messages.c.id == message)
        ).one()
    assert row.status == "pending" and "not sent" in row.last_error


def test_a_stalled_endpoint_does_not_hold_back_another(ctx: Context) -> None:
    stalled, quick = Receiver(stall_s=3), Receiver()
    try:
        ctx.settings.webhook_timeout_s = 1
        slow = ctx.run(
            alerts.create_endpoint,
            SYSTEM,
            url=f"http://127.0.0.1:{stalled.port}/x",
            event_types=None,
        )
        fast = ctx.run(
            alerts.create_endpoint, SYSTEM, url=f"http://127.0.0.1:{quick.port}/x", event_types=None
        )
        _message(ctx, slow.id)  # Due first.
        _message(ctx, fast.id)
        started = time.monotonic()
        counts = alerts.deliver_due(ctx)
        assert counts == {"delivered": 1, "retried": 1, "failed": 0}
        # Sent side by side: the quick endpoint had its message long before the stalled
        # one's timeout (one at a time, it would have waited for it).
        assert quick.received and quick.received[0] - started < 1
    finally:
        stalled.close()
        quick.close()
