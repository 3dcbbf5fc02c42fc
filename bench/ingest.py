"""Ingestion speed through the HTTP API, against the raw insert of the same rows.

For each backend a real `billfold serve` process is started on a fresh database, with a
provider, a service, a graduated pay-as-you-go plan and 100 prepaid users. Then:

- events/s: batches of 1,000 events (spread over the users) are POSTed to /v1/events by
  --clients concurrent clients; every event is validated, deduplicated, stored, rated and
  charged through the ledger before its response;
- raw insert/s: the same number of rows INSERTed into usage_events of the same database
  with executemany, 1,000 per transaction, with nothing else done (the floor);
- latency: p50 and p99 of single-event requests and of authorizations, with 8 clients;
- with --packages: the same ingestion again on a second fresh database where every user
  holds a resource package covering half of its events (the rest priced by the plan),
  and its events/s as a ratio of the figure without packages (target >= 0.90).

Usage: python bench/ingest.py [--events 100000] [--clients 8] [--workers 1]
                              [--backends sqlite,postgres] [--packages]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import create_engine

from billfold.store.db import make_engine
from common import database

BATCH = 1000
USERS = 100
LATENCY_CLIENTS = 8
LATENCY_REQUESTS = 800
console = Console()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(url: str, home: Path, workers: int) -> Iterator[tuple[str, str]]:
    env = {
        **os.environ,
        "BILLFOLD_DATABASE_URL": url,
        "BILLFOLD_HOME": str(home),
        "BILLFOLD_LOG_LEVEL": "WARNING",
        # Servers on a shared database need the key shared too (serve refuses without).
        "BILLFOLD_SECRET_KEY": base64.urlsafe_b64encode(b"b" * 32).decode(),
    }
    key = subprocess.run(
        [sys.executable, "-m", "billfold.cli", "keys", "create", "--role", "admin"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "billfold.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base, key
    finally:
        process.terminate()
        process.wait(timeout=30)


def hold_packages(base: str, key: str, secret: str, users: list[str], calls: int) -> None:
    """Every user buys a resource package of `calls` calls of the bench's metric."""
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {secret}"}, timeout=60
    ) as p:
        package = p.post(
            "/v1/packages",
            json={"code": "half", "name": "Half", "service": "maps", "currency": "USD",
                  "price": "1", "quantities": {"calls": str(calls)}, "validity_days": 30},
        )  # fmt: skip
        package.raise_for_status()
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as admin:
        for user in users:
            admin.post(
                f"/v1/users/{user}/packages", json={"package": package.json()["id"]}
            ).raise_for_status()


def setup(base: str, key: str) -> tuple[str, list[str]]:
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as admin:
        provider = admin.post(
            "/v1/providers", json={"name": "Bench", "email": "b@b.io", "commission_rate": "0.2"}
        ).json()["id"]
        secret = admin.post(
            "/v1/api-keys", json={"role": "provider", "provider_id": provider}
        ).json()["secret"]
        users = []
        for n in range(USERS):
            user = admin.post(
                "/v1/users", json={"name": f"U{n}", "email": f"u{n}@b.io", "currency": "USD"}
            ).json()["id"]
            admin.post(f"/v1/users/{user}/top-ups", json={"amount": "1000000"}).raise_for_status()
            users.append(user)
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {secret}"}, timeout=60
    ) as p:
        p.post("/v1/services", json={"code": "maps", "name": "Maps"}).raise_for_status()
        p.post(
            "/v1/services/maps/metrics",
            json={"code": "calls", "name": "Calls", "aggregation": "count"},
        ).raise_for_status()
        p.post(
            "/v1/plans",
            json={
                "code": "payg",
                "service": "maps",
                "currency": "USD",
                "interval": "none",
                "charges": [
                    {
                        "metric": "calls",
                        "model": "graduated",
                        "tiers": [
                            {"up_to": 1000, "unit_price": "0.001"},
                            {"up_to": None, "unit_price": "0.0005"},
                        ],
                    }
                ],
            },
        ).raise_for_status()
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as admin:
        for user in users:  # Each user is the provider's customer (pay-as-you-go).
            body = {"user": user, "service": "maps"}
            admin.post("/v1/subscriptions", json=body).raise_for_status()
    return secret, users


def batches(users: list[str], total: int, tag: str) -> list[list[dict[str, Any]]]:
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "id": f"{tag}-{n}",
            "user": users[n % len(users)],
            "service": "maps",
            "metric": "calls",
            "timestamp": now,
        }
        for n in range(total)
    ]
    return [events[i : i + BATCH] for i in range(0, total, BATCH)]


def ingest(base: str, secret: str, work: list[list[dict[str, Any]]], clients: int) -> float:
    # Bodies are encoded before the clock starts, as a load generator sends prepared
    # requests: the clients share the server's two cores, and should not spend them on JSON.
    lock = threading.Lock()
    queue = [(json.dumps({"events": batch}).encode(), len(batch)) for batch in work]
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("ingesting", total=sum(len(b) for b in work))

        def client() -> None:
            with httpx.Client(
                base_url=base, timeout=120, headers={"Authorization": f"Bearer {secret}"}
            ) as http:
                while True:
                    with lock:
                        if not queue:
                            return
                        body, size = queue.pop()
                    response = http.post(
                        "/v1/events", content=body, headers={"content-type": "application/json"}
                    )
                    assert response.status_code == 200, response.text
                    assert response.json()["accepted"] == size, response.text
                    bar.advance(task, size)

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            for future in [pool.submit(client) for _ in range(clients)]:
                future.result()
        return time.perf_counter() - started


def raw_insert(url: str, total: int) -> float:
    engine = make_engine(url) if url.startswith("sqlite") else create_engine(url)
    now = datetime.now(UTC)
    stamp = (
        now.replace(tzinfo=None).isoformat(" ", "microseconds") if url.startswith("sqlite") else now
    )
    mark = "?" if url.startswith("sqlite") else "%s"
    sql = (
        "INSERT INTO usage_events (provider_id, event_id, user_id, service_id, metric_id, "
        "occurred_at, value, properties, period_start, ingested_at) VALUES "
        f"({', '.join([mark] * 10)})"
    )
    started = time.perf_counter()
    for offset in range(0, total, BATCH):
        rows = [
            ("raw", f"raw-{n}", "u", "s", "m", stamp, "1", None, stamp, stamp)
            for n in range(offset, min(offset + BATCH, total))
        ]
        with engine.begin() as conn:
            conn.exec_driver_sql(sql, rows)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def latencies(base: str, secret: str, users: list[str], kind: str) -> tuple[float, float]:
    times: list[float] = []
    lock = threading.Lock()
    tag = uuid.uuid4().hex[:6]

    def client(index: int) -> None:
        with httpx.Client(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {secret}"}
        ) as http:
            for n in range(LATENCY_REQUESTS // LATENCY_CLIENTS):
                user = users[(index * 7 + n) % len(users)]
                if kind == "event":
                    body: dict[str, Any] = {
                        "id": f"lat-{tag}-{index}-{n}",
                        "user": user,
                        "service": "maps",
                        "metric": "calls",
                    }
                    path = "/v1/events"
                else:
                    body = {"user": user, "service": "maps", "metric": "calls", "quantity": 10}
                    path = "/v1/authorizations"
                started = time.perf_counter()
                response = http.post(path, json=body)
                elapsed = time.perf_counter() - started
                assert response.status_code in (200, 201), response.text
                with lock:
                    times.append(elapsed)

    with ThreadPoolExecutor(LATENCY_CLIENTS) as pool:
        list(pool.map(client, range(LATENCY_CLIENTS)))
    cut = statistics.quantiles(times, n=100)
    return cut[49] * 1000, cut[98] * 1000


def with_packages(backend: str, total: int, clients: int, workers: int) -> float:
    """events/s of the same ingestion when every user holds a package covering half."""
    with (
        tempfile.TemporaryDirectory() as folder,
        database(backend, Path(folder)) as url,
        server(url, Path(folder), workers) as (base, key),
    ):
        secret, users = setup(base, key)
        hold_packages(base, key, secret, users, max(total // USERS // 2, 1))
        work = batches(users, total, uuid.uuid4().hex[:6])
        return total / ingest(base, secret, work, clients)


def run(
    backend: str, total: int, clients: int, workers: int, packages: bool = False
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder, database(backend, Path(folder)) as url:
        with server(url, Path(folder), workers) as (base, key):
            secret, users = setup(base, key)
            work = batches(users, total, uuid.uuid4().hex[:6])
            seconds = ingest(base, secret, work, clients)
            event_p50, event_p99 = latencies(base, secret, users, "event")
            auth_p50, auth_p99 = latencies(base, secret, users, "authorization")
        raw_seconds = raw_insert(url, total)
    extra = {}
    if packages:
        extra["packages_events_per_s"] = with_packages(backend, total, clients, workers)
    return {
        **extra,
        "events_per_s": total / seconds,
        "raw_insert_per_s": total / raw_seconds,
        "event_p50_ms": event_p50,
        "event_p99_ms": event_p99,
        "authorization_p50_ms": auth_p50,
        "authorization_p99_ms": auth_p99,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="billfold serve --workers")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--packages", action="store_true", help="also ingest with every user holding a package"
    )
    args = parser.parse_args()
    table = Table(
        title=f"billfold ingestion: {args.events:,} events in batches of {BATCH}, "
        f"{args.clients} clients, {args.workers} server processes"
    )
    for column in (
        "backend",
        "events/s (HTTP)",
        "raw insert/s",
        "ratio",
        "event p50/p99 ms",
        "authorization p50/p99 ms",
        *(("events/s with packages", "ratio to without") if args.packages else ()),
    ):
        table.add_column(column, justify="right")
    results = {}
    for backend in args.backends.split(","):
        figures = run(backend, args.events, args.clients, args.workers, args.packages)
        packaged = figures.get("packages_events_per_s")
        results[backend] = figures
        table.add_row(
            backend,
            f"{figures['events_per_s']:,.0f}",
            f"{figures['raw_insert_per_s']:,.0f}",
            f"{figures['events_per_s'] / figures['raw_insert_per_s']:.2f}",
            f"{figures['event_p50_ms']:.1f} / {figures['event_p99_ms']:.1f}",
            f"{figures['authorization_p50_ms']:.1f} / {figures['authorization_p99_ms']:.1f}",
            *(
                (f"{packaged:,.0f}", f"{packaged / figures['events_per_s']:.2f}")
                if packaged is not None
                else ()
            ),
        )
    console.print(table)
    console.print("target (issue 15): ratio >= 0.3 on SQLite, >= 0.4 on PostgreSQL")
    if args.packages:
        console.print("target: events/s with packages >= 0.90 of the figure without")
    print(json.dumps({b: {k: round(v, 1) for k, v in f.items()} for b, f in results.items()}))


if __name__ == "__main__":
    main()
