"""The usage stream: NATS JetStream between `POST /v1/events` and `billfold worker`.

Each accepted event is one message on `<prefix>.<shard>`, the shard a stable hash of the
user's id, so that one user's events are in one subject, in order, and one worker at a
time applies them. The message id is the provider's and the event's id: JetStream drops
a copy sent again within its duplicate window, and the worker's insert into
`usage_events` drops any later one, so an event is charged once however often it is
sent or delivered.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import nats
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from billfold.config import Settings
from billfold.domain.ledger import shard_of  # The same shards as the journal's chains.

DUPLICATE_WINDOW_S: Final = 600
"""How long JetStream itself remembers a message id (the database remembers forever)."""


def refuse_sqlite(settings: Settings) -> str | None:
    """Why the stream cannot be used with these settings, if it cannot."""
    if settings.nats_url and not settings.resolved_database_url().startswith("postgresql"):
        return (
            "BILLFOLD_NATS_URL needs PostgreSQL (BILLFOLD_DATABASE_URL=postgresql+psycopg://...): "
            "workers on other machines must share the database"
        )
    return None


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    msg_id: str
    payload: bytes
    events: int


MAX_EVENTS_PER_MESSAGE: Final = 500
"""A request's events for one shard travel in messages of at most this many (about
100 KB: well under NATS' 1 MB payload limit)."""


def messages(settings: Settings, events: list[tuple[str, dict[str, Any]]]) -> list[Message]:
    """A request's accepted events as messages: one per provider and shard (cut at
    MAX_EVENTS_PER_MESSAGE), in the request's order, each the provider it counts for and
    its events in the native form with the user's billfold id (an external id resolved
    at the edge). A message's id is its provider's and a digest of its events' ids, so
    that the same request sent again, to any server, is the same messages, which
    JetStream drops; any other copy of an event is dropped by the worker's insert."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for provider_id, event in events:
        shard = shard_of(str(event["user"]), settings.stream_shards)
        grouped.setdefault((provider_id, shard), []).append(event)
    found = []
    for (provider_id, shard), group in grouped.items():
        for start in range(0, len(group), MAX_EVENTS_PER_MESSAGE):
            part = group[start : start + MAX_EVENTS_PER_MESSAGE]
            digest = hashlib.sha256("\n".join(str(e["id"]) for e in part).encode()).hexdigest()
            found.append(
                Message(
                    f"{settings.stream_subjects}.{shard}",
                    f"{provider_id}:{digest[:40]}",
                    _ENCODER.encode({"provider": provider_id, "events": part}),
                    len(part),
                )
            )
    return found


# Exact numbers both ways: a Decimal is written as the JSON number it is, and the worker
# reads it back with loads_exact.
_ENCODER = msgspec.json.Encoder(decimal_format="number")


class EventStream:
    """One process's connection to the stream, made on first use in its event loop."""

    def __init__(self, settings: Settings) -> None:
        assert settings.nats_url
        self.settings = settings
        self._nc: Any = None
        self._js: JetStreamContext | None = None
        self._connecting = asyncio.Lock()

    async def jetstream(self) -> JetStreamContext:
        async with self._connecting:
            if self._js is None or self._nc is None or self._nc.is_closed:
                url = self.settings.nats_url
                assert url is not None
                self._nc = await nats.connect(
                    url.split(","), name="billfold", max_reconnect_attempts=-1
                )
                js = self._nc.jetstream()
                await self._ensure(js)
                self._js = js
        return self._js

    async def _ensure(self, js: JetStreamContext) -> None:
        settings = self.settings
        try:
            await js.stream_info(settings.stream_name)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=settings.stream_name,
                    subjects=[f"{settings.stream_subjects}.*"],
                    num_replicas=settings.stream_replicas,
                    max_age=float(settings.stream_max_age_s),
                    duplicate_window=float(DUPLICATE_WINDOW_S),
                )
            )

    async def publish(self, messages: list[Message]) -> list[bool]:
        """Publishes the messages and waits for every acknowledgement (with replicas, a
        quorum's); for each, whether JetStream already held that id."""
        js = await self.jetstream()
        acks = await asyncio.gather(
            *(js.publish(m.subject, m.payload, headers={"Nats-Msg-Id": m.msg_id}) for m in messages)
        )
        return [bool(ack.duplicate) for ack in acks]

    @classmethod
    def of(cls, ctx: Any) -> EventStream:
        """The context's one connection to the stream (per process and event loop)."""
        stream: EventStream = ctx.shared(cls, lambda c: cls(c.settings))
        return stream

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()


@dataclass(frozen=True, slots=True)
class ShardState:
    shard: int
    pending: int
    """Messages not yet delivered to a worker."""
    unacknowledged: int
    """Delivered to a worker and not yet acknowledged (being charged, or to be again)."""


@dataclass(frozen=True, slots=True)
class StreamState:
    name: str
    subjects: str
    replicas: int
    messages: int
    bytes: int
    shards: list[ShardState]

    @property
    def lag(self) -> int:
        """Messages acknowledged at the edge and not yet charged."""
        return sum(s.pending + s.unacknowledged for s in self.shards)


async def state(stream: EventStream, consumer: Any) -> StreamState:
    """The stream and each shard's consumer, as JetStream reports them now; `consumer`
    names a shard's durable consumer (the worker's naming)."""
    settings = stream.settings
    js = await stream.jetstream()
    info = await js.stream_info(
        settings.stream_name, subjects_filter=f"{settings.stream_subjects}.*"
    )
    held = info.state.subjects or {}

    async def shard(number: int) -> ShardState:
        try:
            found = await js.consumer_info(settings.stream_name, consumer(settings, number))
        except NotFoundError:
            # No worker has opened the shard: all it holds waits.
            return ShardState(number, held.get(f"{settings.stream_subjects}.{number}", 0), 0)
        return ShardState(number, found.num_pending or 0, found.num_ack_pending or 0)

    shards = list(await asyncio.gather(*(shard(n) for n in range(settings.stream_shards))))
    return StreamState(
        settings.stream_name,
        f"{settings.stream_subjects}.*",
        info.config.num_replicas or 1,
        info.state.messages,
        info.state.bytes,
        shards,
    )


def consumer_name(settings: Settings, shard: int) -> str:
    """The durable consumer of a shard's subject, shared by whichever worker holds it."""
    return f"{settings.stream_name}-shard-{shard}"


def lock_key(settings: Settings) -> int:
    """The first key of the advisory locks by which workers hold shards: the stream's, so
    that two streams on one database never clash."""
    return zlib.crc32(settings.stream_name.encode()) & 0x7FFFFFFF


HOLDERS: Final = """
SELECT l.objid AS shard, a.pid, host(a.client_addr) AS address, a.backend_start AS since
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = %(key)s
"""
"""Which worker (its database connection) holds each shard now."""
