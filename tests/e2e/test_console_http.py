"""The console over plain HTTP, on SQLite and PostgreSQL: its pages need a login and carry
a strict content security policy, its forms need their CSRF token, it redirects only to
itself, and the API's documentation pages load nothing from outside the server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from urllib.parse import urljoin

import httpx
import pytest

from billfold import identity, parties
from billfold.core.access import SYSTEM
from billfold.core.context import Context
from tests.conftest import LiveServer

PASSWORD = "correct horse battery"


@pytest.fixture
def live(ctx: Context) -> Iterator[LiveServer]:
    with LiveServer(ctx) as server:
        yield server


def _person(ctx: Context, email: str) -> str:
    with ctx.work() as work:
        user = parties.create_user(work, SYSTEM, name="Ana", email=email, currency_code="USD")
        identity.grant_login(work, SYSTEM, email=email, password=PASSWORD, user_id=user.id)
        work.commit()
    return user.id


def _log_in(live: LiveServer, email: str, next_path: str = "/") -> httpx.Client:
    browser = httpx.Client(base_url=live.url, timeout=30)
    answer = browser.post("/login", data={"email": email, "password": PASSWORD, "next": next_path})
    assert answer.status_code == 303, answer.text
    return browser


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def test_pages_need_a_login_and_forbid_everything_foreign(ctx: Context, live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as anyone:
        for path in ("/", "/wallet", "/admin/users", "/provider/plans", "/usage/1"):
            answer = anyone.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/login?next=")
        login = anyone.get("/login")
        policy = login.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
        assert login.headers["cache-control"] == "no-store"


def test_the_session_cookie_is_http_only_and_same_site(ctx: Context, live: LiveServer) -> None:
    _person(ctx, "ana@example.com")
    with httpx.Client(base_url=live.url, timeout=30) as browser:
        answer = browser.post("/login", data={"email": "ana@example.com", "password": PASSWORD})
        cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie"
                      and v.startswith("billfold_session="))  # fmt: skip
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie


def test_a_form_without_the_csrf_token_changes_nothing(ctx: Context, live: LiveServer) -> None:
    user_id = _person(ctx, "bo@example.com")
    with closing(_log_in(live, "bo@example.com")) as browser:
        page = browser.get("/alerts").text
        forged = browser.post("/alerts", data={"monthly_budget": "99"})
        assert forged.status_code == 403
        assert "did not come from billfold" in forged.text
        wrong = browser.post("/alerts", data={"monthly_budget": "99", "csrf_token": "x" * 64})
        assert wrong.status_code == 403
        from billfold import alerts

        with ctx.work(read_only=True) as work:
            assert alerts.get_settings(work, SYSTEM, user_id).monthly_budget is None
        good = browser.post("/alerts", data={"monthly_budget": "99", "csrf_token": _csrf(page)})
        assert good.status_code == 303
        with ctx.work(read_only=True) as work:
            assert alerts.get_settings(work, SYSTEM, user_id).monthly_budget == Decimal("99")


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil"])
def test_login_redirects_only_within_the_site(ctx: Context, live: LiveServer, target: str) -> None:
    _person(ctx, "cy@example.com")
    with httpx.Client(base_url=live.url, timeout=30) as browser:
        answer = browser.post(
            "/login", data={"email": "cy@example.com", "password": PASSWORD, "next": target}
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_a_logout_ends_the_session_on_the_server(ctx: Context, live: LiveServer) -> None:
    _person(ctx, "di@example.com")
    with closing(_log_in(live, "di@example.com")) as browser:
        page = browser.get("/account").text
        token = browser.cookies["billfold_session"]
        assert browser.post("/logout", data={"csrf_token": _csrf(page)}).status_code == 303
    with httpx.Client(base_url=live.url, timeout=30, cookies={"billfold_session": token}) as old:
        assert old.get("/wallet").status_code == 303  # The stolen cookie is worth nothing.
        assert old.get("/v1/me").status_code == 401


def test_the_api_documentation_loads_only_from_the_server(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as anyone:
        for page in ("/docs", "/redoc"):
            html = anyone.get(page)
            assert html.status_code == 200
            sources = re.findall(r'(?:src|href)="([^"]+)"', html.text)
            assert sources, page
            for source in sources:
                assert not source.startswith(("http:", "https:", "//")), (page, source)
                asset = anyone.get(urljoin(f"{live.url}{page}", source))
                assert asset.status_code == 200, (page, source)
        bundle = anyone.get("/assets/redoc/redoc.standalone.js").text
        assert "cdn.redoc.ly" not in bundle
        assert anyone.get("/assets/chart.js/chart.umd.js").status_code == 200
        assert "fonts.googleapis" not in anyone.get("/redoc").text


def test_a_form_from_another_site_is_refused_even_a_login(ctx: Context, live: LiveServer) -> None:
    _person(ctx, "ed@example.com")
    form = {"email": "ed@example.com", "password": PASSWORD}
    with httpx.Client(base_url=live.url, timeout=30) as browser:
        # Another site cannot log a visitor in (to an account of its choosing).
        forged = browser.post("/login", data=form, headers={"Origin": "https://evil.example"})
        assert forged.status_code == 403 and "set-cookie" not in forged.headers
        signup = browser.post(
            "/signup",
            data={"name": "X", "email": "x@example.com", "password": PASSWORD},
            headers={"Origin": "https://evil.example"},
        )
        assert signup.status_code == 403
        own = browser.post("/login", data=form, headers={"Origin": live.url})
        assert own.status_code == 303
        page = browser.get("/alerts").text
        hostile = browser.post(
            "/alerts",
            data={"monthly_budget": "5", "csrf_token": _csrf(page)},
            headers={"Origin": "https://evil.example"},
        )
        assert hostile.status_code == 403
        # A browser that says where the form came from is believed over Origin.
        for site, status in (("cross-site", 403), ("same-site", 403), ("same-origin", 303)):
            sent = browser.post(
                "/alerts",
                data={"monthly_budget": "5", "csrf_token": _csrf(page)},
                headers={"Sec-Fetch-Site": site, "Origin": "null"},
            )
            assert sent.status_code == status, site


def test_the_event_debugger_shows_a_providers_own_refused_events(
    ctx: Context, live: LiveServer
) -> None:
    from billfold.core.access import Role
    from billfold.core.keys import create_key

    pages: dict[str, str] = {}
    for name in ("maps", "sms"):
        with ctx.work() as work:
            made = parties.create_provider(work, SYSTEM, name=name, email=f"{name}@p.io",
                                           commission_rate="0.1")  # fmt: skip
            identity.grant_login(work, SYSTEM, email=f"{name}@p.io", password=PASSWORD,
                                 provider_id=made.id)  # fmt: skip
            work.commit()
        key = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=made.id)[1]
        bad = [{"id": f"{name}-bad-1", "user": "usr_nobody", "service": name, "metric": "x",
                "timestamp": "2026-11-01T11:00:00Z"}, {"id": f"{name}-bad-2"}]  # fmt: skip
        answer = httpx.post(f"{live.url}/v1/events", json={"events": bad},
                            headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
        assert answer.status_code == 200 and len(answer.json()["rejected"]) == 2
        with closing(_log_in(live, f"{name}@p.io")) as browser:
            pages[name] = browser.get("/provider/events").text
    assert "maps-bad-1" in pages["maps"] and "maps-bad-2" in pages["maps"]
    assert "sms-bad-1" not in pages["maps"] and "maps-bad-1" not in pages["sms"]


def test_a_webhook_form_with_a_bad_address_is_refused_in_words(
    ctx: Context, live: LiveServer
) -> None:
    _person(ctx, "fy@example.com")
    with closing(_log_in(live, "fy@example.com")) as browser:
        token = _csrf(browser.get("/keys").text)
        for url in ("https://" + "x" * 3000 + ".example", "nonsense", "ftp://example.com/x"):
            sent = browser.post("/webhooks", data={"url": url, "csrf_token": token})
            assert sent.status_code == 303 and sent.headers["location"] == "/keys", url
            assert "billfold_flash=" in sent.headers.get("set-cookie", ""), url
        assert "No endpoints yet" in browser.get("/keys").text
