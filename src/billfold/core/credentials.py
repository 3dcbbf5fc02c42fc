"""Credentials looked up lately: an API key's or a session's principal, kept in memory
for at most a second (`BILLFOLD_AUTH_CACHE_S`), so that a request does not read the
database to learn who is asking.

Entries are found by the SHA-256 hash of the secret (256 random bits: knowing how long a
lookup took tells nothing about another secret). A change that can end or alter a
credential in this process (a key revoked or rotated, sessions ended, a password, a
provider's approval, a locale) empties the cache once it commits
(`Work.credentials_changed`); other
processes read the database again within the entry's lifetime. Only successes are
kept: a key made a moment ago works at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class Credentials:
    """The principals of secrets seen lately, for one process and database."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._entries: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self.generation = 0
        """Moves on at every `clear`: what was read before it is not kept after it."""

    def get(self, digest: str) -> Any | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, value: Any, generation: int) -> None:
        """Keeps `value`, read from the database when `generation` was current; not if a
        change has emptied the cache since (the value may predate a revocation)."""
        if self.lifetime_s <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) > 100_000:  # Many one-off secrets: start afresh.
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + self.lifetime_s, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.generation += 1
