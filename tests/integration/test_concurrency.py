"""32 concurrent clients charging one wallet on PostgreSQL never take it below its floor.

Through the service layer (threads sharing the engine's pool) and through HTTP (a real
server, one client per thread): the final balance is exactly the initial balance minus
the approved charges, every approved charge is in the journal, and verify passes.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, select

from billfold import parties
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from billfold.domain.errors import InsufficientFunds
from billfold.ledger.verify import verify
from billfold.store.ledger_tables import transfers
from tests.conftest import LiveServer
from tests.integration.helpers import make_customer

CLIENTS = 32
CHARGES_EACH = 12
PRICE = Decimal("1.37")
START_BALANCE = Decimal("100.00")
CREDIT_LIMIT = Decimal("5.00")


def _setup(ctx: Context) -> tuple[str, str]:
    provider = ctx.run(
        parties.create_provider,
        SYSTEM,
        name="Maps",
        email="maps@example.com",
        commission_rate="0.25",
    )
    user = ctx.run(
        parties.create_user,
        SYSTEM,
        name="Ana",
        email="ana@example.com",
        currency_code="USD",
        credit_limit=str(CREDIT_LIMIT),
    )
    ctx.run(parties.top_up, SYSTEM, user.id, amount=str(START_BALANCE))
    make_customer(ctx, provider.id, user.id)
    return provider.id, user.id


def _check(ctx: Context, user_id: str, approved: list[str]) -> None:
    assert len(approved) == len(set(approved))
    balance = ctx.run(parties.get_balance, SYSTEM, user_id)
    assert balance.posted == START_BALANCE - PRICE * len(approved)
    assert balance.posted >= -CREDIT_LIMIT
    # The wallet ran dry: it must be too low for one more charge, or nothing was refused.
    assert balance.available < PRICE or len(approved) == CLIENTS * CHARGES_EACH
    with ctx.db.unit_of_work(read_only=True) as uow:
        stored = set(
            uow.conn.execute(
                select(transfers.c.id).where(
                    transfers.c.kind == "charge", transfers.c.user_id == user_id
                )
            ).scalars()
        )
        assert stored == set(approved)
        count = uow.conn.execute(select(func.count()).select_from(transfers)).scalar_one()
        assert count == len(approved) + 1
    report = ctx.run(verify, SYSTEM)
    assert report.ok, [(c.name, c.problems) for c in report.checks if not c.ok]


@pytest.mark.postgres
def test_concurrent_charges_through_the_service_layer(pg_ctx: Context) -> None:
    provider_id, user_id = _setup(pg_ctx)
    provider = Principal(key_id="test", role=Role.PROVIDER, provider_id=provider_id)
    approved: list[str] = []
    refused = 0
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)

    def client(index: int) -> None:
        nonlocal refused
        barrier.wait()
        for n in range(CHARGES_EACH):
            try:
                movement = pg_ctx.run(
                    parties.charge,
                    provider,
                    user_ref=user_id,
                    amount=str(PRICE),
                    description="call",
                    transfer_id=f"c-{index}-{n}",
                )
            except InsufficientFunds:
                with lock:
                    refused += 1
                continue
            with lock:
                approved.append(movement.transfer.id)

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    assert refused > 0 and approved
    assert len(approved) + refused == CLIENTS * CHARGES_EACH
    _check(pg_ctx, user_id, approved)


@pytest.mark.postgres
def test_concurrent_charges_through_http(pg_ctx: Context) -> None:
    provider_id, user_id = _setup(pg_ctx)
    _, secret = pg_ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=provider_id)
    approved: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)
    with LiveServer(pg_ctx) as live:

        def client(index: int) -> None:
            with live.client(secret) as http:
                barrier.wait()
                for n in range(CHARGES_EACH):
                    response = http.post(
                        "/v1/charges",
                        json={"user": user_id, "amount": str(PRICE), "description": "call"},
                        headers={"Idempotency-Key": f"k-{index}-{n}"},
                    )
                    with lock:
                        statuses.append(response.status_code)
                        if response.status_code == 201:
                            approved.append(response.json()["id"])
                        else:
                            assert response.status_code == 402, response.text
                            assert response.json()["error"]["type"] == "insufficient_funds"

        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(client, range(CLIENTS)))
    assert statuses.count(201) == len(approved) and 402 in statuses
    _check(pg_ctx, user_id, approved)


@pytest.mark.postgres
def test_clients_that_hang_up_mid_request_get_the_original_answer_on_retry(
    pg_ctx: Context,
) -> None:
    """16 clients send a charge and hang up before the answer (a 2 ms read timeout, so
    most leave while their request waits in a group commit); each then retries with the
    same Idempotency-Key. Every retry gets one answer for its key, and the ledger holds
    exactly one charge per key: nothing a client gave up on is lost or doubled."""
    provider_id, user_id = _setup(pg_ctx)
    _, secret = pg_ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=provider_id)
    keys = [f"hangup-{i}" for i in range(16)]
    hung_up = 0
    lock = threading.Lock()
    barrier = threading.Barrier(len(keys))
    with LiveServer(pg_ctx) as live:

        def client(key: str) -> tuple[str, int, str]:
            nonlocal hung_up
            body = {"user": user_id, "amount": str(PRICE), "description": "call"}
            headers = {"Idempotency-Key": key}
            barrier.wait()
            with live.client(secret) as impatient:
                try:
                    impatient.post("/v1/charges", json=body, headers=headers, timeout=0.002)
                except httpx.TimeoutException:
                    with lock:
                        hung_up += 1
            with live.client(secret) as patient:
                for _ in range(50):
                    answer = patient.post("/v1/charges", json=body, headers=headers)
                    if answer.status_code != 409:  # idempotency_key_in_use: still running.
                        break
                    time.sleep(0.05)
            assert answer.status_code == 201, answer.text
            again = live.client(secret).post("/v1/charges", json=body, headers=headers)
            assert again.json()["id"] == answer.json()["id"]
            return key, answer.status_code, answer.json()["id"]

        with ThreadPoolExecutor(len(keys)) as pool:
            results = list(pool.map(client, keys))
    assert hung_up > 0  # The test did make clients leave mid-request.
    approved = {transfer_id for _key, _status, transfer_id in results}
    assert len(approved) == len(keys)
    balance = pg_ctx.run(parties.get_balance, SYSTEM, user_id)
    assert balance.posted == START_BALANCE - PRICE * len(keys)
    with pg_ctx.db.unit_of_work(read_only=True) as uow:
        stored = set(
            uow.conn.execute(
                select(transfers.c.id).where(
                    transfers.c.kind == "charge", transfers.c.user_id == user_id
                )
            ).scalars()
        )
    assert stored == approved
    assert pg_ctx.run(verify, SYSTEM).ok
