"""Time is injected: code asks a clock for now, and tests (and the test clock) move it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class TestClock:
    """A clock that stands still until moved; it never moves backwards."""

    __test__ = False  # Not a pytest test class.

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("the test clock needs an aware datetime")
        with self._lock:
            if moment < self._now:
                raise ValueError("the test clock only moves forward")
            self._now = moment

    def advance(self, **delta: float) -> datetime:
        from datetime import timedelta

        with self._lock:
            self._now = self._now + timedelta(**delta)
            return self._now
