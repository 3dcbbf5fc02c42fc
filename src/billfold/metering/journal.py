"""The usage journal: what an ingest transaction charged, per user, metric and quarter-hour.

Metering appends it in the transaction that charges the usage, so the journal and the
ledger commit or roll back together; `analytics.fold` moves it into the rollups.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from billfold.domain.money import format_decimal
from billfold.store.bulk import db_datetime, insert_rows
from billfold.store.db import UnitOfWork
from billfold.store.tables import usage_deltas

COLUMNS = (
    "bucket",
    "user_id",
    "provider_id",
    "service_id",
    "metric_id",
    "currency",
    "quantity",
    "events",
    "amount",
)


class _Event(Protocol):
    user_id: str
    provider_id: str
    service_id: str
    metric_id: str


class UsageJournal:
    def __init__(self) -> None:
        self._rows: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [Decimal(0), 0, 0])

    def add(
        self,
        bucket: datetime,
        event: _Event,
        currency: str,
        quantity: Decimal,
        events: int,
        amount: int,
    ) -> None:
        key = (
            bucket,
            event.user_id,
            event.provider_id,
            event.service_id,
            event.metric_id,
            currency,
        )
        row = self._rows[key]
        row[0] += quantity
        row[1] += events
        row[2] += amount

    def write(self, uow: UnitOfWork) -> None:
        if not self._rows:
            return
        conn = uow.conn
        rows = [
            (db_datetime(conn, key[0]), *key[1:], format_decimal(q), n, amount)
            for key, (q, n, amount) in self._rows.items()
        ]
        for offset in range(0, len(rows), 1000):
            insert_rows(conn, usage_deltas, COLUMNS, rows[offset : offset + 1000])
        self._rows.clear()
