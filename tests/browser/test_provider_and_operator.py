"""A provider applies and the operator approves it; the provider builds a tiered plan
with its live preview and sees a customer's usage and the month's revenue; the operator
finds a user, changes a credit limit, runs verify and reconcile and reads the audit
trail. Each in the browser, to the end."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from billfold import analytics, parties, subscriptions
from billfold.core.access import SYSTEM
from tests.browser.conftest import PASSWORD, Site, log_in, shoot
from tests.browser.world import maps_provider, send_calls

TIERED = {
    "code": "tiles-tiered", "name": "Tiles tiered", "service": "tiles", "currency": "USD",
    "interval": "month", "fixed_fee": "0",
    "charges": [{"metric": "tiles", "model": "graduated", "tiers": [
        {"up_to": 1000, "unit_price": "0"}, {"up_to": 10000, "unit_price": "0.002"},
        {"up_to": None, "unit_price": "0.001"}]}],
}  # fmt: skip


def test_a_provider_applies_is_approved_builds_a_plan_and_sees_its_customers(site: Site) -> None:
    page = site.page()
    page.goto(f"{site.url}/signup")
    page.check("input[name=kind][value=provider]")
    page.fill("#f-name", "Tessera Tiles")
    page.fill("#f-email", "tiles@example.com")
    page.fill("#f-password", PASSWORD)
    page.locator("main form button[type=submit]").click()
    assert "provider application is pending" in page.inner_text("main")
    page.goto(f"{site.url}/verify?token={site.inbox.token('tiles@example.com', 'verify')}")
    page.locator("main form button[type=submit]").click()
    log_in(page, site, "tiles@example.com")
    # Pending: the application and its state, nothing to sell with yet.
    assert "Your provider application" in page.inner_text("main")
    assert "pending" in page.inner_text("main")
    shoot(page, "provider-pending")
    page.goto(f"{site.url}/provider/services")
    page.fill("form[action='/provider/services'] input[name=code]", "tiles")
    page.fill("form[action='/provider/services'] input[name=name]", "Tiles")
    page.guard.allowed_statuses.add(403)
    page.locator("form[action='/provider/services'] button").click()
    assert "waiting for the platform's approval" in page.inner_text("main")
    page.guard.allowed_statuses.clear()

    # The operator approves it, from the applications page.
    email, secret = site.admin()
    operator = site.page()
    log_in(operator, site, email, totp=site.code(secret))
    operator.goto(f"{site.url}/admin/providers")
    shoot(operator, "admin-providers")
    row = operator.locator("tr", has_text="Tessera Tiles")
    row.get_by_role("button", name="Approve").click()
    assert "approved" in operator.inner_text("main")

    # Now it sells: a service, a metric, and a tiered plan read in its live preview.
    page.goto(f"{site.url}/provider/services")
    page.fill("form[action='/provider/services'] input[name=code]", "tiles")
    page.fill("form[action='/provider/services'] input[name=name]", "Tiles")
    page.locator("form[action='/provider/services'] button").click()
    assert "The service is created" in page.inner_text("main")
    metric_form = page.locator("form[action='/provider/services/tiles/metrics']")
    metric_form.locator("input[name=code]").fill("tiles")
    metric_form.locator("input[name=name]").fill("Map tiles")
    metric_form.locator("button").click()
    assert "Map tiles" in page.inner_text("main")
    shoot(page, "provider-services")
    page.goto(f"{site.url}/provider/plans")
    page.fill("#f-definition", json.dumps(TIERED, indent=2))
    page.fill("#f-quantity", "12000")
    page.wait_for_function("() => document.getElementById('quote').innerText.includes('Map tiles')")
    preview = page.inner_text("#quote")
    assert "$20.00" in preview  # 1,000 free, 9,000 at 0.002, 2,000 at 0.001.
    assert "Map tiles" in preview  # The draft, in words.
    shoot(page, "provider-plan-editor")
    page.get_by_role("button", name="Create the plan").click()
    assert "Plan tiles-tiered is created" in page.inner_text("main")

    # A customer subscribes and uses it; the provider sees the usage and the revenue.
    provider_id = page.evaluate("1") and _provider_id(site, "Tessera Tiles")
    with site.ctx.work() as work:
        user = parties.create_user(work, SYSTEM, name="Kai", email="kai@example.com",
                                   currency_code="USD", billing_mode="postpaid",
                                   credit_limit="100")  # fmt: skip
        subscriptions.create(work, SYSTEM, user_ref=user.id, plan_code="tiles-tiered")
        work.commit()
    from billfold.core.access import Role
    from billfold.core.keys import create_key

    key = site.ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=provider_id)[1]
    site.ctx.clock.advance(minutes=5)
    at = (site.ctx.clock.now() - timedelta(minutes=1)).isoformat()
    import httpx

    answer = httpx.post(
        f"{site.url}/v1/events",
        headers={"Authorization": f"Bearer {key}"},
        json={"id": "t-1", "user": user.id, "service": "tiles", "metric": "tiles",
              "timestamp": at, "value": "3000"},
        timeout=30,
    )  # fmt: skip
    assert answer.json()["accepted"] == 1, answer.text
    analytics.fold(site.ctx)
    page.goto(f"{site.url}/provider/customers")
    customers = page.inner_text("main")
    assert user.id in customers and "tiles-tiered" in customers
    assert "3,000" in customers and "$4.00" in customers  # 2,000 at 0.002.
    assert "kai@example.com" not in customers and "Kai" not in customers
    shoot(page, "provider-customers")
    page.goto(f"{site.url}/")
    home = page.inner_text("main")
    assert "Tessera Tiles" in home and "$4.00" in home
    shoot(page, "provider-home")


def test_the_operator_finds_a_user_changes_a_limit_checks_the_ledger_and_reads_the_trail(
    site: Site,
) -> None:
    maps = maps_provider(site.ctx)
    with site.ctx.work() as work:
        user = parties.create_user(work, SYSTEM, name="Mira Stone", email="mira@example.com",
                                   currency_code="USD", billing_mode="postpaid",
                                   credit_limit="20")  # fmt: skip
        subscriptions.create(work, SYSTEM, user_ref=user.id, plan_code="maps-payg")
        work.commit()
    site.ctx.clock.advance(minutes=5)
    send_calls(site.url, maps.provider_key, user.id, [1500], site.ctx.clock.now().isoformat())
    email, secret = site.admin()
    page = site.page()
    log_in(page, site, email, totp=site.code(secret))
    assert "The platform" in page.inner_text("main")
    shoot(page, "admin-home")

    page.goto(f"{site.url}/admin/users")
    page.fill("input[name=q]", "mira")
    page.get_by_role("button", name="Search").click()
    assert "Mira Stone" in page.inner_text("main")
    shoot(page, "admin-users")
    page.get_by_role("link", name="Mira Stone").click()
    page.fill("input[name=credit_limit]", "250")
    page.locator("form[action$='/credit-limit'] button").click()
    assert "The credit limit is saved" in page.inner_text("main")
    assert "$250.00" in page.inner_text("main")
    # A bad amount is refused in words, and changes nothing.
    page.fill("input[name=credit_limit]", "lots")
    page.locator("form[action$='/credit-limit'] button").click()
    assert "$250.00" in page.inner_text(".grid")
    assert page.locator(".flash.error").count() == 1
    shoot(page, "admin-user")

    page.goto(f"{site.url}/admin/operations")
    page.get_by_role("button", name="Run verify").click()
    assert "every invariant is true" in page.inner_text("#verify-result")
    page.fill("input[name=period]", site.ctx.clock.now().strftime("%Y-%m"))
    page.get_by_role("button", name="Run reconcile").click()
    assert "no difference" in page.inner_text("#reconcile-result")
    shoot(page, "admin-operations")

    page.goto(f"{site.url}/admin/audit")
    trail = page.inner_text("main table")
    assert "user.credit_limit_set" in trail or "credit_limit" in trail
    page.fill("input[name=object]", f"user:{user.id}")
    page.get_by_role("button", name="Filter").click()
    filtered = page.inner_text("main table")
    assert user.id in filtered and "provider.approved" not in filtered
    shoot(page, "admin-audit")
    assert re.search(r"\d", filtered)


def _provider_id(site: Site, name: str) -> str:
    with site.ctx.work(read_only=True) as work:
        found = parties.list_providers(work, SYSTEM, limit=100)
    return next(p.id for p in found.data if p.name == name)
