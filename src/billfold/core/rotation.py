"""Rotating the data key: everything encrypted is re-encrypted under the current key.

The operator sets BILLFOLD_SECRET_KEY to a new key and lists the old one in
BILLFOLD_PREVIOUS_SECRET_KEYS, restarts the servers (they now read under both keys and
write under the new one), and runs `billfold rotate-secret`. It re-encrypts names,
emails, webhook secrets and stored Idempotency-Key answers, recomputes the email blind
indexes, and says how many values it moved; then the old key can be dropped. Each chunk
is a transaction of its own, and a rerun moves only what is left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Table, select, update

from billfold.core.context import Context
from billfold.store.tables import idempotency_keys, providers, users, webhook_endpoints

CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class Encrypted:
    table: Table
    key_columns: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]
    """(column, the context it was encrypted for)."""
    index: tuple[str, str] | None = None
    """(blind index column, the column whose lower-cased text it indexes)."""


ENCRYPTED: Final = (
    Encrypted(
        users,
        ("id",),
        (("name_enc", "users.name"), ("email_enc", "users.email")),
        ("email_index", "email_enc"),
    ),
    Encrypted(
        providers,
        ("id",),
        (("name_enc", "providers.name"), ("email_enc", "providers.email")),
        ("email_index", "email_enc"),
    ),
    Encrypted(webhook_endpoints, ("id",), (("secret_enc", "webhook_endpoints.secret"),)),
    Encrypted(
        idempotency_keys,
        ("principal", "key"),
        (("response_body", "idempotency_keys.response_body"),),
    ),
)

Progress = Callable[[str, int], None]


def rotate(ctx: Context, progress: Progress | None = None) -> dict[str, int]:
    """Re-encrypts every value not under the current key yet; counts per table."""
    moved: dict[str, int] = {}
    for spec in ENCRYPTED:
        moved[spec.table.name] = _rotate_table(ctx, spec, progress)
    return moved


def _rotate_table(ctx: Context, spec: Encrypted, progress: Progress | None) -> int:
    """Walks the table in key order, a chunk a transaction (keys never change here)."""
    cipher = ctx.cipher
    keys = [spec.table.c[name] for name in spec.key_columns]
    moved = seen = 0
    while True:
        with ctx.db.unit_of_work() as uow:
            query = select(spec.table).order_by(*keys).offset(seen).limit(CHUNK)
            rows = list(uow.conn.execute(query))
            for row in rows:
                values = _rotated(cipher, spec, row._mapping)
                if values:
                    uow.conn.execute(
                        update(spec.table)
                        .where(*(column == row._mapping[column.name] for column in keys))
                        .values(values)
                    )
                    moved += 1
            uow.commit()
        seen += len(rows)
        if progress is not None:
            progress(spec.table.name, moved)
        if len(rows) < CHUNK:
            return moved


def _rotated(cipher: Any, spec: Encrypted, row: Any) -> dict[str, str]:
    values: dict[str, str] = {}
    for column, context in spec.columns:
        token = row[column]
        if token and not cipher.is_current(token):
            values[column] = cipher.encrypt(cipher.decrypt(token, context=context), context=context)
    if values and spec.index is not None:
        index_column, source = spec.index
        context = dict(spec.columns)[source]
        plain = cipher.decrypt(row[source], context=context)
        values[index_column] = cipher.blind_index(plain.lower())
    return values
