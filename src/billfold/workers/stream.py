"""`billfold worker`: charges the usage stream, shard by shard, on PostgreSQL.

Each shard of users has a durable JetStream consumer of its own subject. A worker holds
the shards it applies with PostgreSQL advisory locks on a connection of its own, so one
worker at a time applies a shard, in order; when a worker dies its connection closes and
its shards are free for the others. Workers take an even share: each counts the workers
alive (their lock connections, by application name) and gives back shards past its
share, so shards move when workers come and go.

Each round takes a few messages from every held shard at once (each shard's in its
order), charges them in one transaction (`metering.apply_streamed`) and acknowledges
them only after that commit. A worker killed in between leaves them unacknowledged:
JetStream delivers them again, and the events already stored are duplicates, charged
once.
"""

from __future__ import annotations

import asyncio
import math
import signal
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
import structlog
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from billfold import metering
from billfold.config import Settings
from billfold.core import metrics
from billfold.core.context import Context
from billfold.core.exact_json import loads_exact
from billfold.core.stream import EventStream, consumer_name, lock_key, state

log = structlog.get_logger("billfold.worker")

MESSAGES_PER_FETCH: Final = 4
"""Messages a round takes from each shard: a request's events for one shard, at most 500
each (so a round is at most 2,000 events a shard, and usually far fewer)."""
FETCH_WAIT_S: Final = 0.1
"""How long a round waits for events on an idle shard (all shards at once)."""
REBALANCE_S: Final = 2.0
ACK_WAIT_S: Final = 15.0
"""A batch not acknowledged by then (its worker died) is delivered again, to whichever
worker holds the shard next; only the holder fetches, so a slow batch is not charged twice
even if delivered again (the copy is a duplicate)."""


def _libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@dataclass
class Shards:
    """The shards this worker holds, through advisory locks on its own connection."""

    settings: Settings
    conn: psycopg.Connection[Any]
    held: set[int] = field(default_factory=set)

    @classmethod
    def open(cls, settings: Settings) -> Shards:
        conn = psycopg.connect(
            _libpq_url(settings.resolved_database_url()),
            autocommit=True,
            application_name=f"billfold-worker:{settings.stream_name}"[:63],
        )
        return cls(settings, conn)

    def rebalance(self) -> None:
        """Takes free shards up to an even share; gives back those past it."""
        settings = self.settings
        workers = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (f"billfold-worker:{settings.stream_name}"[:63],),
        ).fetchone()
        share = math.ceil(settings.stream_shards / max(1, int(workers[0] if workers else 1)))
        key = lock_key(settings)
        for shard in sorted(self.held, reverse=True)[: max(0, len(self.held) - share)]:
            self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (key, shard))
            self.held.discard(shard)
        for shard in range(settings.stream_shards):
            if len(self.held) >= share:
                break
            if shard in self.held:
                continue
            row = self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (key, shard)).fetchone()
            if row and row[0]:
                self.held.add(shard)

    def check(self) -> None:
        """Raises if the connection that holds the locks is gone."""
        self.conn.execute("SELECT 1")

    def close(self) -> None:
        self.conn.close()


class Worker:
    def __init__(self, ctx: Context, settings: Settings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.stream = EventStream(settings)
        self.stopping = asyncio.Event()
        self.applied = 0
        self._subs: dict[int, Any] = {}

    async def _subscription(self, shard: int) -> Any:
        sub = self._subs.get(shard)
        if sub is None:
            js = await self.stream.jetstream()
            settings = self.settings
            sub = await js.pull_subscribe(
                f"{settings.stream_subjects}.{shard}",
                durable=consumer_name(settings, shard),
                stream=settings.stream_name,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=ACK_WAIT_S,
                    max_ack_pending=MESSAGES_PER_FETCH * 16,
                ),
            )
            self._subs[shard] = sub
        return sub

    async def _drop(self, shard: int) -> None:
        sub = self._subs.pop(shard, None)
        if sub is not None:
            await sub.unsubscribe()

    async def run(self) -> None:
        shards = await asyncio.to_thread(Shards.open, self.settings)
        last_rebalance = 0.0
        try:
            while not self.stopping.is_set():
                try:
                    last_rebalance = await self._turn(shards, last_rebalance)
                except Exception:
                    # A broken connection (NATS reconnects by itself; PostgreSQL's lock
                    # connection does not): log, wait, and try again; a worker that cannot
                    # hold its locks gives its shards up with its connection.
                    log.exception("worker_turn_failed")
                    if shards.conn.closed or shards.conn.broken:
                        shards.held.clear()
                        with suppress(Exception):
                            await asyncio.to_thread(shards.close)
                        try:
                            shards = await asyncio.to_thread(Shards.open, self.settings)
                            last_rebalance = 0.0
                        except psycopg.Error:  # PostgreSQL still away: next turn.
                            log.warning("worker_reconnect_failed", exc_info=True)
                    await asyncio.sleep(1.0)
        finally:
            for shard in list(self._subs):
                await self._drop(shard)
            await self.stream.close()
            await asyncio.to_thread(shards.close)

    async def _turn(self, shards: Shards, last_rebalance: float) -> float:
        """One round: the shares rebalanced now and then, one batch of each held shard."""
        if time.monotonic() - last_rebalance > REBALANCE_S:
            await asyncio.to_thread(shards.rebalance)
            for shard in set(self._subs) - shards.held:
                await self._drop(shard)
            last_rebalance = time.monotonic()
            found = await state(self.stream, consumer_name)
            metrics.observe_lag(found.lag)
            mine = [s for s in found.shards if s.shard in shards.held]
            log.info(
                "worker_lag",
                held=sorted(shards.held),
                pending=sum(s.pending + s.unacknowledged for s in mine),
                stream_lag=found.lag,
                applied=self.applied,
            )
        if not shards.held:
            await asyncio.sleep(FETCH_WAIT_S)
        elif not self.stopping.is_set():
            # The locks live as long as their connection: if PostgreSQL ended it, another
            # worker may hold these shards now, so nothing is applied before they are ours
            # again (the failure reopens the connection and takes shards afresh).
            await asyncio.to_thread(shards.check)
            await self._apply_round(sorted(shards.held))
        return last_rebalance

    async def _fetch(self, shard: int) -> list[Any]:
        sub = await self._subscription(shard)
        try:
            return list(await sub.fetch(MESSAGES_PER_FETCH, timeout=FETCH_WAIT_S))
        except (NatsTimeout, TimeoutError):
            # Nothing waiting on the shard (nats-py raises either, by version and path).
            return []

    async def _apply_round(self, shards: list[int]) -> None:
        """One batch from every held shard at once (each in its own order), charged in
        one transaction, committed, then acknowledged."""
        fetched = await asyncio.gather(*(self._fetch(shard) for shard in shards))
        messages = [message for batch in fetched for message in batch]
        if not messages:
            return
        batch: list[tuple[str, dict[str, object]]] = []
        for message in messages:
            body = loads_exact(message.data)
            provider = str(body["provider"])
            batch.extend((provider, event) for event in body["events"])
        try:
            result = await asyncio.to_thread(metering.apply_streamed, self.ctx, batch)
        except Exception:
            # Nothing of the batch stands unless it committed; delivered again later.
            log.exception("stream_batch_failed", shards=shards, events=len(batch))
            await asyncio.gather(*(message.nak(delay=1.0) for message in messages))
            return
        await asyncio.gather(*(message.ack() for message in messages))
        self.applied += len(batch)
        log.debug(
            "stream_batch_applied",
            events=len(batch),
            accepted=result.accepted,
            duplicates=result.duplicates,
        )


def run_worker(ctx: Context, settings: Settings) -> None:
    """Runs until SIGTERM or SIGINT: the batch in hand is finished and acknowledged."""

    async def main() -> None:
        worker = Worker(ctx, settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stopping.set)
        await worker.run()
        log.info("worker_stopped", applied=worker.applied)

    asyncio.run(main())


class Background:
    """A worker on a thread of its own, beside `billfold serve --worker`."""

    def __init__(self, ctx: Context, settings: Settings) -> None:
        self._worker: Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ctx, settings), name="billfold-stream-worker", daemon=True
        )

    def _run(self, ctx: Context, settings: Settings) -> None:
        async def main() -> None:
            self._worker = Worker(ctx, settings)
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._worker.run()

        try:
            asyncio.run(main())
        except Exception:
            log.exception("background_worker_failed")
        finally:
            self._ready.set()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(timeout=30)

    def stop(self) -> None:
        """Finishes the batch in hand, acknowledges it, and ends the thread."""
        if self._loop is not None and self._worker is not None:
            self._loop.call_soon_threadsafe(self._worker.stopping.set)
        self._thread.join(timeout=60)
