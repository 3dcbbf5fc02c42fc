"""The console's pages on the demo platform, each timed over HTTP against a baseline.

A new home gets the demo (`billfold demo`: four providers, 50 users, 60 days of usage);
billfold is served by uvicorn on a loopback port; each role logs in as a person does
(the operator with its TOTP code), and every page of its console is fetched N times.
Printed per page: the median and p95 time to the full answer, and the median as a ratio
of the baseline measured in the same run, `GET /v1/me` with the same session (the
cheapest authenticated answer: what the machine gives any request).

Target: every page under 300 ms at the median on the demo data.

Usage: python bench/console.py [--runs 15]
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pyotp
import uvicorn
from rich.console import Console
from rich.table import Table

from billfold import demo
from billfold.api.app import create_app
from billfold.config import Settings
from billfold.core.context import build_context
from billfold.logging import configure

TARGET_MS = 300.0
PAGES = {
    "user": ["/", "/catalog", "/catalog/storage-200/subscribe", "/subscriptions", "/usage",
             "/usage/1", "/wallet", "/invoices", "/alerts", "/keys", "/account"],
    "provider": ["/", "/provider/services", "/provider/plans", "/provider/plans/maps-payg",
                 "/provider/customers", "/usage", "/provider/statements", "/provider/events"],
    "admin": ["/", "/admin/providers", "/admin/users", "/admin/dunning", "/admin/audit",
              "/invoices", "/admin/operations"],
}  # fmt: skip
LOGINS = {
    "user": "user@demo.billfold.test",
    "provider": "provider@demo.billfold.test",
    "admin": "admin@demo.billfold.test",
}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _timed(client: httpx.Client, path: str, runs: int) -> list[float]:
    found = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get(path)
        found.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    configure("WARNING")
    console = Console()
    home = Path(tempfile.mkdtemp(prefix="billfold-bench-console-"))
    settings = Settings(
        home=home,
        secret_key=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        log_level="WARNING",
        password_hash_profile="cheapest",
    )
    started = time.perf_counter()
    loaded = demo.load(settings)
    console.print(f"demo loaded in {time.perf_counter() - started:.1f} s: "
                  f"{loaded.events:,} events, {len(loaded.users)} users")  # fmt: skip
    ctx = build_context(settings)
    port = _port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    table = Table(title=f"console pages on the demo data ({args.runs} runs each)")
    for column in ("role", "page", "median ms", "p95 ms", "× baseline", "target"):
        table.add_column(column, justify="right" if "ms" in column or "×" in column else "left")
    worst = 0.0
    try:
        for role, paths in PAGES.items():
            client = httpx.Client(base_url=base, timeout=30)
            form = {"email": LOGINS[role], "password": demo.PASSWORD}
            if role == "admin":
                form["totp"] = pyotp.TOTP(loaded.admin_totp).now()
            assert client.post("/login", data=form).status_code == 303
            client.get("/")  # Warm: templates compiled, caches filled.
            baseline = statistics.median(_timed(client, "/v1/me", args.runs))
            table.add_row(role, "GET /v1/me (baseline)", f"{baseline:.1f}", "", "1.0", "")
            for path in paths:
                times = sorted(_timed(client, path, args.runs))
                median = statistics.median(times)
                p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
                worst = max(worst, median)
                verdict = "[green]ok[/green]" if median < TARGET_MS else "[red]slow[/red]"
                table.add_row(role, path, f"{median:.1f}", f"{p95:.1f}",
                              f"{median / baseline:.1f}", verdict)  # fmt: skip
            client.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        ctx.db.dispose()
    console.print(table)
    console.print(f"slowest page median: {worst:.1f} ms (target {TARGET_MS:.0f} ms)")


if __name__ == "__main__":
    main()
