"""The HTTP API over a real server: roles, tenants, bad input, idempotency, pagination."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select

from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from billfold.store.ledger_tables import accounts, transfers
from billfold.store.tables import audit_log, providers, users
from tests.conftest import LiveServer


@dataclass
class World:
    server: LiveServer
    provider_a: str
    provider_b: str
    user_x: str
    user_y: str
    charge_a: str
    keys: dict[str, str]

    def client(self, who: str | None) -> httpx.Client:
        return self.server.client(self.keys[who] if who else None)


@pytest.fixture
def world(ctx: Context, server: LiveServer, admin_key: str) -> Iterator[World]:
    with server.client(admin_key) as admin:

        def make(path: str, body: dict[str, object]) -> str:
            response = admin.post(path, json=body)
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        pa = make("/v1/providers", {"name": "A", "email": "a@p.io", "commission_rate": "0.2"})
        pb = make("/v1/providers", {"name": "B", "email": "b@p.io", "commission_rate": "0.1"})
        ux = make(
            "/v1/users", {"name": "X", "email": "x@u.io", "currency": "USD", "credit_limit": "10"}
        )
        uy = make("/v1/users", {"name": "Y", "email": "y@u.io", "currency": "EUR"})
        admin.post(f"/v1/users/{ux}/top-ups", json={"amount": "100"}).raise_for_status()
        # X is a customer of provider A (pay-as-you-go), and of no one else.
        make("/v1/services", {"provider_id": pa, "code": "shop", "name": "Shop"})
        make(
            "/v1/plans",
            {"code": "shop-payg", "service": "shop", "currency": "USD", "interval": "none"},
        )
        make("/v1/subscriptions", {"user": ux, "service": "shop"})
        charge = make(
            "/v1/charges",
            {"user": ux, "amount": "5", "provider_id": pa, "description": "setup fee"},
        )
    keys = {
        "admin": admin_key,
        "provider_a": ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=pa)[1],
        "provider_b": ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=pb)[1],
        "user_x": ctx.run(create_key, SYSTEM, role=Role.USER, user_id=ux)[1],
        "user_y": ctx.run(create_key, SYSTEM, role=Role.USER, user_id=uy)[1],
    }
    yield World(server, pa, pb, ux, uy, charge, keys)


def _counts(ctx: Context) -> tuple[int, ...]:
    with ctx.db.unit_of_work(read_only=True) as uow:
        return tuple(
            uow.conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (transfers, users, providers, accounts, audit_log)
        )


# Each row: method, path template, body, and the expected status per caller.
WHO = ["admin", "provider_a", "provider_b", "user_x", "user_y"]
MATRIX: list[tuple[str, str, dict[str, object] | None, dict[str, int]]] = [
    (
        "POST",
        "/v1/providers",
        {"name": "C", "email": "c@p.io", "commission_rate": "0.3"},
        {"admin": 201, "provider_a": 403, "provider_b": 403, "user_x": 403, "user_y": 403},
    ),
    (
        "GET",
        "/v1/providers",
        None,
        {"admin": 200, "provider_a": 403, "provider_b": 403, "user_x": 403, "user_y": 403},
    ),
    (
        "GET",
        "/v1/providers/{provider_a}",
        None,
        {"admin": 200, "provider_a": 200, "provider_b": 404, "user_x": 404, "user_y": 404},
    ),
    (
        "POST",
        "/v1/providers/{provider_a}",
        {"commission_rate": "0.25"},
        {"admin": 200, "provider_a": 403, "provider_b": 403, "user_x": 403, "user_y": 403},
    ),
    (
        "POST",
        "/v1/users",
        {"name": "Z", "email": "z@u.io", "currency": "USD"},
        {"admin": 201, "provider_a": 403, "provider_b": 403, "user_x": 403, "user_y": 403},
    ),
    (
        "GET",
        "/v1/users",
        None,
        {"admin": 200, "provider_a": 403, "provider_b": 403, "user_x": 403, "user_y": 403},
    ),
    (
        "GET",
        "/v1/users/{user_x}",
        None,
        {"admin": 200, "provider_a": 404, "provider_b": 404, "user_x": 200, "user_y": 404},
    ),
    (
        "GET",
        "/v1/users/{user_x}/balance",
        None,
        {"admin": 200, "provider_a": 404, "provider_b": 404, "user_x": 200, "user_y": 404},
    ),
    (
        "GET",
        "/v1/users/{user_x}/transactions",
        None,
        {"admin": 200, "provider_a": 404, "provider_b": 404, "user_x": 200, "user_y": 404},
    ),
    (
        "POST",
        "/v1/users/{user_x}/top-ups",
        {"amount": "1"},
        {"admin": 201, "provider_a": 403, "provider_b": 403, "user_x": 403, "user_y": 403},
    ),
    (
        "POST",
        "/v1/users/{user_x}/credit-limit",
        {"credit_limit": "20"},
        {"admin": 200, "provider_a": 403, "provider_b": 403, "user_x": 403, "user_y": 403},
    ),
    (
        "POST",
        "/v1/charges",
        {"user": "{user_x}", "amount": "1", "description": "add-on"},
        # Customers by consent: X chose A, so B may not charge X.
        {"admin": 201, "provider_a": 201, "provider_b": 404, "user_x": 403, "user_y": 403},
    ),
    (
        "POST",
        "/v1/charges",
        {"user": "{user_x}", "amount": "1", "description": "x", "provider_id": "{provider_b}"},
        {"admin": 201, "provider_a": 403, "provider_b": 404, "user_x": 403, "user_y": 403},
    ),
    (
        "POST",
        "/v1/charges/{charge_a}/refunds",
        {"amount": "0.01"},
        {"admin": 201, "provider_a": 201, "provider_b": 404, "user_x": 403, "user_y": 403},
    ),
    (
        "POST",
        "/v1/api-keys",
        {"role": "user", "user_id": "{user_x}"},
        # docs/API.md: a provider or a user makes keys for itself, and only for itself.
        {"admin": 201, "provider_a": 403, "provider_b": 403, "user_x": 201, "user_y": 403},
    ),
    (
        "GET",
        "/v1/ledger/verify",
        None,
        {"admin": 200, "provider_a": 403, "provider_b": 403, "user_x": 403, "user_y": 403},
    ),
]


def _fill(value: object, world: World) -> object:
    names = {
        "provider_a": world.provider_a,
        "provider_b": world.provider_b,
        "user_x": world.user_x,
        "user_y": world.user_y,
        "charge_a": world.charge_a,
    }
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX]
)
def test_every_endpoint_checks_role_and_tenant(
    ctx: Context,
    world: World,
    method: str,
    path: str,
    body: dict[str, object] | None,
    expected: dict[str, int],
) -> None:
    url = str(_fill(path, world))
    payload = _fill(body, world) if body is not None else None
    for who in ["anonymous", "bad_key", *WHO]:
        before = _counts(ctx)
        if who == "anonymous":
            client = world.client(None)
        elif who == "bad_key":
            client = world.server.client("bf_admin_not-a-real-key")
        else:
            client = world.client(who)
        with client:
            response = client.get(url) if method == "GET" else client.post(url, json=payload)
        want = 401 if who in ("anonymous", "bad_key") else expected[who]
        assert response.status_code == want, f"{who}: {response.text}"
        if want >= 400:
            error = response.json()["error"]
            assert error["type"] in {"authentication", "permission", "not_found"}
            assert error["message"]
            assert _counts(ctx) == before, f"a refused call by {who} changed something"


BAD_TOP_UPS = [
    ({"amount": "-5"}, "amount"),
    ({"amount": "0"}, "amount"),
    ({"amount": "ten"}, "amount"),
    ({"amount": "1e13"}, "amount"),
    ({"amount": "1.001"}, "amount"),
    ({"amount": True}, "amount"),
    ({"amount": "9" * 70}, "amount"),
    ({}, "amount"),
    ({"amount": "5", "color": "red"}, "color"),
    ({"amount": "5", "reference": "r" * 300}, "reference"),
]


@pytest.mark.parametrize(("body", "param"), BAD_TOP_UPS, ids=[str(b) for b, _ in BAD_TOP_UPS])
def test_bad_top_ups_get_a_clear_4xx_and_change_nothing(
    ctx: Context, world: World, body: dict[str, object], param: str
) -> None:
    before = _counts(ctx)
    with world.client("admin") as admin:
        response = admin.post(f"/v1/users/{world.user_x}/top-ups", json=body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["param"] == param
    assert _counts(ctx) == before


def test_malformed_json_and_wrong_content(ctx: Context, world: World) -> None:
    before = _counts(ctx)
    with world.client("admin") as admin:
        for raw in (b"{bad", b'{"amount": NaN}', b'{"amount": Infinity}', b"[1,2", b"\xff\xfe"):
            response = admin.post(
                f"/v1/users/{world.user_x}/top-ups",
                content=raw,
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 400, raw
            assert response.json()["error"]["code"] in {"malformed_json", "invalid_parameter"}
    assert _counts(ctx) == before


BAD_REQUESTS = [
    ("/v1/users", {"name": "Q", "email": "q@u.io", "currency": "XYZ"}, 400, "currency"),
    ("/v1/users", {"name": "Q", "email": "q@u.io", "currency": "usd"}, 400, "currency"),
    ("/v1/users", {"name": "Q", "email": "not-an-email", "currency": "USD"}, 400, "email"),
    ("/v1/users", {"name": "", "email": "q@u.io", "currency": "USD"}, 400, "name"),
    (
        "/v1/users",
        {"name": "Q", "email": "q@u.io", "currency": "USD", "credit_limit": "-1"},
        400,
        "credit_limit",
    ),
    (
        "/v1/users",
        {"name": "Q", "email": "q@u.io", "currency": "USD", "billing_mode": "free"},
        400,
        "billing_mode",
    ),
    (
        "/v1/providers",
        {"name": "Q", "email": "q@p.io", "commission_rate": "1.5"},
        400,
        "commission_rate",
    ),
    ("/v1/providers", {"name": "Q", "email": "a@p.io", "commission_rate": "0.1"}, 409, "email"),
    ("/v1/charges", {"user": "usr_nobody", "amount": "1", "description": "x"}, 404, "user"),
    (
        "/v1/charges",
        {"user": "{user_x}", "amount": "1", "description": "x", "provider_id": "prv_nobody"},
        404,
        "provider_id",
    ),
    ("/v1/charges", {"user": "{user_x}", "amount": "-1", "description": "x"}, 400, "amount"),
    (
        "/v1/charges",
        {"user": "{user_x}", "amount": "0.000000001", "description": "x"},
        400,
        "amount",
    ),
    ("/v1/charges", {"user": "{user_x}", "amount": "1000", "description": "x"}, 402, None),
    ("/v1/charges/tr_nothing/refunds", {}, 404, None),
    ("/v1/charges/{charge_a}/refunds", {"amount": "6"}, 400, "amount"),
    ("/v1/api-keys", {"role": "provider"}, 400, "provider_id"),
    ("/v1/api-keys", {"role": "root"}, 400, "role"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    BAD_REQUESTS,
    ids=[f"{p} {b}" for p, b, _, _ in BAD_REQUESTS],
)
def test_bad_requests_are_refused_clearly(
    ctx: Context,
    world: World,
    path: str,
    body: dict[str, object],
    status: int,
    param: str | None,
) -> None:
    before = _counts(ctx)
    with world.client("admin") as admin:
        response = admin.post(str(_fill(path, world)), json=_fill(body, world))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "code", "message", "param"}
    assert error["param"] == param
    assert _counts(ctx) == before


def test_unknown_ids_are_not_found(world: World) -> None:
    with world.client("admin") as admin:
        for path in (
            "/v1/users/usr_nobody",
            "/v1/users/usr_nobody/balance",
            "/v1/users/usr_nobody/transactions",
            "/v1/providers/prv_nobody",
            "/v1/nothing-here",
        ):
            response = admin.get(path)
            assert response.status_code == 404
            assert response.json()["error"]["type"] == "not_found"


def test_json_numbers_are_parsed_exactly(world: World) -> None:
    with world.client("admin") as admin:
        response = admin.post(
            f"/v1/users/{world.user_x}/top-ups",
            content=b'{"amount": 0.1}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 201
        assert response.json()["amount"] == "0.10"
        response = admin.post(
            "/v1/charges",
            content=(
                f'{{"user": "{world.user_x}", "amount": 0.000001, "description": "one call"}}'
            ).encode(),
            headers={"content-type": "application/json"},
        )
        assert response.json()["amount"] == "-0.000001"


def test_idempotency_replays_conflicts_and_is_scoped_per_key(ctx: Context, world: World) -> None:
    path = f"/v1/users/{world.user_x}/top-ups"
    with world.client("admin") as admin:
        first = admin.post(path, json={"amount": "7"}, headers={"Idempotency-Key": "k-1"})
        again = admin.post(path, json={"amount": "7"}, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert again.json() == first.json()
        other = admin.post(path, json={"amount": "8"}, headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        too_long = admin.post(path, json={"amount": "7"}, headers={"Idempotency-Key": "k" * 256})
        assert too_long.status_code == 400
        balance = admin.get(f"/v1/users/{world.user_x}/balance").json()
    assert balance["posted"] == "102.00"  # 100 - 5 + 7: the replay moved nothing.
    second_admin = ctx.run(create_key, SYSTEM, role=Role.ADMIN)[1]
    with world.server.client(second_admin) as admin2:
        response = admin2.post(path, json={"amount": "7"}, headers={"Idempotency-Key": "k-1"})
        assert response.status_code == 201 and "idempotent-replayed" not in response.headers


def test_balance_transactions_and_pagination(world: World) -> None:
    with world.client("admin") as admin:
        for n in range(4):
            admin.post(
                "/v1/charges",
                json={
                    "user": world.user_x,
                    "amount": f"1.{n}0",
                    "description": f"call {n}",
                    "service": "shop",
                    "provider_id": world.provider_a,
                },
            ).raise_for_status()
    with world.client("user_x") as me:
        balance = me.get(f"/v1/users/{world.user_x}/balance").json()
        assert balance == {
            "object": "balance",
            "currency": "USD",
            "posted": "90.40",
            "held": "0.00",
            "available": "100.40",
            "credit_limit": "10.00",
            "receivable": "0.00",
            "cash": "90.40",
            "vouchers": "0.00",
            "credits": "0.00",
            "as_of": None,
        }
        page = me.get(f"/v1/users/{world.user_x}/transactions", params={"limit": 2}).json()
        assert page["has_more"] and [t["amount"] for t in page["data"]] == ["-1.30", "-1.20"]
        assert page["data"][0]["service"] == "shop"
        assert page["data"][0]["balance_after"] == "90.40"
        rest = me.get(
            f"/v1/users/{world.user_x}/transactions",
            params={"limit": 100, "starting_after": page["data"][-1]["id"]},
        ).json()
        assert not rest["has_more"]
        assert [t["kind"] for t in rest["data"]] == ["charge", "charge", "charge", "top_up"]
        assert (
            me.get(f"/v1/users/{world.user_x}/transactions", params={"limit": 0}).status_code == 400
        )


def test_openapi_document_and_body_limit(world: World) -> None:
    with world.client(None) as anyone:
        spec = anyone.get("/openapi.json").json()
        assert "/v1/charges" in spec["paths"] and "/v1/users/{user_id}/balance" in spec["paths"]
    with world.client("admin") as admin:
        response = admin.post(
            f"/v1/users/{world.user_x}/top-ups",
            content=b'{"amount": "1", "reference": "' + b"x" * 2_000_000 + b'"}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "limit_exceeded"


def test_personal_data_is_encrypted_at_rest(ctx: Context, world: World) -> None:
    with ctx.db.unit_of_work(read_only=True) as uow:
        row = uow.conn.execute(select(users).where(users.c.id == world.user_x)).one()
    # Every ciphertext names the key it was made with (v2:<key id>:...).
    assert "x@u.io" not in row.email_enc and row.name_enc.startswith("v2:")
    with world.client("user_x") as me:
        assert me.get(f"/v1/users/{world.user_x}").json()["email"] == "x@u.io"


def test_the_same_key_sent_concurrently_moves_money_once(ctx: Context, world: World) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = f"/v1/users/{world.user_x}/top-ups"

    def send(_: int) -> httpx.Response:
        with world.client("admin") as admin:
            return admin.post(path, json={"amount": "3"}, headers={"Idempotency-Key": "race"})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(8)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409} and 201 in statuses
    conflicts = [r.json()["error"]["code"] for r in responses if r.status_code == 409]
    assert set(conflicts) <= {"idempotency_key_in_use"}
    with world.client("admin") as admin:
        top_ups = [
            t
            for t in admin.get(f"/v1/users/{world.user_x}/transactions").json()["data"]
            if t["kind"] == "top_up"
        ]
        assert len(top_ups) == 2  # The world's own top-up and exactly one of these.
        assert admin.get(path.replace("/top-ups", "/balance")).json()["posted"] == "98.00"
