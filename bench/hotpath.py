"""The hot path: what a gateway calls before and after serving a request, over HTTP.

For each backend a real `billfold serve` process is started on a fresh database with the
set-up of bench/ingest.py (a provider, a service, a graduated pay-as-you-go plan, 100
prepaid customers). Then, with --clients concurrent keep-alive connections, each of
these is sent for --seconds after a short warm-up:

- `GET /healthz`: the bare HTTP stack, no key, no database (the baseline);
- `GET /v1/me` with the provider's key: authentication and nothing else;
- `POST /v1/authorizations` (10 calls, approved: the funds are held);
- `POST /v1/charges` (0.01 each, a one-off charge split with the platform);
- `POST /v1/events` with one event per request.

Every POST carries its own Idempotency-Key, as a careful gateway sends it: the key's
reservation and the record of the answer are part of the path measured. Printed per
route: requests/s, p50 and p99, and requests/s as a share of `/healthz` in the same run.

The load comes from one asyncio process writing prepared requests to raw sockets, so
that the client spends as little of the machine's two cores as it can: httpx costs the
client about as much as the server.

On PostgreSQL, the figure for single charges over HTTP is set beside django-hordak's
funds-checked single charges in process (bench/hordak_charges.py, run from a virtual
environment of its own: 220/s with django-hordak 2.0.0 on this machine, 2026-12-04), or
a figure you measured in the same session, given with --hordak-rate.

Targets: /v1/me >= 0.8 of /healthz; authorizations and charges >= 0.5; charges over
HTTP on PostgreSQL >= 5x hordak.

Usage: python bench/hotpath.py [--seconds 8] [--clients 8] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from common import database
from ingest import server, setup

# The limiter stays in the path, with a limit the benchmark does not reach.
os.environ.setdefault("BILLFOLD_RATE_LIMIT", "100000/second")
HORDAK_RATE = 220.0  # django-hordak 2.0.0, bench/hordak_charges.py, same machine.
WARMUP_S = 1.0
console = Console()

Build = Callable[[int], tuple[str, str, bytes | None]]


def request_bytes(
    host: str, method: str, path: str, secret: str | None, body: bytes | None, key: str | None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    if secret:
        lines.append(f"authorization: Bearer {secret}")
    if key:
        lines.append(f"idempotency-key: {key}")
    if body is not None:
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def load(
    base: str,
    secret: str | None,
    build: Build,
    clients: int,
    seconds: float,
    ok: tuple[int, ...],
    keys: bool = True,
) -> tuple[float, float, float]:
    """requests/s, p50 ms and p99 ms of `build`'s requests from `clients` connections."""
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    times: list[float] = []
    counter = 0
    measuring = False
    stop = False

    async def client() -> None:
        nonlocal counter
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while not stop:
                counter += 1
                method, path, body = build(counter)
                key = uuid.uuid4().hex if method == "POST" and keys else None
                payload = request_bytes(f"{host}:{port}", method, path, secret, body, key)
                started = time.perf_counter()
                writer.write(payload)
                status, answer = await read_response(reader)
                elapsed = time.perf_counter() - started
                assert status in ok, (status, answer[:300])
                if measuring:
                    times.append(elapsed)
        finally:
            writer.close()

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.sleep(WARMUP_S)
    measuring = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed = time.perf_counter() - started
    count = len(times)
    stop = True
    await asyncio.gather(*tasks)
    cut = statistics.quantiles(times, n=100)
    return count / elapsed, cut[49] * 1000, cut[98] * 1000


def routes(users: list[str]) -> dict[str, tuple[Build, tuple[int, ...], bool]]:
    """Each route: how to build its n-th request, the answers expected, whether keyed."""
    tag = uuid.uuid4().hex[:6]

    def body(data: dict[str, object]) -> bytes:
        return json.dumps(data).encode()

    def user(n: int) -> str:
        return users[n % len(users)]

    return {
        "GET /healthz": (lambda n: ("GET", "/healthz", None), (200,), False),
        "GET /v1/me": (lambda n: ("GET", "/v1/me", None), (200,), True),
        "POST /v1/authorizations": (
            lambda n: (
                "POST",
                "/v1/authorizations",
                body(
                    {
                        "user": user(n),
                        "service": "maps",
                        "metric": "calls",
                        "quantity": 10,
                        "expires_in": 60,
                    }
                ),
            ),
            (201,),
            True,
        ),
        "POST /v1/charges": (
            lambda n: (
                "POST",
                "/v1/charges",
                body(
                    {"user": user(n), "amount": "0.01", "service": "maps", "description": "bench"}
                ),
            ),
            (201, 200),
            True,
        ),
        "POST /v1/events (1)": (
            lambda n: (
                "POST",
                "/v1/events",
                body(
                    {"id": f"hot-{tag}-{n}", "user": user(n), "service": "maps", "metric": "calls"}
                ),
            ),
            (200,),
            True,
        ),
    }


def run(
    backend: str, clients: int, seconds: float, keys: bool = True
) -> dict[str, tuple[float, float, float]]:
    results: dict[str, tuple[float, float, float]] = {}
    with (
        tempfile.TemporaryDirectory() as folder,
        database(backend, Path(folder)) as url,
        server(url, Path(folder), 1) as (base, key),
    ):
        secret, users = setup(base, key)
        table = routes(users)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(backend, total=len(table))
            for name, (build, ok, keyed) in table.items():
                results[name] = asyncio.run(
                    load(base, secret if keyed else None, build, clients, seconds, ok, keys)
                )
                bar.advance(task)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--hordak-rate",
        type=float,
        default=HORDAK_RATE,
        help="django-hordak's checked single charges/s",
    )
    parser.add_argument(
        "--no-idempotency-keys", action="store_true", help="POST without Idempotency-Key"
    )
    args = parser.parse_args()
    for backend in args.backends.split(","):
        results = run(backend, args.clients, args.seconds, not args.no_idempotency_keys)
        base = results["GET /healthz"][0]
        table = Table(title=f"{backend}: {args.clients} clients, {args.seconds:g} s per route")
        for column in ("route", "requests/s", "p50 ms", "p99 ms", "of /healthz"):
            table.add_column(column, justify="left" if column == "route" else "right")
        for name, (rate, p50, p99) in results.items():
            table.add_row(name, f"{rate:,.0f}", f"{p50:.1f}", f"{p99:.1f}", f"{rate / base:.2f}")
        console.print(table)
        if backend == "postgres":
            charges = results["POST /v1/charges"][0]
            console.print(
                f"single charges over HTTP on PostgreSQL: {charges:,.0f}/s, "
                f"{charges / args.hordak_rate:.1f}x django-hordak's {args.hordak_rate:,.0f}/s "
                "in process (target 5x; 20x is the horizon)"
            )


if __name__ == "__main__":
    main()
