"""The usage stream on the real NATS JetStream server and PostgreSQL: the edge answers once
JetStream holds the events, `billfold worker` charges them, and nothing acknowledged is
lost or charged twice when a worker is killed mid-stream."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
import pytest
from nats.js.errors import NotFoundError
from sqlalchemy import func, select

from billfold import ledger, parties
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from billfold.domain.ledger import shard_of
from billfold.domain.money import currency, from_units
from billfold.ledger.verify import verify
from billfold.store.ledger_tables import transfers
from billfold.store.tables import usage_events
from tests.conftest import IN_CI, PG_ADMIN_DSN, TEST_SECRET, LiveServer
from tests.e2e.test_metrics import PLAN, scrape, value
from tests.integration.helpers import funded_user, metered_catalog

NATS_URL = os.environ.get("BILLFOLD_TEST_NATS", "nats://127.0.0.1:4222")
SHARDS = 4
# Debian puts it in /usr/sbin, which a CI shell's PATH may lack (`make services` installs it).
NATS_SERVER = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
pytestmark = pytest.mark.postgres


def _run(coroutine: Any) -> Any:
    """asyncio.run on a thread of its own: the browser tests' Playwright keeps an event
    loop running on the main thread of a test process for the whole session."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _nats_problem() -> str | None:
    async def probe() -> None:
        client = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
        try:
            await client.jetstream().account_info()
        finally:
            await client.close()

    try:
        _run(probe())
    except Exception as error:  # Any failure to reach JetStream is the reason to skip.
        return f"{type(error).__name__}: {error}"
    return None


@pytest.fixture
def stream(pg_ctx: Context) -> Iterator[dict[str, str]]:
    """A stream of the test's own, deleted afterwards; its settings for server and worker."""
    problem = _nats_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"NATS JetStream is not reachable at {NATS_URL}: {problem}")
        pytest.skip(f"NATS JetStream is not reachable at {NATS_URL}: {problem}")
    tag = uuid.uuid4().hex[:10]
    names = {
        "stream_name": f"BILLFOLD_TEST_{tag}",
        "stream_subjects": f"billfold-test.{tag}",
        "stream_shards": str(SHARDS),
    }
    pg_ctx.settings = pg_ctx.settings.model_copy(
        update={"nats_url": NATS_URL, **names, "stream_shards": SHARDS}
    )
    yield names

    async def delete() -> None:
        client = await nats.connect(NATS_URL)
        try:
            with suppress(NotFoundError):  # No event reached the stream.
                await client.jetstream().delete_stream(names["stream_name"])
        finally:
            await client.close()

    _run(delete())


def _platform(ctx: Context, users: int) -> tuple[list[str], str]:
    """A provider selling "maps" pay as you go, `users` customers with 100 USD each, and
    the provider's key."""
    me = metered_catalog(ctx, PLAN)
    customers = [funded_user(ctx, n, "100") for n in range(users)]
    key = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)[1]
    return customers, key


def _env(ctx: Context, names: dict[str, str], home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "BILLFOLD_DATABASE_URL": ctx.db.url,
        "BILLFOLD_HOME": str(home),
        "BILLFOLD_SECRET_KEY": TEST_SECRET,
        "BILLFOLD_NATS_URL": NATS_URL,
        "BILLFOLD_LOG_LEVEL": "WARNING",
        **{f"BILLFOLD_{k.upper()}": v for k, v in names.items()},
    }


def _start_worker(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "billfold.cli", "worker", *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _stored(ctx: Context) -> int:
    with ctx.db.unit_of_work() as uow:
        return int(uow.conn.execute(select(func.count()).select_from(usage_events)).scalar_one())


def _spent(ctx: Context, users: list[str]) -> Decimal:
    usd = currency("USD")
    return sum(
        (
            Decimal(100) - from_units(ctx.read(ledger.user_standing, u, "USD", 0).posted, usd)
            for u in users
        ),
        Decimal(0),
    )


def _wait_for(check: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("not reached in time")


def _messages(batches: list[list[dict]]) -> int:
    """How many messages the edge publishes for these requests: one per shard of each."""
    return sum(len({shard_of(str(e["user"]), SHARDS) for e in b}) for b in batches)


def _batches(ctx: Context, users: list[str], count: int, size: int, tag: str) -> list[list[dict]]:
    now = ctx.clock.now().isoformat()
    return [
        [
            {
                "id": f"{tag}-{b}-{n}",
                "user": users[(b + n) % len(users)],
                "service": "maps",
                "metric": "calls",
                "timestamp": now,
            }
            for n in range(size)
        ]
        for b in range(count)
    ]


def test_acknowledged_events_wait_in_the_stream_until_a_worker_charges_them_once(
    pg_ctx: Context, stream: dict[str, str], tmp_path: Path
) -> None:
    ctx = pg_ctx
    users, key = _platform(ctx, 6)
    batches = _batches(ctx, users, 5, 100, "w")
    with LiveServer(ctx) as server, server.client(key) as client:
        for batch in batches:
            answer = client.post("/v1/events", json={"events": batch}).json()
            assert answer["charging"] == "asynchronous"
            assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (100, 0, [])
        # Sent again: the stream already holds every id.
        again = client.post("/v1/events", json={"events": batches[0]}).json()
        assert (again["accepted"], again["duplicates"]) == (0, 100)
        # A bad event is refused at the edge, as without the stream.
        bad = client.post("/v1/events", json={"events": [{**batches[0][0], "metric": "x"}]})
        assert bad.json()["rejected"][0]["error"]["code"] == "metric_not_found"
        # No worker yet: acknowledged, held, not charged, and the operator sees it wait.
        time.sleep(0.5)
        assert _stored(ctx) == 0 and _spent(ctx, users) == 0
        admin_key = ctx.run(create_key, SYSTEM, role=Role.ADMIN)[1]
        with server.client(admin_key) as admin:
            waiting = admin.get("/v1/admin/stream").json()
            # One message per request and shard: the lag is counted in messages.
            sent = _messages(batches)
            assert (waiting["lag"], waiting["messages"]) == (sent, sent)
            assert all(s["worker"] is None for s in waiting["shards"])
            assert sum(s["pending"] for s in waiting["shards"]) == sent
            assert value(scrape(admin), "billfold_stream_lag_messages") == sent
            port = _free_ports(1)[0]
            worker = _start_worker(_env(ctx, stream, tmp_path), "--metrics-port", str(port))
            try:
                _wait_for(lambda: _stored(ctx) == 500, 60)
                _wait_for(lambda: _spent(ctx, users) == Decimal("5.00"), 10)
                _wait_for(lambda: admin.get("/v1/admin/stream").json()["lag"] == 0, 10)
                shards = admin.get("/v1/admin/stream").json()["shards"]
                assert all(s["worker"] is not None for s in shards)  # One worker holds all.
                assert value(scrape(admin), "billfold_stream_lag_messages") == 0
                # The worker's own metrics: what it charged, and the lag it last saw.
                own = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                assert value(own, "billfold_usage_events_total", outcome="accepted") == 500
                _wait_for(
                    lambda: (
                        value(
                            httpx.get(f"http://127.0.0.1:{port}/metrics").text,
                            "billfold_stream_lag_messages",
                        )
                        == 0
                    ),
                    10,
                )
            finally:
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(timeout=30) == 0, worker.stderr.read() if worker.stderr else ""
    assert ctx.read(verify, SYSTEM).ok


def test_a_worker_killed_mid_stream_loses_and_doubles_nothing(
    pg_ctx: Context, stream: dict[str, str], tmp_path: Path
) -> None:
    ctx = pg_ctx
    users, key = _platform(ctx, 8)
    batches = _batches(ctx, users, 40, 250, "k")
    assert len({shard_of(u, SHARDS) for u in users}) > 1  # The users span several shards.
    env = _env(ctx, stream, tmp_path)
    with LiveServer(ctx) as server, server.client(key) as client:
        for batch in batches:
            assert client.post("/v1/events", json={"events": batch}).json()["accepted"] == 250
    first = _start_worker(env)
    _wait_for(lambda: _stored(ctx) > 0, 60)
    os.killpg(first.pid, signal.SIGKILL)  # Mid-stream: some batches charged, some not.
    first.wait(timeout=30)
    partly = _stored(ctx)
    assert 0 < partly < 10_000
    # Two workers now: they share the shards, and take over the dead one's.
    workers = [_start_worker(env), _start_worker(env)]
    try:
        _wait_for(lambda: _stored(ctx) == 10_000, 120)
        _wait_for(lambda: _spent(ctx, users) == Decimal("100.00"), 10)
        time.sleep(1)  # Nothing more arrives: no redelivery is charged again.
        assert _stored(ctx) == 10_000 and _spent(ctx, users) == Decimal("100.00")
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            assert process.wait(timeout=30) == 0
    assert ctx.read(verify, SYSTEM).ok
    # The workers appended to several journal chains, each user's usage to its shard's.
    with ctx.db.unit_of_work(read_only=True) as uow:
        chains = dict(
            uow.conn.execute(
                select(transfers.c.user_id, transfers.c.chain)
                .where(transfers.c.metric.is_not(None))
                .distinct()
            ).all()
        )
    assert chains == {user: shard_of(user, 16) for user in users}
    assert len(set(chains.values())) > 1


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
def test_the_stream_needs_postgresql(command: list[str], tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BILLFOLD_HOME": str(tmp_path),
        "BILLFOLD_NATS_URL": NATS_URL,
        "BILLFOLD_DATABASE_URL": f"sqlite+pysqlite:///{tmp_path / 'b.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "billfold.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "BILLFOLD_NATS_URL needs PostgreSQL" in done.stderr


def test_the_worker_needs_the_stream(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BILLFOLD_NATS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "billfold.cli", "worker"],
        env={**env, "BILLFOLD_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "set BILLFOLD_NATS_URL" in done.stderr


def test_shards_are_stable_and_spread() -> None:
    assert shard_of("usr_abc", 16) == shard_of("usr_abc", 16)
    counts = [0] * 16
    for n in range(16_000):
        counts[shard_of(f"usr_{n}", 16)] += 1
    assert min(counts) > 800 and max(counts) < 1200


SERVERS: dict[str, int] = {}


@contextmanager
def _server(env: dict[str, str], *extra: str) -> Iterator[str]:
    """A `billfold serve` process on the stream (its own process group); its base URL.
    Its pid is in SERVERS[base] while it runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "billfold.cli", "serve", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    SERVERS[base] = process.pid
    try:
        _wait_for(lambda: _up(base), 30)
        yield base
    finally:
        SERVERS.pop(base, None)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _post(base: str, key: str, batch: list[dict]) -> dict[str, object] | None:
    """The answer, or None when the request did not get one (the server died)."""
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            answer = client.post(
                "/v1/events",
                json={"events": batch},
                headers={"Authorization": f"Bearer {key}"},
            )
    except httpx.HTTPError:
        return None
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_serve_with_worker_charges_what_it_accepts(
    pg_ctx: Context, stream: dict[str, str], tmp_path: Path
) -> None:
    ctx = pg_ctx
    users, key = _platform(ctx, 3)
    with _server(_env(ctx, stream, tmp_path), "--worker") as base:
        for batch in _batches(ctx, users, 3, 100, "sw"):
            assert _post(base, key, batch)["accepted"] == 100  # type: ignore[index]
        _wait_for(lambda: _spent(ctx, users) == Decimal("3.00"), 60)
    assert _stored(ctx) == 300 and ctx.read(verify, SYSTEM).ok


def test_the_same_batches_sent_to_two_servers_at_once_are_charged_once(
    pg_ctx: Context, stream: dict[str, str], tmp_path: Path
) -> None:
    ctx = pg_ctx
    users, key = _platform(ctx, 5)
    env = _env(ctx, stream, tmp_path)
    batches = _batches(ctx, users, 10, 200, "two")
    with _server(env) as one, _server(env) as two, ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda job: _post(job[0], key, job[1]),
                [(b, x) for x in batches for b in (one, two)],
            )
        )
    accepted = sum(int(a["accepted"]) for a in answers if a)  # type: ignore[call-overload]
    duplicates = sum(int(a["duplicates"]) for a in answers if a)  # type: ignore[call-overload]
    assert (accepted, duplicates) == (2000, 2000)
    worker = _start_worker(env)
    try:
        _wait_for(lambda: _spent(ctx, users) == Decimal("20.00"), 60)
        assert _stored(ctx) == 2000
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    assert ctx.read(verify, SYSTEM).ok


def test_a_server_killed_mid_request_loses_nothing_when_clients_send_again(
    pg_ctx: Context, stream: dict[str, str], tmp_path: Path
) -> None:
    ctx = pg_ctx
    users, key = _platform(ctx, 5)
    env = _env(ctx, stream, tmp_path)
    batches = _batches(ctx, users, 30, 200, "cut")
    answered: list[dict[str, object] | None] = [None] * len(batches)
    with _server(env) as base:
        pid = SERVERS[base]

        def send(index: int) -> None:
            answered[index] = _post(base, key, batches[index])

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(send, i) for i in range(len(batches))]
            _wait_for(lambda: sum(a is not None for a in answered) >= 3, 30)
            os.kill(pid, signal.SIGKILL)  # Mid-request: some answered, some cut.
            for future in futures:
                future.result()
    cut = [i for i, a in enumerate(answered) if a is None]
    assert cut, "the kill came too late to cut any request"
    # The clients send every unanswered batch again, to a new server, with the same ids.
    with _server(env, "--worker") as base:
        for index in cut:
            again = _post(base, key, batches[index])
            assert again is not None
            assert int(again["accepted"]) + int(again["duplicates"]) == 200  # type: ignore[call-overload]
        _wait_for(lambda: _stored(ctx) == 6000, 60)
        _wait_for(lambda: _spent(ctx, users) == Decimal("60.00"), 10)
    assert ctx.read(verify, SYSTEM).ok


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def _nats_cluster(folder: Path) -> Iterator[tuple[list[subprocess.Popen[bytes]], str]]:
    """Three nats-server nodes in one JetStream cluster, started as docs/DEPLOY.md says
    (on free ports and folders of the test's own); the client URL of all three."""
    ports = _free_ports(6)
    clients, routes = ports[:3], ports[3:]
    nodes = []
    for n in range(3):
        others = ",".join(f"nats://127.0.0.1:{routes[m]}" for m in range(3) if m != n)
        nodes.append(
            subprocess.Popen(
                [NATS_SERVER or "nats-server", "-js", "-p", str(clients[n]),
                 "--cluster_name", "billfold",
                 "--cluster", f"nats://127.0.0.1:{routes[n]}", "--routes", others,
                 "-sd", str(folder / f"n{n}"), "-n", f"n{n}", "-a", "127.0.0.1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
    url = ",".join(f"nats://127.0.0.1:{p}" for p in clients)

    async def ready() -> bool:
        client = await nats.connect(url.split(","), connect_timeout=1, max_reconnect_attempts=0)
        try:
            await client.jetstream().account_info()
            return True
        except Exception:  # No meta leader yet.
            return False
        finally:
            await client.close()

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _run(ready()):
                    break
            except Exception:  # Not listening yet.
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the NATS cluster did not form")
            time.sleep(0.3)
        yield nodes, url
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
            node.wait(timeout=30)


@pytest.mark.slow
def test_the_documented_topology_loses_nothing_when_a_nats_node_dies(
    pg_ctx: Context, stream: dict[str, str], tmp_path: Path
) -> None:
    """Three NATS nodes (replicas 3), two servers, two workers, as docs/DEPLOY.md runs
    them; one NATS node killed mid-stream. Every acknowledged event is charged once."""
    if NATS_SERVER is None:
        if IN_CI:
            pytest.fail("nats-server is not installed (Debian's nats-server package)")
        pytest.skip("nats-server is not installed")
    ctx = pg_ctx
    users, key = _platform(ctx, 8)
    batches = _batches(ctx, users, 40, 100, "cluster")
    admin = ctx.run(create_key, SYSTEM, role=Role.ADMIN)[1]
    with _nats_cluster(tmp_path / "nats") as (nodes, url):
        env = {**_env(ctx, stream, tmp_path), "BILLFOLD_NATS_URL": url,
               "BILLFOLD_STREAM_REPLICAS": "3"}  # fmt: skip
        workers = [_start_worker(env), _start_worker(env)]
        try:
            with _server(env) as one, _server(env) as two:
                acknowledged = [0] * len(batches)

                def send(index: int) -> None:
                    # A client sends a batch until it is answered, with the same ids.
                    base = (one, two)[index % 2]
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        try:
                            answer = _post(base, key, batches[index])
                        except AssertionError:  # A 5xx while the cluster elects a leader.
                            answer = None
                        if answer is not None:
                            acknowledged[index] = int(answer["accepted"]) + int(  # type: ignore[call-overload]
                                answer["duplicates"]  # type: ignore[call-overload]
                            )
                            return
                        time.sleep(0.2)

                with ThreadPoolExecutor(4) as pool:
                    futures = [pool.submit(send, i) for i in range(len(batches))]
                    _wait_for(lambda: sum(acknowledged) >= 800, 60)
                    nodes[0].kill()  # Mid-stream: one of three replicas gone.
                    for future in futures:
                        future.result()
                assert acknowledged == [100] * len(batches)
                _wait_for(lambda: _stored(ctx) == 4000, 120)
                _wait_for(lambda: _spent(ctx, users) == Decimal("40.00"), 10)

                def state() -> dict[str, int]:
                    headers = {"Authorization": f"Bearer {admin}"}
                    return dict(httpx.get(f"{two}/v1/admin/stream", headers=headers).json())

                # Acknowledged just after each commit: the lag reaches 0 a moment later.
                _wait_for(lambda: state()["lag"] == 0, 30)
                assert (state()["replicas"], state()["messages"]) == (3, _messages(batches))
        finally:
            for process in workers:
                process.send_signal(signal.SIGTERM)
            for process in workers:
                process.wait(timeout=30)
    assert ctx.read(verify, SYSTEM).ok


def test_database_connections_cut_mid_stream_lose_and_double_nothing(
    pg_ctx: Context, stream: dict[str, str], tmp_path: Path
) -> None:
    """PostgreSQL ends every connection of the worker (as a restart would) while it
    charges; it reconnects, takes its shards again, and charges every event once."""
    ctx = pg_ctx
    users, key = _platform(ctx, 6)
    env = _env(ctx, stream, tmp_path)
    with LiveServer(ctx) as server, server.client(key) as client:
        for batch in _batches(ctx, users, 30, 200, "pg"):
            assert client.post("/v1/events", json={"events": batch}).json()["accepted"] == 200
    worker = _start_worker(env)
    try:
        _wait_for(lambda: _stored(ctx) > 0, 60)
        database = ctx.db.url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name <> 'pytest-admin' "
                "AND pid <> pg_backend_pid()",
                (database,),
            ).fetchone()
        assert cut and cut[0] > 0
        ctx.db.dispose()  # The test's own pool lost its connections too.
        _wait_for(lambda: _stored(ctx) == 6000, 120)
        _wait_for(lambda: _spent(ctx, users) == Decimal("60.00"), 10)
        assert worker.poll() is None  # It survived the cut.
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert ctx.read(verify, SYSTEM).ok


def test_a_stream_that_does_not_answer_is_a_503_and_nothing_is_counted(
    pg_ctx: Context, tmp_path: Path
) -> None:
    ctx = pg_ctx
    users, key = _platform(ctx, 1)
    dead = f"nats://127.0.0.1:{_free_ports(1)[0]}"
    ctx.settings = ctx.settings.model_copy(update={"nats_url": dead, "stream_shards": SHARDS})
    batch = {"events": _batches(ctx, users, 1, 5, "d")[0]}
    with LiveServer(ctx) as server, server.client(key) as client:
        refused = client.post("/v1/events", json=batch, headers={"Idempotency-Key": "d-1"})
        # The key is free again: the request is sent again, not replayed.
        retried = client.post("/v1/events", json=batch, headers={"Idempotency-Key": "d-1"})
    assert refused.status_code == retried.status_code == 503, refused.text
    assert retried.headers.get("idempotent-replayed") is None
    error = refused.json()["error"]
    assert error["code"] == "stream_unavailable" and "same ids" in error["message"]
    assert _stored(ctx) == 0 and _spent(ctx, users) == 0


def test_a_provider_cannot_stream_usage_for_another_providers_service(
    pg_ctx: Context, stream: dict[str, str]
) -> None:
    """The edge checks who sends as the single process does: a second provider's key
    sending events for the first's service and customers publishes nothing."""
    ctx = pg_ctx
    users, _key = _platform(ctx, 2)
    other = ctx.run(
        parties.create_provider, SYSTEM, name="B", email="b@p.io", commission_rate="0.2"
    )
    hostile = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=other.id)[1]
    with LiveServer(ctx) as server, server.client(hostile) as client:
        answer = client.post(
            "/v1/events", json={"events": _batches(ctx, users, 1, 10, "h")[0]}
        ).json()
        assert answer["accepted"] == 0 and len(answer["rejected"]) == 10
        assert {r["error"]["code"] for r in answer["rejected"]} == {"service_not_found"}

    async def held() -> int:
        client = await nats.connect(NATS_URL)
        try:
            found = await client.jetstream().stream_info(stream["stream_name"])
            return int(found.state.messages)
        except NotFoundError:
            return 0
        finally:
            await client.close()

    assert _run(held()) == 0  # Nothing reached the stream.
    assert _stored(ctx) == 0 and _spent(ctx, users) == 0


def test_the_edge_reserves_a_keyed_request_and_replays_it(
    pg_ctx: Context, stream: dict[str, str], tmp_path: Path
) -> None:
    """With the stream there is no usage group to claim the Idempotency-Key in: the edge
    reserves it first. The same key again replays the answer; another body under it is
    refused."""
    ctx = pg_ctx
    users, key = _platform(ctx, 1)
    batch = {"events": _batches(ctx, users, 1, 3, "k")[0]}
    with LiveServer(ctx) as server, server.client(key) as client:
        headers = {"Idempotency-Key": "edge-1"}
        first = client.post("/v1/events", json=batch, headers=headers)
        again = client.post("/v1/events", json=batch, headers=headers)
        other = client.post("/v1/events", json={"events": batch["events"][:1]}, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 3 and first.json()["charging"] == "asynchronous"
    assert (again.status_code, again.json()) == (200, first.json())
    assert again.headers.get("idempotent-replayed") == "true"
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
