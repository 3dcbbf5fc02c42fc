"""Kill the server with SIGKILL mid-ingestion: nothing acknowledged is lost or doubled."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from billfold import parties
from billfold.clock import SystemClock
from billfold.core.access import SYSTEM, Role
from billfold.core.keys import create_key
from billfold.domain.money import currency, to_units
from billfold.domain.pricing import MetricUsage, parse_plan, price_charge
from billfold.domain.rating import units_due
from billfold.ledger.verify import verify
from billfold.store.tables import usage_events
from tests.conftest import TEST_SECRET, make_context
from tests.integration.helpers import funded_user, metered_catalog

PLAN = {
    "code": "payg",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [
        {
            "metric": "calls",
            "model": "graduated",
            "tiers": [
                {"up_to": 5000, "unit_price": "0.001"},
                {"up_to": None, "unit_price": "0.0004"},
            ],
        }
    ],
}
BATCHES = 60
BATCH = 250


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(url: str, home: Path, workers: int = 1) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _port()
    env = {
        **os.environ,
        "BILLFOLD_DATABASE_URL": url,
        "BILLFOLD_HOME": str(home),
        "BILLFOLD_SECRET_KEY": TEST_SECRET,
        "BILLFOLD_LOG_LEVEL": "WARNING",
    }
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
        # A process group of its own: with --workers, uvicorn's worker processes outlive a
        # killed parent, and the group is how they are all stopped at the end.
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                _stop_group(process)
                raise
            time.sleep(0.05)
    try:
        yield process, base
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Kills the server and every process it started (its workers), even after the
    server itself was killed by the test."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.slow
def test_sigkill_during_ingestion_loses_and_doubles_nothing(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    ctx = make_context(sqlite_database_url, tmp_path)
    ctx.clock = SystemClock()
    me = metered_catalog(ctx, PLAN)
    user_id = funded_user(ctx, 0, "1000")
    key = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)[1]
    ctx.db.dispose()
    now = datetime.now(UTC).isoformat()
    batches = [
        [
            {
                "id": f"b{b}-{n}",
                "user": user_id,
                "service": "maps",
                "metric": "calls",
                "timestamp": now,
            }
            for n in range(BATCH)
        ]
        for b in range(BATCHES)
    ]
    acknowledged: set[str] = set()
    lock = threading.Lock()

    with serve(sqlite_database_url, tmp_path) as (process, base):
        stop = threading.Event()

        def send(offset: int) -> None:
            with httpx.Client(
                base_url=base, timeout=30, headers={"Authorization": f"Bearer {key}"}
            ) as client:
                for index in range(offset, BATCHES, 2):
                    if stop.is_set():
                        return
                    try:
                        response = client.post("/v1/events", json={"events": batches[index]})
                    except httpx.HTTPError:
                        return  # The server died under this request: not acknowledged.
                    if response.status_code == 200:
                        with lock:
                            acknowledged.update(e["id"] for e in batches[index])

        senders = [threading.Thread(target=send, args=(offset,)) for offset in (0, 1)]
        for sender in senders:
            sender.start()
        while True:
            with lock:
                if len(acknowledged) >= 10 * BATCH:
                    break
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        stop.set()
        for sender in senders:
            sender.join(timeout=30)
    assert 10 * BATCH <= len(acknowledged) < BATCHES * BATCH

    probe = make_context(sqlite_database_url, tmp_path)
    with probe.db.unit_of_work(read_only=True) as uow:
        stored = set(uow.conn.execute(select(usage_events.c.event_id)).scalars())
    assert acknowledged <= stored, "an acknowledged event was lost"
    probe.db.dispose()

    with (
        serve(sqlite_database_url, tmp_path) as (_process, base),
        httpx.Client(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {key}"}
        ) as client,
    ):
        resent = [client.post("/v1/events", json={"events": batch}).json() for batch in batches]
    assert sum(r["duplicates"] for r in resent) >= len(acknowledged)
    assert all(not r["rejected"] for r in resent)

    after = make_context(sqlite_database_url, tmp_path)
    with after.db.unit_of_work(read_only=True) as uow:
        count = uow.conn.execute(select(func.count()).select_from(usage_events)).scalar_one()
    assert count == BATCHES * BATCH
    usd = currency("USD")
    charge = parse_plan(PLAN).charges[0]
    expected = units_due(
        price_charge(charge, MetricUsage(given=Decimal(count))).amount, usd.ledger_scale
    )
    balance = after.read(parties.get_balance, SYSTEM, user_id)
    assert to_units(Decimal(1000) - balance.posted, usd) == expected
    report = after.read(verify, SYSTEM)
    assert report.ok, [(c.name, c.problems) for c in report.checks if not c.ok]
    after.db.dispose()


@pytest.mark.slow
def test_several_server_processes_share_one_sqlite_database(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    ctx = make_context(sqlite_database_url, tmp_path)
    ctx.clock = SystemClock()
    me = metered_catalog(ctx, PLAN)
    users = [funded_user(ctx, n, "100") for n in range(4)]
    key = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)[1]
    ctx.db.dispose()
    now = datetime.now(UTC).isoformat()
    batches = [
        [
            {
                "id": f"w{b}-{n}",
                "user": users[(b + n) % 4],
                "service": "maps",
                "metric": "calls",
                "timestamp": now,
            }
            for n in range(200)
        ]
        for b in range(24)
    ]
    with serve(sqlite_database_url, tmp_path, workers=2) as (_process, base):

        def send(batch: list[dict[str, object]]) -> dict[str, object]:
            with httpx.Client(
                base_url=base, timeout=60, headers={"Authorization": f"Bearer {key}"}
            ) as client:
                response = client.post("/v1/events", json={"events": batch})
                assert response.status_code == 200, response.text
                return dict(response.json())

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(send, batches + batches[:6]))
    assert sum(int(r["accepted"]) for r in results) == 24 * 200  # type: ignore[call-overload]
    assert sum(int(r["duplicates"]) for r in results) == 6 * 200  # type: ignore[call-overload]
    after = make_context(sqlite_database_url, tmp_path)
    report = after.read(verify, SYSTEM)
    assert report.ok, [(c.name, c.problems) for c in report.checks if not c.ok]
    after.db.dispose()


CHARGES = 600


@pytest.mark.slow
def test_sigkill_during_group_commits_of_charges_loses_and_doubles_nothing(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    """Four clients send one-off charges (each with its Idempotency-Key), which the server
    writes in group commits; it is killed mid-stream. Every acknowledged charge is in the
    ledger; retried with its key, each request gets its original answer, and none is
    charged twice."""
    ctx = make_context(sqlite_database_url, tmp_path)
    ctx.clock = SystemClock()
    me = metered_catalog(ctx, PLAN)
    user_id = funded_user(ctx, 0, "1000")
    key = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)[1]
    ctx.db.dispose()
    body = {"user": user_id, "amount": "0.01", "service": "maps", "description": "call"}
    acknowledged: dict[int, dict[str, object]] = {}
    lock = threading.Lock()

    with serve(sqlite_database_url, tmp_path) as (process, base):
        stop = threading.Event()

        def send(offset: int) -> None:
            with httpx.Client(
                base_url=base, timeout=30, headers={"Authorization": f"Bearer {key}"}
            ) as client:
                for n in range(offset, CHARGES, 4):
                    if stop.is_set():
                        return
                    try:
                        response = client.post(
                            "/v1/charges", json=body, headers={"Idempotency-Key": f"charge-{n}"}
                        )
                    except httpx.HTTPError:
                        return  # The server died under this request: not acknowledged.
                    assert response.status_code == 201, response.text
                    with lock:
                        acknowledged[n] = response.json()

        senders = [threading.Thread(target=send, args=(offset,)) for offset in range(4)]
        for sender in senders:
            sender.start()
        while True:
            with lock:
                if len(acknowledged) >= 100:
                    break
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
        stop.set()
        for sender in senders:
            sender.join(timeout=30)
    assert 100 <= len(acknowledged) < CHARGES

    with (
        serve(sqlite_database_url, tmp_path) as (_process, base),
        httpx.Client(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {key}"}
        ) as client,
    ):
        again = {
            n: client.post("/v1/charges", json=body, headers={"Idempotency-Key": f"charge-{n}"})
            for n in range(CHARGES)
        }
    for n, answer in acknowledged.items():
        assert again[n].headers.get("idempotent-replayed") == "true", n
        assert again[n].json() == answer, "a retried charge did not get its first answer"
    assert all(response.status_code == 201 for response in again.values())
    after = make_context(sqlite_database_url, tmp_path)
    balance = after.read(parties.get_balance, SYSTEM, user_id)
    assert balance.posted == Decimal(1000) - Decimal("0.01") * CHARGES  # Each charged once.
    report = after.read(verify, SYSTEM)
    assert report.ok, [(c.name, c.problems) for c in report.checks if not c.ok]
    after.db.dispose()
