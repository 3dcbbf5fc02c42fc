"""A real SMTP server for tests (aiosmtpd), and what it received."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import _free_port


@dataclass
class Inbox:
    """What the SMTP server received."""

    port: int = 0
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address]

    def token(self, address: str, path: str) -> str:
        mine = self.to(address)
        assert mine, f"no mail to {address}"
        body = mine[-1].get_payload(decode=True)
        assert isinstance(body, bytes)
        found = re.search(rf"/{path}\?token=([A-Za-z0-9_-]+)", body.decode())
        assert found, body
        return found.group(1)


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox(port=_free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
