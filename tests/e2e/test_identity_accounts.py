"""A person's account over HTTP, on SQLite and PostgreSQL, with a real SMTP server: the
TOTP second factor (required for operators), changing the password and the email,
the language, and a provider's team members invited by mail."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import httpx
import pyotp
import pytest

from billfold import identity
from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
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


def _person(live: LiveServer, inbox: Inbox, email: str, kind: str = "user") -> httpx.Client:
    """A verified, logged-in person's browser, its CSRF token set on every request."""
    browser = httpx.Client(base_url=live.url, timeout=30)
    made = browser.post(
        "/v1/signup", json={"kind": kind, "name": "Pat", "email": email, "password": PASSWORD}
    )
    assert made.status_code == 201, made.text
    browser.post("/v1/email-verifications", json={"token": inbox.token(email, "verify")})
    session = browser.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert session.status_code == 201, session.text
    browser.headers["X-CSRF-Token"] = session.json()["csrf_token"]
    return browser


def _login(
    client: httpx.Client, email: str, password: str = PASSWORD, **extra: str
) -> httpx.Response:
    """A login attempt from elsewhere: the client's own session and cookie stay as they are."""
    body = {"email": email, "password": password, **extra}
    return httpx.post(client.base_url.join("/v1/sessions"), json=body, timeout=30)


def test_an_operator_needs_a_second_factor_that_works_once(
    ctx: Context, live: LiveServer, clock: TestClock
) -> None:
    made = ctx.run(identity.create_admin, email="op@example.com", password=PASSWORD)
    totp = pyotp.TOTP(made.totp.secret)
    assert made.totp.uri.startswith("otpauth://totp/billfold:op%40example.com")
    with httpx.Client(base_url=live.url, timeout=30) as browser:
        bare = _login(browser, "op@example.com")
        assert bare.status_code == 401 and bare.json()["error"]["code"] == "totp_required"
        wrong = _login(browser, "op@example.com", totp="000000")
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_totp"
        code = totp.at(clock.now())
        ok = browser.post(
            "/v1/sessions", json={"email": "op@example.com", "password": PASSWORD, "totp": code}
        )
        assert ok.status_code == 201 and ok.json()["role"] == "admin", ok.text
        # The same code cannot be replayed, even within its 30 seconds.
        assert _login(browser, "op@example.com", totp=code).status_code == 401
        # An operator cannot switch the second factor off.
        browser.headers["X-CSRF-Token"] = ok.json()["csrf_token"]
        off = browser.post("/v1/me/totp/disable", json={"password": PASSWORD})
        assert off.status_code == 403
        clock.advance(seconds=60)
        assert _login(browser, "op@example.com", totp=totp.at(clock.now())).status_code == 201
    # The secret is stored encrypted, never in clear.
    with ctx.db.engine.connect() as conn:
        row = conn.exec_driver_sql("select * from logins").one()
    assert made.totp.secret not in str(tuple(row))


def test_a_user_turns_on_a_second_factor(
    ctx: Context, live: LiveServer, inbox: Inbox, clock: TestClock
) -> None:
    with closing(_person(live, inbox, "two@example.com")) as browser:
        confirm_early = browser.post("/v1/me/totp/confirm", json={"code": "123456"})
        assert confirm_early.status_code == 409
        setup = browser.post("/v1/me/totp")
        assert setup.status_code == 201, setup.text
        totp = pyotp.TOTP(setup.json()["secret"])
        # Not in force until a code confirms it: logins still need no code.
        assert _login(browser, "two@example.com").status_code == 201
        bad = browser.post("/v1/me/totp/confirm", json={"code": "000000"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "code"
        good = browser.post("/v1/me/totp/confirm", json={"code": totp.at(clock.now())})
        assert good.status_code == 200, good.text
        assert _login(browser, "two@example.com").json()["error"]["code"] == "totp_required"
        clock.advance(seconds=31)
        again = _login(browser, "two@example.com", totp=totp.at(clock.now()))
        assert again.status_code == 201
        wrong = browser.post("/v1/me/totp/disable", json={"password": "not the password"})
        assert wrong.status_code == 401
        off = browser.post("/v1/me/totp/disable", json={"password": PASSWORD})
        assert off.status_code == 200
        assert _login(browser, "two@example.com").status_code == 201


def test_changing_the_password_needs_the_current_one_and_ends_other_sessions(
    live: LiveServer, inbox: Inbox
) -> None:
    with (
        closing(_person(live, inbox, "pw@example.com")) as browser,
        httpx.Client(base_url=live.url, timeout=30) as other,
    ):
        first = other.post("/v1/sessions", json={"email": "pw@example.com", "password": PASSWORD})
        assert first.status_code == 201
        assert other.get("/v1/me").status_code == 200
        new = "another long passphrase"
        wrong = browser.post(
            "/v1/me/password", json={"current_password": "guess guess guess", "password": new}
        )
        assert wrong.status_code == 401
        short = browser.post(
            "/v1/me/password", json={"current_password": PASSWORD, "password": "x"}
        )
        assert short.status_code == 400
        done = browser.post("/v1/me/password", json={"current_password": PASSWORD, "password": new})
        assert done.status_code == 200, done.text
        assert browser.get("/v1/me").status_code == 200  # This session goes on,
        assert other.get("/v1/me").status_code == 401  # the other one ended.
        assert _login(other, "pw@example.com").status_code == 401
        assert _login(other, "pw@example.com", new).status_code == 201


def test_a_new_email_counts_once_its_link_is_opened(live: LiveServer, inbox: Inbox) -> None:
    with closing(_person(live, inbox, "old@example.com")) as browser:
        taken = _person(live, inbox, "taken@example.com")
        taken.close()
        assert (
            browser.post(
                "/v1/me/email", json={"password": PASSWORD, "email": "taken@example.com"}
            ).status_code
            == 409
        )
        asked = browser.post(
            "/v1/me/email", json={"password": PASSWORD, "email": "new@example.com"}
        )
        assert asked.status_code == 202, asked.text
        # Until the link is opened, the old address is the login.
        assert _login(browser, "new@example.com").status_code == 401
        token = inbox.token("new@example.com", "verify")
        assert browser.post("/v1/email-verifications", json={"token": token}).status_code == 200
        assert _login(browser, "old@example.com").status_code == 401
        assert _login(browser, "new@example.com").status_code == 201


def test_the_language_is_remembered_and_api_keys_cannot_act_as_a_person(
    ctx: Context, live: LiveServer, inbox: Inbox
) -> None:
    with closing(_person(live, inbox, "lang@example.com")) as browser:
        bad = browser.post("/v1/me/preferences", json={"locale": "fr"})
        assert bad.status_code == 400
        ok = browser.post("/v1/me/preferences", json={"locale": "zh-CN"})
        assert ok.status_code == 200 and ok.json()["locale"] == "zh-CN"
        assert _login(browser, "lang@example.com").json()["locale"] == "zh-CN"
        user_id = browser.get("/v1/me").json()["user_id"]
    key = ctx.run(create_key, SYSTEM, role=Role.USER, user_id=user_id)[1]
    with live.client(key) as program:
        refused = program.post(
            "/v1/me/password", json={"current_password": PASSWORD, "password": "x" * 12}
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "not_a_session"


def test_a_provider_invites_a_member_and_no_one_else_can(
    ctx: Context, live: LiveServer, inbox: Inbox
) -> None:
    admin_key = ctx.run(create_key, SYSTEM, role=Role.ADMIN)[1]
    owner = _person(live, inbox, "owner@example.com", kind="provider")
    rival = _person(live, inbox, "rival@example.com", kind="provider")
    provider_id = owner.get("/v1/me").json()["provider_id"]
    rival_id = rival.get("/v1/me").json()["provider_id"]
    with live.client(admin_key) as admin:
        for pid in (provider_id, rival_id):
            assert admin.post(f"/v1/providers/{pid}/approve").status_code == 200
    with closing(owner), closing(rival):
        invited = owner.post(
            f"/v1/providers/{provider_id}/members", json={"email": "m@example.com"}
        )
        assert invited.status_code == 201 and invited.json()["status"] == "invited", invited.text
        # Another provider can neither see nor grow this team.
        assert rival.get(f"/v1/providers/{provider_id}/members").status_code == 404
        sneaky = rival.post(f"/v1/providers/{provider_id}/members", json={"email": "x@example.com"})
        assert sneaky.status_code == 404
        assert inbox.to("x@example.com") == []
        # Invited, not yet joined: no password works.
        assert _login(owner, "m@example.com").status_code == 401
        token = inbox.token("m@example.com", "invite")
        short = owner.post(f"/v1/invitations/{token}", json={"password": "short"})
        assert short.status_code == 400
        joined = owner.post(f"/v1/invitations/{token}", json={"password": PASSWORD})
        assert joined.status_code == 200, joined.text
        assert (
            owner.post(f"/v1/invitations/{token}", json={"password": PASSWORD}).status_code == 400
        )
        with httpx.Client(base_url=live.url, timeout=30) as member:
            session = _login(member, "m@example.com")
            assert session.status_code == 201
            assert session.json()["provider_id"] == provider_id
        team = owner.get(f"/v1/providers/{provider_id}/members").json()["data"]
        assert sorted((m["email"], m["status"]) for m in team) == [
            ("m@example.com", "active"),
            ("owner@example.com", "active"),
        ]


def test_a_removed_member_is_logged_out_and_cannot_come_back(
    ctx: Context, live: LiveServer, inbox: Inbox
) -> None:
    admin_key = ctx.run(create_key, SYSTEM, role=Role.ADMIN)[1]
    owner = _person(live, inbox, "lead@example.com", kind="provider")
    provider_id = owner.get("/v1/me").json()["provider_id"]
    with live.client(admin_key) as admin:
        assert admin.post(f"/v1/providers/{provider_id}/approve").status_code == 200
    with closing(owner):
        invited = owner.post(
            f"/v1/providers/{provider_id}/members", json={"email": "ex@example.com"}
        )
        member_id = invited.json()["id"]
        token = inbox.token("ex@example.com", "invite")
        assert (
            owner.post(f"/v1/invitations/{token}", json={"password": PASSWORD}).status_code == 200
        )
        with httpx.Client(base_url=live.url, timeout=30) as member:
            assert (
                member.post(
                    "/v1/sessions", json={"email": "ex@example.com", "password": PASSWORD}
                ).status_code
                == 201
            )
            assert member.get("/v1/me").status_code == 200
            removed = owner.delete(f"/v1/providers/{provider_id}/members/{member_id}")
            assert removed.status_code == 204, removed.text
            assert member.get("/v1/me").status_code == 401  # Its session ended at once,
            assert _login(member, "ex@example.com").status_code == 401  # and it cannot log in.
        team = owner.get(f"/v1/providers/{provider_id}/members").json()["data"]
        assert [m["email"] for m in team] == ["lead@example.com"]
        # The last active member stays: a provider cannot lock itself out.
        me = team[0]["id"]
        last = owner.delete(f"/v1/providers/{provider_id}/members/{me}")
        assert last.status_code == 409 and last.json()["error"]["code"] == "last_member"
        assert owner.delete(f"/v1/providers/{provider_id}/members/lgn_nobody").status_code == 404
        # The address can be invited again.
        again = owner.post(f"/v1/providers/{provider_id}/members", json={"email": "ex@example.com"})
        assert again.status_code == 201
