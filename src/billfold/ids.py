"""Public identifiers: a type prefix and 26 Crockford base32 characters.

The first 10 characters encode the creation time in milliseconds and the rest are random,
so ids sort roughly by creation and never collide in practice (80 random bits per ms).
"""

from __future__ import annotations

import hashlib
import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _encode(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, index = divmod(number, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A fresh id such as `usr_01jd0k5v3c8q3x9m4t2a7b6c5d`."""
    return f"{prefix}_{_encode(time.time_ns() // 1_000_000, 10)}{_encode(secrets.randbits(80), 16)}"


def derived_id(prefix: str, *parts: str) -> str:
    """A deterministic id for an idempotent request: the same parts give the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return f"{prefix}_{_encode(int.from_bytes(digest[:17], 'big'), 26)}"
