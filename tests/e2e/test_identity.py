"""People over HTTP, on SQLite and PostgreSQL, with a real SMTP server: sign-up, the
mailed verification link, login, sessions and their CSRF token, throttling, resets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from billfold.store.tables import logins, providers, users
from tests.conftest import LiveServer
from tests.mailbox import Inbox

PASSWORD = "correct horse battery"


@pytest.fixture
def live(ctx: Context, inbox: Inbox) -> Iterator[LiveServer]:
    ctx.settings = ctx.settings.model_copy(
        update={"smtp_url": f"smtp://127.0.0.1:{inbox.port}", "login_throttle": "3/minute"}
    )
    with LiveServer(ctx) as server:
        yield server


def _client(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)


def _signup(client: httpx.Client, kind: str, email: str, **extra: object) -> httpx.Response:
    body = {"kind": kind, "name": "Ana Person", "email": email, "password": PASSWORD, **extra}
    return client.post("/v1/signup", json=body)


def _login(client: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return client.post("/v1/sessions", json={"email": email, "password": password})


def _count(ctx: Context, table: Any) -> int:
    with ctx.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_user_signs_up_verifies_logs_in_and_out(
    ctx: Context, live: LiveServer, inbox: Inbox
) -> None:
    with _client(live) as browser:
        made = _signup(browser, "user", "ana@example.com", currency="EUR", locale="zh-CN")
        assert made.status_code == 201, made.text
        assert made.json()["kind"] == "user" and made.json()["status"] == "active"
        user_id = made.json()["id"]
        # The mail came through SMTP, in the chosen language.
        (mail,) = inbox.to("ana@example.com")
        assert "邮箱" in str(mail["Subject"]) or "=?utf-8?" in str(mail["Subject"])
        # Not verified yet: the right password is told so, and no session is made.
        early = _login(browser, "ana@example.com")
        assert early.status_code == 403 and early.json()["error"]["code"] == "email_not_verified"
        token = inbox.token("ana@example.com", "verify")
        verified = browser.post("/v1/email-verifications", json={"token": token})
        assert verified.status_code == 200 and verified.json()["status"] == "verified"
        again = browser.post("/v1/email-verifications", json={"token": token})
        assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_token"
        session = _login(browser, "ANA@example.com")
        assert session.status_code == 201, session.text
        body = session.json()
        assert (body["role"], body["user_id"], body["locale"]) == ("user", user_id, "zh-CN")
        cookie = session.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        # The session is the user's principal: its own balance, no one else's data.
        assert browser.get("/v1/me").json()["user_id"] == user_id
        assert browser.get(f"/v1/users/{user_id}/balance").json()["currency"] == "EUR"
        assert browser.get("/v1/users").status_code == 403
        assert [s["id"] for s in browser.get("/v1/sessions").json()["data"]] == [body["id"]]
        # A state-changing request needs the CSRF token.
        bare = browser.post("/v1/api-keys", json={"name": "mine"})
        assert bare.status_code == 403 and bare.json()["error"]["code"] == "csrf_failed"
        wrong = browser.post(
            "/v1/api-keys", json={"name": "mine"}, headers={"X-CSRF-Token": "guess"}
        )
        assert wrong.status_code == 403
        csrf = {"X-CSRF-Token": body["csrf_token"]}
        key = browser.post("/v1/api-keys", json={"name": "mine"}, headers=csrf)
        assert key.status_code == 201 and key.json()["role"] == "user"
        assert browser.delete("/v1/sessions/current", headers=csrf).status_code == 204
        # Logged out: the cookie is cleared, and the old token no longer works anywhere.
        old = session.cookies.get("billfold_session")
        assert old
        with httpx.Client(base_url=live.url, cookies={"billfold_session": old}) as replay:
            ended = replay.get("/v1/me")
            assert ended.status_code == 401 and ended.json()["error"]["code"] == "session_ended"


def test_wrong_credentials_say_nothing_and_are_throttled(
    ctx: Context, live: LiveServer, inbox: Inbox
) -> None:
    with _client(live) as browser:
        assert _signup(browser, "user", "bo@example.com").status_code == 201
        browser.post(
            "/v1/email-verifications", json={"token": inbox.token("bo@example.com", "verify")}
        )
        wrong = _login(browser, "bo@example.com", "not the password")
        nobody = _login(browser, "nobody@example.com", "not the password")
        assert wrong.status_code == nobody.status_code == 401
        assert wrong.json()["error"] == nobody.json()["error"]  # The same answer.
        assert "set-cookie" not in wrong.headers
        _login(browser, "bo@example.com", "still not it")
        _login(browser, "bo@example.com", "nor this")
        # Three failures for the account within the minute (the test's limit): the next
        # try is refused before the password is even checked, the right one included.
        throttled = _login(browser, "bo@example.com")
        assert throttled.status_code == 429
        assert throttled.json()["error"]["type"] == "rate_limited"


def test_signup_refuses_bad_input_and_taken_addresses_and_changes_nothing(
    ctx: Context, live: LiveServer
) -> None:
    with _client(live) as browser:
        assert _signup(browser, "user", "cy@example.com").status_code == 201
        before = (_count(ctx, users), _count(ctx, logins), _count(ctx, providers))
        for response in (
            _signup(browser, "user", "CY@example.com"),
            _signup(browser, "admin", "x@example.com"),
            _signup(browser, "user", "not an address"),
            browser.post(
                "/v1/signup",
                json={"kind": "user", "name": "A", "email": "s@example.com", "password": "short"},
            ),
            _signup(browser, "user", "t@example.com", currency="XXX"),
            _signup(browser, "user", "u@example.com", locale="fr"),
        ):
            assert response.status_code in (400, 409), response.text
        assert _signup(browser, "user", "CY@example.com").json()["error"]["code"] == "email_taken"
        assert (_count(ctx, users), _count(ctx, logins), _count(ctx, providers)) == before


def test_a_provider_applies_and_waits_for_approval(
    ctx: Context, live: LiveServer, inbox: Inbox
) -> None:
    admin_key = ctx.run(create_key, SYSTEM, role=Role.ADMIN)[1]
    with _client(live) as browser:
        made = _signup(browser, "provider", "shop@example.com")
        assert made.status_code == 201 and made.json()["status"] == "pending"
        provider_id = made.json()["id"]
        browser.post(
            "/v1/email-verifications", json={"token": inbox.token("shop@example.com", "verify")}
        )
        body = _login(browser, "shop@example.com").json()
        csrf = {"X-CSRF-Token": body["csrf_token"]}
        # Pending: it may look at itself, and nothing else.
        assert browser.get(f"/v1/providers/{provider_id}").json()["status"] == "pending"
        refused = browser.post("/v1/services", json={"code": "shop", "name": "S"}, headers=csrf)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "provider_pending"
        with live.client(admin_key) as admin:
            approved = admin.post(f"/v1/providers/{provider_id}/approve")
            assert approved.status_code == 200 and approved.json()["status"] == "active"
            # The applicant is told, once: approving again mails nothing.
            assert admin.post(f"/v1/providers/{provider_id}/approve").status_code == 200
        decisions = [m for m in inbox.to("shop@example.com") if "approved" in str(m["Subject"])]
        assert len(decisions) == 1
        made_service = browser.post(
            "/v1/services", json={"code": "shop", "name": "S"}, headers=csrf
        )
        assert made_service.status_code == 201, made_service.text
    with live.client() as anyone:
        assert anyone.post(f"/v1/providers/{provider_id}/approve").status_code == 401


def test_a_password_reset_mails_a_link_and_ends_every_session(
    ctx: Context, live: LiveServer, inbox: Inbox
) -> None:
    with _client(live) as browser:
        _signup(browser, "user", "di@example.com")
        browser.post(
            "/v1/email-verifications", json={"token": inbox.token("di@example.com", "verify")}
        )
        assert _login(browser, "di@example.com").status_code == 201
        # The same answer whether an account has the address or not.
        known = browser.post("/v1/password-resets", json={"email": "di@example.com"})
        unknown = browser.post("/v1/password-resets", json={"email": "nope@example.com"})
        assert known.status_code == unknown.status_code == 202
        assert known.json() == unknown.json()
        assert inbox.to("nope@example.com") == []
        token = inbox.token("di@example.com", "reset")
        short = browser.post(f"/v1/password-resets/{token}", json={"password": "short"})
        assert short.status_code == 400
        new = "a much better passphrase"
        done = browser.post(f"/v1/password-resets/{token}", json={"password": new})
        assert done.status_code == 200, done.text
        assert browser.get("/v1/me").status_code == 401  # The old session ended.
        again = browser.post(f"/v1/password-resets/{token}", json={"password": new})
        assert again.status_code == 400
        assert _login(browser, "di@example.com").status_code == 401
        assert _login(browser, "di@example.com", new).status_code == 201


def test_no_password_or_email_is_stored_in_clear(ctx: Context, live: LiveServer) -> None:
    with _client(live) as browser:
        _signup(browser, "user", "eve@example.com")
    with ctx.db.engine.connect() as conn:
        row = conn.execute(select(logins)).one()
    assert PASSWORD not in str(tuple(row)) and "eve@example.com" not in str(tuple(row))
    assert row.password_hash.startswith("$argon2id$")


def test_without_smtp_mail_is_written_as_eml_files(ctx: Context) -> None:
    from billfold import identity

    ctx.run(identity.signup, kind="user", name="Fay", email="fay@example.com", password=PASSWORD)
    written = list((ctx.settings.home / "mail").glob("*.eml"))
    assert len(written) == 1
    assert "To: fay@example.com" in written[0].read_text()


def test_a_rejected_application_can_only_look(ctx: Context, live: LiveServer, inbox: Inbox) -> None:
    admin_key = ctx.run(create_key, SYSTEM, role=Role.ADMIN)[1]
    with _client(live) as browser:
        provider_id = _signup(browser, "provider", "no@example.com").json()["id"]
        browser.post(
            "/v1/email-verifications", json={"token": inbox.token("no@example.com", "verify")}
        )
        csrf = {"X-CSRF-Token": _login(browser, "no@example.com").json()["csrf_token"]}
        with live.client(admin_key) as admin:
            rejected = admin.post(f"/v1/providers/{provider_id}/reject")
            assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
            (told,) = [m for m in inbox.to("no@example.com") if "verify" not in m.as_string()]
            assert "turned down" in told.get_payload(decode=True).decode()
            # Neither approved afterwards, nor rejected twice into anything else.
            assert admin.post(f"/v1/providers/{provider_id}/approve").json()["status"] == "rejected"
            assert admin.post(f"/v1/providers/{provider_id}/reject").status_code == 200
        assert browser.get(f"/v1/providers/{provider_id}").json()["status"] == "rejected"
        refused = browser.post("/v1/services", json={"code": "no", "name": "N"}, headers=csrf)
        assert refused.status_code == 403
    with live.client(admin_key) as admin:
        active = admin.post(
            "/v1/providers", json={"name": "A", "email": "a@p.io", "commission_rate": "0.1"}
        ).json()["id"]
        assert admin.post(f"/v1/providers/{active}/reject").status_code == 409
