"""The audit trail's hash chain: each entry's hash covers the one before it.

An entry that is edited, removed or slipped in breaks the chain from there on, and
`billfold verify` recomputes it. Like the ledger's, the hash is SHA-256 of a tuple's
`repr`: deterministic for str, int and None values, and cheap.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Final

GENESIS: Final = "0" * 64


def at_text(moment: datetime) -> str:
    """An entry's time as hashed: ISO 8601 in UTC, to the microsecond."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    prev_hash: str,
    *,
    at: str,
    actor: str,
    role: str,
    party: str | None,
    action: str,
    object_type: str,
    object_id: str,
    details: str | None,
) -> str:
    """The hash of one entry, chained to the previous entry's."""
    fields = (prev_hash, at, actor, role, party, action, object_type, object_id, details)
    return hashlib.sha256(repr(fields).encode()).hexdigest()
