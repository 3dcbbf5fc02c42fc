"""API keys: listed without secrets, named, expiring, scoped, rotated and revoked by
their owners, and never able to make a key for anyone else."""

from __future__ import annotations

from datetime import timedelta

import httpx

from billfold.clock import TestClock
from billfold.core import keys
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from tests.conftest import LiveServer


def _party(admin: httpx.Client) -> tuple[str, str]:
    provider = admin.post(
        "/v1/providers", json={"name": "P", "email": "p@p.io", "commission_rate": "0.2"}
    ).json()["id"]
    other = admin.post(
        "/v1/providers", json={"name": "Q", "email": "q@q.io", "commission_rate": "0.2"}
    ).json()["id"]
    return provider, other


def test_owners_manage_their_own_keys_and_no_one_elses(
    ctx: Context, server: LiveServer, admin: httpx.Client
) -> None:
    provider, other = _party(admin)
    _, mine = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=provider)
    _, theirs = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=other)
    with server.client(mine) as me, server.client(theirs) as them:
        made = me.post("/v1/api-keys", json={"name": "ci"})
        assert made.status_code == 201, made.text
        assert made.json()["role"] == "provider" and made.json()["provider_id"] == provider
        assert made.json()["secret"].startswith("bf_provider_")
        for forbidden in (
            {"role": "admin"},
            {"provider_id": other},
            {"role": "user", "user_id": "usr_x"},
        ):
            assert me.post("/v1/api-keys", json=forbidden).status_code == 403, forbidden
        listed = me.get("/v1/api-keys").json()["data"]
        assert {k["provider_id"] for k in listed} == {provider}
        assert all(k["secret"] is None for k in listed)
        assert {k["id"] for k in listed} >= {made.json()["id"]}
        everyone = admin.get("/v1/api-keys").json()["data"]
        assert {k["provider_id"] for k in everyone} >= {provider, other}
        # Another provider's key is not even there for them.
        assert them.post(f"/v1/api-keys/{made.json()['id']}/revoke").status_code == 404
        assert them.post(f"/v1/api-keys/{made.json()['id']}/rotate", json={}).status_code == 404
        assert me.post(f"/v1/api-keys/{made.json()['id']}/revoke").status_code == 204
        new_secret = made.json()["secret"]
    with server.client(new_secret) as revoked:
        assert revoked.get("/v1/me").status_code == 401


def test_keys_expire_and_rotation_has_a_grace_period(
    ctx: Context, server: LiveServer, admin: httpx.Client, clock: TestClock
) -> None:
    soon = (clock.now() + timedelta(hours=1)).isoformat()
    assert (
        admin.post("/v1/api-keys", json={"expires_at": clock.now().isoformat()}).status_code == 400
    )
    expiring = admin.post("/v1/api-keys", json={"name": "tmp", "expires_at": soon}).json()
    old = admin.post("/v1/api-keys", json={"name": "rotate me"}).json()
    rotated = admin.post(f"/v1/api-keys/{old['id']}/rotate", json={"grace_s": 600})
    assert rotated.status_code == 201, rotated.text
    assert rotated.json()["name"] == "rotate me" and rotated.json()["id"] != old["id"]
    for secret in (expiring["secret"], old["secret"], rotated.json()["secret"]):
        with server.client(secret) as c:
            assert c.get("/v1/me").status_code == 200
    clock.advance(minutes=11)  # Past the rotation's grace.
    with server.client(old["secret"]) as c:
        assert c.get("/v1/me").status_code == 401
    with server.client(rotated.json()["secret"]) as c:
        assert c.get("/v1/me").status_code == 200
    clock.advance(hours=1)  # Past the expiry.
    with server.client(expiring["secret"]) as c:
        assert c.get("/v1/me").status_code == 401


def test_scoped_keys_do_only_what_their_scope_allows(
    ctx: Context, server: LiveServer, admin: httpx.Client
) -> None:
    provider, _ = _party(admin)
    reader = admin.post("/v1/api-keys", json={"scopes": ["read_only"]}).json()["secret"]
    _, gateway = ctx.run(
        create_key, SYSTEM, role=Role.PROVIDER, provider_id=provider, scopes=["gateway"]
    )
    with server.client(reader) as c:
        assert c.get("/v1/users").status_code == 200
        refused = c.post("/v1/users", json={"name": "U", "email": "u@u.io", "currency": "USD"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "scope_denied"
    with server.client(gateway) as c:
        assert c.get("/v1/me").status_code == 200
        events = c.post("/v1/events", json={"events": []})
        assert events.status_code != 403, events.text
        assert (
            c.post("/v1/authorizations", json={"user": "usr_x", "amount": "1"}).status_code != 403
        )
        assert c.get("/v1/services").json()["error"]["code"] == "scope_denied"
        assert c.post("/v1/api-keys", json={}).json()["error"]["code"] == "scope_denied"
    assert admin.post("/v1/api-keys", json={"scopes": ["everything"]}).status_code == 400


def test_last_use_is_kept(ctx: Context, server: LiveServer, admin: httpx.Client) -> None:
    made = admin.post("/v1/api-keys", json={"name": "used"}).json()
    with server.client(made["secret"]) as c:
        assert c.get("/v1/me").status_code == 200
    keys.flush_last_used(ctx)
    listed = {k["id"]: k for k in admin.get("/v1/api-keys").json()["data"]}
    assert listed[made["id"]]["last_used_at"] is not None
    assert listed[made["id"]]["prefix"].endswith(made["secret"][-4:])
