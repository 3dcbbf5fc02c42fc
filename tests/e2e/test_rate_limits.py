"""Rate limits per API key and per anonymous address; shared by processes through Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from tests.conftest import IN_CI, TEST_SECRET, LiveServer

REDIS_URL = os.environ.get("BILLFOLD_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _redis_problem() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        return None
    except Exception as error:
        return str(error)


@pytest.fixture
def limited(ctx: Context) -> Iterator[LiveServer]:
    ctx.settings.rate_limit = "5/minute"
    with LiveServer(ctx) as live:
        yield live


def test_a_key_past_its_limit_gets_429_with_retry_after(ctx: Context, limited: LiveServer) -> None:
    _, one = ctx.run(create_key, SYSTEM, role=Role.ADMIN, name="one")
    _, two = ctx.run(create_key, SYSTEM, role=Role.ADMIN, name="two")
    with limited.client(one) as a, limited.client(two) as b:
        assert [a.get("/v1/me").status_code for _ in range(5)] == [200] * 5
        over = a.get("/v1/me")
        assert over.status_code == 429
        assert over.json()["error"]["type"] == "rate_limited"
        assert 1 <= int(over.headers["retry-after"]) <= 60
        assert b.get("/v1/me").status_code == 200  # Another key has its own count.
    anonymous = [httpx.get(f"{limited.url}/v1/me").status_code for _ in range(6)]
    assert anonymous == [401] * 5 + [429]
    assert httpx.get(f"{limited.url}/healthz").status_code == 200  # Never limited.


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_processes_share_one_count_through_redis(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    problem = _redis_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true but Redis at {REDIS_URL} is unreachable: {problem}")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {problem}")
    env = {
        **os.environ,
        "BILLFOLD_HOME": str(tmp_path),
        "BILLFOLD_DATABASE_URL": sqlite_database_url,
        "BILLFOLD_SECRET_KEY": TEST_SECRET,
        "BILLFOLD_RATE_LIMIT": "6/minute",
        "BILLFOLD_REDIS_URL": REDIS_URL,
        "BILLFOLD_LOG_LEVEL": "WARNING",
    }
    key = subprocess.run(
        [sys.executable, "-m", "billfold.cli", "keys", "create", "--role", "admin",
         "--name", f"shared-{uuid.uuid4().hex[:8]}"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    ports = [_free_port(), _free_port()]
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "billfold.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port in ports:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "a server did not start"
                    time.sleep(0.2)
        headers = {"Authorization": f"Bearer {key}"}
        answers = [
            httpx.get(f"http://127.0.0.1:{ports[n % 2]}/v1/me", headers=headers).status_code
            for n in range(8)
        ]
        # Six between them, whichever process answers: the count is one.
        assert answers == [200] * 6 + [429] * 2
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
