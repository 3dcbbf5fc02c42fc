"""Idempotency-Keys keep the at-rest promises and answer only the key that made them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select, text

from billfold.core import idempotency
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from billfold.store.tables import idempotency_keys
from tests.conftest import LiveServer


def _stored(ctx: Context) -> int:
    with ctx.work(read_only=True) as work:
        return int(
            work.conn.execute(select(func.count()).select_from(idempotency_keys)).scalar_one()
        )


def test_a_revoked_key_gets_401_never_its_stored_answer(ctx: Context, server: LiveServer) -> None:
    _, secret = ctx.run(create_key, SYSTEM, role=Role.ADMIN, name="soon revoked")
    body = {"name": "Ana", "email": "ana@example.com", "currency": "USD"}
    headers = {"Idempotency-Key": "user-1"}
    with server.client(secret) as client:
        first = client.post("/v1/users", json=body, headers=headers)
        assert first.status_code == 201
        key_id = client.get("/v1/me").json()["key_id"]
        assert client.post(f"/v1/api-keys/{key_id}/revoke").status_code == 204
        again = client.post("/v1/users", json=body, headers=headers)
    assert again.status_code == 401
    assert "Ana" not in again.text and "idempotent-replayed" not in again.headers


def test_unauthenticated_requests_write_nothing(ctx: Context, server: LiveServer) -> None:
    before = _stored(ctx)
    for authorization in (None, "Bearer bf_nobody", "Basic abc"):
        headers = {"Idempotency-Key": "anon-1"}
        if authorization:
            headers["Authorization"] = authorization
        answer = httpx.post(f"{server.url}/v1/users", json={}, headers=headers)
        assert answer.status_code == 401
    assert _stored(ctx) == before


def test_a_replayed_204_has_no_body(ctx: Context, admin: httpx.Client) -> None:
    key = admin.post("/v1/api-keys", json={"role": "admin", "name": "k"}).json()["id"]
    headers = {"Idempotency-Key": "revoke-1"}
    first = admin.post(f"/v1/api-keys/{key}/revoke", headers=headers)
    again = admin.post(f"/v1/api-keys/{key}/revoke", headers=headers)
    assert first.status_code == again.status_code == 204
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == b"" and "content-type" not in again.headers


def test_stored_answers_hold_no_secret_or_personal_data_in_clear(
    ctx: Context, admin: httpx.Client, tmp_path: Path
) -> None:
    made = admin.post(
        "/v1/api-keys", json={"role": "admin", "name": "k"}, headers={"Idempotency-Key": "key-1"}
    ).json()
    user = admin.post(
        "/v1/users",
        json={"name": "Zofia Wróbel", "email": "zofia@example.com", "currency": "USD"},
        headers={"Idempotency-Key": "user-2"},
    )
    assert user.status_code == 201
    replay = admin.post(
        "/v1/api-keys", json={"role": "admin", "name": "k"}, headers={"Idempotency-Key": "key-1"}
    )
    assert replay.json() == made  # The replay still has the secret, decrypted for its key.
    with ctx.work(read_only=True) as work:
        rows = [
            str(value)
            for table in ("idempotency_keys", "users", "api_keys", "audit_log")
            for row in work.conn.execute(text(f"SELECT * FROM {table}"))
            for value in row
        ]
    everything = "\n".join(rows)
    for secret in (made["secret"], "Zofia", "zofia@example.com"):
        assert secret not in everything
    if ctx.db.dialect == "sqlite":
        database = Path(ctx.db.url.split("///", 1)[1])
        ctx.db.dispose()  # Checkpoint the WAL into the file.
        raw = database.read_bytes()
        for secret in (made["secret"], "Zofia", "zofia@example.com"):
            assert secret.encode() not in raw


def test_stale_reservations_and_old_answers_are_purged(ctx: Context) -> None:
    now = ctx.clock.now()
    rows = [
        ("k-old", "done", now - timedelta(days=2), now - timedelta(days=2)),
        ("k-dead", "in_progress", now - timedelta(hours=3), now - timedelta(hours=2)),
        ("k-live", "in_progress", now, now + timedelta(seconds=60)),
        ("k-new", "done", now, now),
    ]
    with ctx.work() as work:
        for key, state, created, locked in rows:
            work.conn.execute(
                idempotency_keys.insert().values(
                    principal="p",
                    key=key,
                    method="POST",
                    path="/v1/x",
                    request_hash="h",
                    state=state,
                    response_status=None,
                    response_body=None,
                    created_at=created,
                    locked_until=locked,
                )
            )
        assert idempotency.purge(work, now, timedelta(days=1)) == 2
        left = set(work.conn.execute(select(idempotency_keys.c.key)).scalars())
        work.commit()
    assert left == {"k-live", "k-new"}
