"""Ingestion past one machine: POST /v1/events through NATS JetStream to `billfold worker`.

On a fresh PostgreSQL database and a JetStream stream of its own (the local server at
127.0.0.1:4222), a real `billfold serve` (with BILLFOLD_NATS_URL) takes batches of 1,000
events from 8 clients, and 1, then 2, `billfold worker` processes charge them. It prints:

- events/s end to end, from the first POST to the last event charged, with 1 and 2
  workers, next to bench/ingest.py's single process (no stream) in the same run;
- the delay from an event's acknowledgement (its POST answered) to its charge, p50 and
  p99: flat out (mostly the queue), and at a steady 2,000 events/s, where it is the
  path's own (the time until a reader sees the whole batch charged);
- the measured costs per 1,000-event batch: the edge (server CPU), the worker (worker
  CPU), and the part of a batch's transaction that holds its journal chain's head (one
  batch at a time per chain; the ledger has 16 chains, one per shard, which commit side
  by side, and hot accounts are parted by chain: docs/DECISIONS.md, 114);
- a model from those costs: events/s for 4, 16 and 64 workers on machines of their own
  (servers added alongside), and which part bounds it first.

Two cores cannot show more workers going faster: the model says what they would do.

Usage: python bench/scale.py [--events 40000] [--clients 8]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

import ingest
from common import database

NATS_URL = os.environ.get("BILLFOLD_TEST_NATS", "nats://127.0.0.1:4222")
console = Console()
CHAINS = 16
"""The ledger's journal chains (and the stream's default shards)."""
PACED_BATCHES = 30
PACED_PER_S = 2.0
"""The steady load: two batches of 1,000 a second (2,000 events/s)."""


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def charged(url: str) -> int:
    with psycopg.connect(libpq(url)) as conn:
        row = conn.execute("SELECT count(*) FROM usage_events").fetchone()
        return int(row[0]) if row else 0


def send(
    base: str, secret: str, work: list[list[dict[str, Any]]], clients: int
) -> dict[str, float]:
    """POSTs every batch; when each was acknowledged, by its first event's id."""
    queue = [(json.dumps({"events": b}).encode(), b[0]["id"]) for b in work]
    acked: dict[str, float] = {}
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(
            base_url=base, timeout=120, headers={"Authorization": f"Bearer {secret}"}
        ) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    body, first = queue.pop()
                answer = http.post(
                    "/v1/events", content=body, headers={"content-type": "application/json"}
                )
                assert answer.status_code == 200 and answer.json()["accepted"] == 1000, answer.text
                with lock:
                    acked[first] = time.time()

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return acked


def send_paced(
    base: str, secret: str, url: str, work: list[list[dict[str, Any]]], per_s: float
) -> list[float]:
    """POSTs one batch every 1/per_s seconds from one client, a load well below what the
    workers can charge, and for each batch the time from its answer to the moment all
    its events are charged and visible to a reader (polled every 2 ms): the delay of the
    path itself, not of a queue."""
    seen: list[float] = []
    threads = []

    def watch(ids: list[str], acked: float) -> None:
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*) FROM usage_events WHERE event_id = ANY(%s)", (ids,)
                ).fetchone()
                if row and row[0] == len(ids):
                    seen.append(time.time() - acked)
                    return
                time.sleep(0.002)

    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=base, timeout=120, headers=headers) as http:
        started = time.monotonic()
        for n, batch in enumerate(work):
            time.sleep(max(0.0, started + n / per_s - time.monotonic()))
            answer = http.post("/v1/events", json={"events": batch})
            acked = time.time()
            assert answer.status_code == 200 and answer.json()["accepted"] == len(batch)
            thread = threading.Thread(target=watch, args=([e["id"] for e in batch], acked))
            thread.start()
            threads.append(thread)
    for thread in threads:
        thread.join()
    return seen


def delays(url: str, work: list[list[dict[str, Any]]], acked: dict[str, float]) -> list[float]:
    """For each event, its charge (ingested_at, the worker's commit) minus its ack."""
    batch_of = {e["id"]: b[0]["id"] for b in work for e in b}
    with psycopg.connect(libpq(url)) as conn:
        rows = conn.execute(
            "SELECT event_id, extract(epoch FROM ingested_at) FROM usage_events"
        ).fetchall()
    return [max(0.0, float(at) - acked[batch_of[event]]) for event, at in rows if event in batch_of]


def run_workers(count: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-m", "billfold.cli", "worker"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]  # fmt: skip


def head_hold_ms(url: str, secret_env: dict[str, str]) -> float:
    """How long one batch's transaction holds its journal chain's head: from taking it to
    the commit, measured in process on the bench's own database (a batch of 1,000 events
    of the users of one shard, as a worker gets them)."""
    code = r"""
import os, sys, time, json
from billfold.config import Settings
from billfold.core.context import build_context
from billfold import metering
from billfold.store import db as store_db
ctx = build_context(Settings(), migrate=False)
from billfold.domain.ledger import shard_of
users = json.loads(sys.argv[1])
users = [u for u in users if shard_of(u, 16) == shard_of(users[0], 16)]
provider = sys.argv[2]
held = []
taken = []
import billfold.ledger._posting as posting
original = posting._lock
def lock(*args, **kwargs):
    if not taken:
        taken.append(time.perf_counter())
    return original(*args, **kwargs)
posting._lock = lock
commit = store_db.UnitOfWork.commit
def timed(self):
    commit(self)
    if taken:
        held.append(time.perf_counter() - taken.pop())
store_db.UnitOfWork.commit = timed
now = ctx.clock.now().isoformat()
for b in range(12):
    batch = [(provider, {"id": f"hold-{b}-{n}", "user": users[n % len(users)], "service": "maps",
              "metric": "calls", "timestamp": now}) for n in range(1000)]
    metering.apply_streamed(ctx, batch)
held = sorted(held[2:])
print(json.dumps(sum(held) / len(held) * 1000))
"""
    users, provider = secret_env["_users"], secret_env["_provider"]
    env = {k: v for k, v in secret_env.items() if not k.startswith("_")}
    out = subprocess.run([sys.executable, "-c", code, users, provider], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def model(
    edge_ms: float, worker_ms: float, hold_ms: float, pg_ms: float
) -> list[tuple[int, float, str]]:
    """events/s for N workers on machines of their own, with as many servers: each part's
    ceiling in batches of 1,000 per second, and the lowest bounds it."""
    predictions = []
    for workers in (4, 16, 64):
        ceilings = {
            "edge (servers' CPU)": workers * 1000 / edge_ms,
            "workers' CPU": workers * 1000 / worker_ms,
            f"journal chains ({CHAINS}, one batch at a time each)": min(workers, CHAINS)
            * 1000
            / hold_ms,
            "PostgreSQL's work per batch (2 cores)": 2 * 1000 / pg_ms,
        }
        bound = min(ceilings, key=lambda k: ceilings[k])
        predictions.append((workers, ceilings[bound] * 1000, bound))
    return predictions


def stream_env(url: str, folder: str) -> dict[str, str]:
    return {
        **os.environ,
        "BILLFOLD_DATABASE_URL": url,
        "BILLFOLD_HOME": folder,
        "BILLFOLD_LOG_LEVEL": "WARNING",
        "BILLFOLD_SECRET_KEY": base64.urlsafe_b64encode(b"b" * 32).decode(),
    }


def server_pid(base: str) -> int:
    port = base.rsplit(":", 1)[1]
    found = subprocess.run(
        ["pgrep", "-f", f"serve --port {port}"], capture_output=True, text=True, check=True
    )
    return int(found.stdout.split()[0])


def measure(workers: int, total: int, clients: int) -> dict[str, float]:
    """One run on a fresh database and stream: flat out, then at a steady load."""
    tag = uuid.uuid4().hex[:8]
    stream = {
        "BILLFOLD_NATS_URL": NATS_URL,
        "BILLFOLD_STREAM_NAME": f"BENCH_{tag}",
        "BILLFOLD_STREAM_SUBJECTS": f"bench.{tag}",
    }
    os.environ.update(stream)  # ingest.server passes the environment on.
    try:
        with (
            tempfile.TemporaryDirectory() as folder,
            database("postgres", Path(folder)) as url,
            ingest.server(url, Path(folder), 1) as (base, key),
        ):
            secret, users = ingest.setup(base, key)
            env = stream_env(url, folder)
            work = ingest.batches(users, total, tag)
            edge = server_pid(base)
            procs = run_workers(workers, env)
            time.sleep(3)  # The workers take their shards.
            edge_cpu = cpu_seconds(edge)
            worker_cpu = sum(cpu_seconds(p.pid) for p in procs)
            started = time.time()
            acked = send(base, secret, work, clients)
            edge_cpu = cpu_seconds(edge) - edge_cpu
            while charged(url) < total:
                time.sleep(0.05)
            elapsed = time.time() - started
            worker_cpu = sum(cpu_seconds(p.pid) for p in procs) - worker_cpu
            flat = statistics.quantiles(sorted(delays(url, work, acked)), n=100)
            # Then a steady load well below capacity: the delay of the path itself.
            paced = ingest.batches(users, PACED_BATCHES * 1000, f"{tag}p")
            steady = statistics.quantiles(
                sorted(send_paced(base, secret, url, paced, PACED_PER_S)), n=100
            )
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
            batches = total / 1000
            figures = {
                "events_per_s": total / elapsed,
                "delay_p50_ms": flat[49] * 1000,
                "delay_p99_ms": flat[98] * 1000,
                "steady_delay_p50_ms": steady[49] * 1000,
                "steady_delay_p99_ms": steady[98] * 1000,
                "edge_ms_per_batch": edge_cpu / batches * 1000,
                "worker_ms_per_batch": worker_cpu / batches * 1000,
            }
            if workers == 1:
                me = httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {secret}"})
                hold_env = {
                    **env,
                    "_users": json.dumps(users),
                    "_provider": me.json()["provider_id"],
                }
                figures["head_hold_ms"] = head_hold_ms(url, hold_env)
            return figures
    finally:
        for name in stream:
            os.environ.pop(name, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    total = args.events - args.events % 1000
    single = ingest.run("postgres", total, args.clients, 1)
    results: dict[str, Any] = {"single_process_events_per_s": single["events_per_s"]}
    for workers in (1, 2):
        results[f"{workers}_workers"] = measure(workers, total, args.clients)
    table = Table(title=f"billfold past one machine: {total:,} events, batches of 1,000")
    for column in (
        "run",
        "events/s end to end",
        "ack→charge p50/p99 ms, flat out",
        f"p50/p99 ms at {PACED_PER_S * 1000:,.0f} events/s",
        "edge CPU ms/batch",
        "worker CPU ms/batch",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        "one process, no stream (bench/ingest.py)",
        f"{single['events_per_s']:,.0f}",
        "0 (charged before the answer)",
        "0",
        "",
        "",
    )
    for workers in (1, 2):
        f = results[f"{workers}_workers"]
        table.add_row(
            f"stream, {workers} worker(s)",
            f"{f['events_per_s']:,.0f}",
            f"{f['delay_p50_ms']:,.0f} / {f['delay_p99_ms']:,.0f}",
            f"{f['steady_delay_p50_ms']:,.0f} / {f['steady_delay_p99_ms']:,.0f}",
            f"{f['edge_ms_per_batch']:.1f}",
            f"{f['worker_ms_per_batch']:.1f}",
        )
    console.print(table)
    one = results["1_workers"]
    hold = one["head_hold_ms"]
    # PostgreSQL's own work per batch: the worker's time per batch beyond its CPU.
    pg_ms = max(1000 * 1000 / one["events_per_s"] - one["worker_ms_per_batch"], hold)
    predictions = model(one["edge_ms_per_batch"], one["worker_ms_per_batch"], hold, pg_ms)
    predicted = Table(title="model: workers on machines of their own, as many servers")
    for column in ("workers", "events/s", "bounded by"):
        predicted.add_column(column, justify="right")
    for workers, rate, bound in predictions:
        predicted.add_row(str(workers), f"{rate:,.0f}", bound)
    console.print(predicted)
    console.print(
        f"per batch of 1,000: its chain's head held {hold:.1f} ms, PostgreSQL's own work "
        f"~{pg_ms:.1f} ms"
    )
    results["model"] = [
        {"workers": w, "events_per_s": round(r), "bound": b} for w, r, b in predictions
    ]
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
