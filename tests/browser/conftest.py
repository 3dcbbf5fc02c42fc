"""The console in a real browser: Debian's chromium driven by Playwright, against billfold
served by uvicorn on a loopback port, with a real SMTP server for the mail.

Every page a test opens is watched: a request to anything but the server, or an error in
the browser's console, fails the test. `shoot` writes a page's screenshots at desktop and
phone width to tests/screenshots/ (the README names the folder).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest

from billfold import identity
from billfold.core.context import Context
from tests.conftest import IN_CI, LiveServer
from tests.mailbox import Inbox, inbox

__all__ = ["inbox"]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "screenshots"
WIDTHS = (1280, 390)
PASSWORD = "correct horse battery"


@pytest.fixture
def backend() -> str:
    """The console's tests run on SQLite; the API's tests cover both databases."""
    return "sqlite"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail("CI=true but chromium is not installed: run make test")
        pytest.skip("chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@dataclass
class Guard:
    """What a page did that it must not: requests leaving the server, console errors."""

    base: str
    problems: list[str] = field(default_factory=list)
    allowed_statuses: set[int] = field(default_factory=set)

    def on_request(self, request: Any) -> None:
        url = request.url
        if not (url.startswith(self.base) or url.startswith(("data:", "blob:", "about:"))):
            self.problems.append(f"request outside the server: {url}")

    def on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        text = message.text
        if any(f"status of {status}" in text for status in self.allowed_statuses):
            return
        self.problems.append(f"console error: {text}")

    def on_page_error(self, error: Any) -> None:
        self.problems.append(f"page error: {error}")


@dataclass
class Site:
    """The running server, its context and mailbox, and helpers for the journeys."""

    live: LiveServer
    ctx: Context
    inbox: Inbox
    browser: Any
    guards: list[Guard] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.live.url

    def page(self, locale: str = "en-US", width: int = 1280) -> Any:
        """A new browser (its own cookies) with a watched page."""
        context = self.browser.new_context(
            viewport={"width": width, "height": 900}, locale=locale, accept_downloads=True
        )
        page = context.new_page()
        guard = Guard(self.url)
        page.on("request", guard.on_request)
        page.on("console", guard.on_console)
        page.on("pageerror", guard.on_page_error)
        page.guard = guard
        self.guards.append(guard)
        page.set_default_timeout(15_000)
        return page

    def admin(self, email: str = "op@example.com") -> tuple[str, str]:
        made = self.ctx.run(identity.create_admin, email=email, password=PASSWORD)
        return email, made.totp.secret

    def code(self, secret: str, offset_s: int = 0) -> str:
        return pyotp.TOTP(secret).at(self.ctx.clock.now().timestamp() + offset_s)


@pytest.fixture
def site(ctx: Context, inbox: Inbox, browser: Any) -> Iterator[Site]:
    ctx.settings = ctx.settings.model_copy(
        update={"smtp_url": f"smtp://127.0.0.1:{inbox.port}", "login_throttle": "5/minute"}
    )
    with LiveServer(ctx) as live:
        made = Site(live, ctx, inbox, browser)
        yield made
    problems = [p for g in made.guards for p in g.problems]
    assert not problems, "\n".join(problems)


def shoot(page: Any, name: str, *, full: bool = True) -> None:
    """The page as it is now, at desktop and phone width, into tests/screenshots/ (the
    whole page, or what the first screen shows)."""
    SHOTS.mkdir(exist_ok=True)
    lang = page.evaluate("document.documentElement.lang") or "en"
    size = page.viewport_size
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SHOTS / f"{name}-{width}-{lang}.png"), full_page=full)
    page.set_viewport_size(size)


def log_in(
    page: Any, site: Site, email: str, password: str = PASSWORD, totp: str | None = None
) -> None:
    page.goto(f"{site.url}/login")
    page.fill("#f-email", email)
    page.fill("#f-password", password)
    if totp is not None:
        page.locator("details summary").first.click()
        page.fill("#f-totp", totp)
    with page.expect_navigation():
        page.locator("main form button[type=submit]").click()
