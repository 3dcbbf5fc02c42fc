"""A postpaid customer's month end in the browser: the invoice is open and owed, the
customer enters the buyer's details a business needs, reads the invoice in their own
language, and pays it from cash in the wallet."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billfold import identity, metering, parties, subscriptions
from billfold.core.access import SYSTEM, Principal, Role
from billfold.invoicing import billing
from tests.browser.conftest import PASSWORD, Site, log_in, shoot
from tests.browser.world import maps_provider

WORDS = {
    "en-US": {"open": "open", "saved": "Your billing details are saved", "paid": "paid",
              "title": "Invoice", "due": "Amount due", "free": "5 free"},
    "zh-CN": {"open": "待支付", "saved": "账单信息已保存", "paid": "已支付",
              "title": "账单", "due": "应付金额", "free": "免费 5"},
}  # fmt: skip


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_a_postpaid_customer_reads_and_pays_an_open_invoice(site: Site, locale: str) -> None:
    say = WORDS[locale]
    lang = "zh-CN" if locale == "zh-CN" else "en"
    maps = maps_provider(site.ctx)
    email = f"eve-{lang}@example.com"
    with site.ctx.work() as work:
        user = parties.create_user(work, SYSTEM, name="Eve", email=email, currency_code="USD",
                                   billing_mode="postpaid", credit_limit="200")  # fmt: skip
        subscriptions.create(work, SYSTEM, user_ref=user.id, plan_code="maps-pro")
        identity.grant_login(
            work, SYSTEM, email=email, password=PASSWORD, user_id=user.id, locale=lang
        )
        work.commit()
    event = {"id": "e1", "user": user.id, "service": "maps", "metric": "calls", "value": "305"}
    provider = Principal("k", Role.PROVIDER, provider_id=maps.provider_id)
    assert metering.ingest(site.ctx, provider, [event]).accepted == 1
    site.ctx.clock.set(datetime(2026, 12, 1, tzinfo=UTC))
    billing.bill_run(site.ctx)

    page = site.page(locale)
    log_in(page, site, email)
    page.goto(f"{site.url}/invoices")
    assert say["open"] in page.inner_text("main table")
    page.fill("#f-company", "Eve Analytics GmbH")
    page.fill("#f-address", "Hauptstrasse 1\n10115 Berlin")
    page.fill("#f-tax_number", "DE123456789")
    page.fill("#f-fapiao_title", "伊芙分析有限公司")
    page.fill("#f-fapiao_tax_number", "91110000MA01ABCDE1")
    page.locator("form[action='/invoices/billing-details'] button[type=submit]").click()
    assert say["saved"] in page.inner_text("main")
    assert page.input_value("#f-company") == "Eve Analytics GmbH"
    shoot(page, "user-billing-details")

    # The invoice as the customer's accountant reads it.
    with page.expect_navigation():
        page.locator("main tr", has_text=say["open"]).locator("a[href$='.html']").click()
    text = page.inner_text("body")
    for expected in (say["title"], "Eve Analytics GmbH", "DE123456789", "伊芙分析有限公司",
                     "Atlas Maps", "Maps API", "API calls", say["free"], say["due"]):  # fmt: skip
        assert expected in text, expected
    assert page.evaluate("document.documentElement.lang") == lang
    shoot(page, "invoice-document")

    # Cash arrives; the customer pays the open invoice with it.
    site.ctx.run(parties.top_up, SYSTEM, user.id, amount="20")
    page.goto(f"{site.url}/invoices")
    assert say["open"] in page.inner_text("main table")  # Money waits until it is applied.
    page.locator("form[action$='/pay'] button").first.click()
    assert say["paid"] in page.inner_text("main table")
    shoot(page, "user-invoice-paid")
