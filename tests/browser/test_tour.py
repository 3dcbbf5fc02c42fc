"""Every page of the console, for each role, on the demo platform, in English and Chinese,
at desktop and phone width: each answers, loads nothing from outside the server, logs no
console error, and leaves its screenshots in tests/screenshots/."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from billfold import demo
from billfold.clock import TestClock
from tests.browser.conftest import Site, log_in, shoot

PAGES = {
    "user": ["/", "/catalog", "/catalog/storage-200/subscribe", "/subscriptions", "/usage",
             "/wallet", "/packages", "/invoices", "/alerts", "/keys", "/account"],
    "provider": ["/", "/provider/services", "/provider/plans", "/provider/plans/maps-payg",
                 "/provider/packages", "/provider/customers", "/usage", "/provider/statements",
                 "/provider/events",
                 "/keys", "/account"],
    "admin": ["/", "/admin/providers", "/admin/users", "/admin/coupons", "/invoices",
              "/admin/dunning",
              "/admin/operations", "/admin/audit", "/account"],
}  # fmt: skip


@pytest.fixture
def clock() -> TestClock:
    """The demo lives through the 60 days up to now."""
    return TestClock(datetime.now(UTC))


@pytest.fixture
def loaded(site: Site) -> demo.Loaded:
    return demo.load(site.ctx.settings)


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_every_page_of_every_role_answers_and_looks_right(
    site: Site, loaded: demo.Loaded, locale: str
) -> None:
    emails = {"admin": "admin@demo.billfold.test", "provider": "provider@demo.billfold.test",
              "user": "user@demo.billfold.test"}  # fmt: skip
    for role, paths in PAGES.items():
        page = site.page(locale)
        totp = site.code(loaded.admin_totp) if role == "admin" else None
        log_in(page, site, emails[role], demo.PASSWORD, totp)
        if locale == "zh-CN":  # The account remembers the language the person picks.
            page.goto(f"{site.url}/account")
            page.select_option("select[name=locale]", "zh-CN")
            page.locator("form[action='/account/language'] button").click()
        for path in paths:
            answer = page.goto(f"{site.url}{path}")
            assert answer is not None and answer.status == 200, (role, path)
            _readable(page, role, path)
            name = f"tour-{role}-{path.strip('/').replace('/', '-') or 'home'}"
            shoot(page, name)
        page.context.close()
    # Each visitor's page too.
    visitor = site.page(locale)
    for path in ("/login", "/signup", "/reset", "/docs", "/redoc"):
        answer = visitor.goto(f"{site.url}{path}")
        assert answer is not None and answer.status == 200, path
        visitor.wait_for_load_state("networkidle")
        if path in ("/docs", "/redoc"):  # Rendered from local npm packages.
            visitor.wait_for_selector(".swagger-ui .info, .redoc-wrap, redoc .api-info, h1")
        shoot(visitor, f"tour-visitor-{path.strip('/')}", full=path not in ("/docs", "/redoc"))


def _readable(page: Any, role: str, path: str) -> None:
    """Every input has a label; the page has one main heading."""
    unlabeled = page.evaluate(
        "() => [...document.querySelectorAll("
        "'main input:not([type=hidden]), main select, main textarea')]"
        ".filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))"
        ".map(e => e.name)"
    )
    assert unlabeled == [], (role, path, unlabeled)
    assert page.locator("main h1").count() == 1, (role, path)
