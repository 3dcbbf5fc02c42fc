"""What the console refuses, and that it says so in words: a wrong password, an ended
session, a form without its CSRF token, another tenant's page, another role's page."""

from __future__ import annotations

from billfold import parties, subscriptions
from billfold.core.access import SYSTEM
from billfold.metering import records
from tests.browser.conftest import PASSWORD, Site, log_in
from tests.browser.world import maps_provider, send_calls


def _user(site: Site, name: str, email: str) -> str:
    from billfold import identity

    with site.ctx.work() as work:
        user = parties.create_user(work, SYSTEM, name=name, email=email, currency_code="USD",
                                   billing_mode="postpaid", credit_limit="100")  # fmt: skip
        subscriptions.create(work, SYSTEM, user_ref=user.id, plan_code="maps-payg")
        identity.grant_login(work, SYSTEM, email=email, password=PASSWORD, user_id=user.id)
        work.commit()
    return user.id


def test_a_wrong_password_is_refused_in_words_and_in_chinese(site: Site) -> None:
    maps_provider(site.ctx)
    _user(site, "Ana", "ana@example.com")
    page = site.page()
    page.guard.allowed_statuses.add(401)
    log_in(page, site, "ana@example.com", "not my password at all")
    assert "The email or the password is wrong." in page.inner_text("main")
    assert page.url.endswith("/login")
    chinese = site.page("zh-CN")
    chinese.guard.allowed_statuses.add(401)
    log_in(chinese, site, "ana@example.com", "not my password at all")
    assert "邮箱或密码错误" in chinese.inner_text("main")
    # The right password still works: failures are counted, not locked out at once.
    log_in(page, site, "ana@example.com")
    assert "Ana" in page.inner_text("main h1")


def test_an_ended_session_sends_the_person_to_log_in_again(site: Site) -> None:
    maps_provider(site.ctx)
    _user(site, "Bo", "bo@example.com")
    page = site.page()
    log_in(page, site, "bo@example.com")
    page.goto(f"{site.url}/wallet")
    site.ctx.clock.advance(seconds=site.ctx.settings.session_ttl_s + 1)
    page.goto(f"{site.url}/wallet")
    assert "/login" in page.url
    assert "Your session has ended. Log in again." in page.inner_text("main")
    # Logging in again goes back to the page asked for.
    page.fill("#f-email", "bo@example.com")
    page.fill("#f-password", PASSWORD)
    with page.expect_navigation():
        page.locator("main form button[type=submit]").click()
    assert page.url.endswith("/wallet")


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(site: Site) -> None:
    maps_provider(site.ctx)
    user_id = _user(site, "Cy", "cy@example.com")
    page = site.page()
    log_in(page, site, "cy@example.com")
    page.goto(f"{site.url}/alerts")
    page.fill("#f-budget", "99")
    page.evaluate("document.querySelector('main form input[name=csrf_token]').remove()")
    page.guard.allowed_statuses.add(403)
    page.locator("main form button[type=submit]").click()
    assert "did not come from billfold" in page.inner_text("main")
    with site.ctx.work(read_only=True) as work:
        from billfold import alerts

        assert alerts.get_settings(work, SYSTEM, user_id).monthly_budget is None
    # A forged token is refused the same way.
    page.goto(f"{site.url}/alerts")
    page.evaluate("document.querySelector('main form input[name=csrf_token]').value = 'forged'")
    page.locator("main form button[type=submit]").click()
    assert "did not come from billfold" in page.inner_text("main")


def test_another_tenants_page_and_another_roles_page_are_not_found(site: Site) -> None:
    maps = maps_provider(site.ctx)
    mine = _user(site, "Dee", "dee@example.com")
    theirs = _user(site, "Eve", "eve@example.com")
    site.ctx.clock.advance(minutes=5)
    send_calls(site.url, maps.provider_key, theirs, [3], site.ctx.clock.now().isoformat())
    with site.ctx.work(read_only=True) as work:
        (record,) = records.list_records(work, SYSTEM, user_id=theirs)
    page = site.page()
    page.guard.allowed_statuses.add(404)
    log_in(page, site, "dee@example.com")
    assert mine
    for path in (
        f"/usage/{record.id}",
        "/admin/users",
        "/provider/plans",
        f"/admin/users/{theirs}",
    ):
        answer = page.goto(f"{site.url}{path}")
        assert answer is not None and answer.status == 404, path
        said = page.inner_text("main").lower()
        assert "not yours to see" in said or "no consumption record" in said, path
    # The owner sees it.
    other = site.page()
    log_in(other, site, "eve@example.com")
    answer = other.goto(f"{site.url}/usage/{record.id}")
    assert answer is not None and answer.status == 200
    assert "came about" in other.inner_text("main")
