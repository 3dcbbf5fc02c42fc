"""A user, from sign-up to a budget, as a person does it in the browser: in English and
in Chinese."""

from __future__ import annotations

import re
from datetime import timedelta
from email.header import decode_header, make_header
from typing import Any

import pytest

from billfold import analytics, parties
from billfold.core.access import SYSTEM
from tests.browser.conftest import PASSWORD, Site, log_in, shoot
from tests.browser.world import maps_provider, send_calls

# What the person reads, in each language.
WORDS = {
    "en-US": {
        "check_mail": "Check your mail",
        "confirmed": "Your email address is confirmed",
        "hello": "Hello, Ana",
        "too_low": "Your balance is too low",
        "subscribe": "Subscribe",
        "confirm": "Confirm",
        "subscribed": "You are subscribed",
        "metric": "API calls",
        "explain": "Explain",
        "came_about": "came about",
        "saved": "Your budget and alerts are saved",
        "pay_now": "What you pay now",
    },
    "zh-CN": {
        "check_mail": "请查收邮件",
        "confirmed": "您的邮箱已确认",
        "hello": "您好，Ana",
        "too_low": "余额不足",
        "subscribe": "订阅",
        "confirm": "确认",
        "subscribed": "订阅成功",
        "metric": "API calls",
        "explain": "计算过程",
        "came_about": "是怎么来的",
        "saved": "预算和提醒已保存",
        "pay_now": "现在需支付",
    },
}


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_a_user_signs_up_subscribes_sees_usage_and_sets_a_budget(site: Site, locale: str) -> None:
    say = WORDS[locale]
    lang = "zh" if locale == "zh-CN" else "en"
    maps = maps_provider(site.ctx)
    email = f"ana-{lang}@example.com"
    page = site.page(locale)

    # Sign up: the page is in the browser's language, and a mail is on its way.
    page.goto(f"{site.url}/signup")
    shoot(page, "user-signup")
    page.fill("#f-name", "Ana Lima")
    page.fill("#f-email", email)
    page.fill("#f-password", PASSWORD)
    page.locator("main form button[type=submit]").click()
    assert say["check_mail"] in page.inner_text("main")
    assert email in page.inner_text("main")

    # The link from the mail confirms the address.
    (mail,) = site.inbox.to(email)
    subject = str(make_header(decode_header(str(mail["Subject"]))))
    assert ("邮箱" in subject) if lang == "zh" else ("Confirm" in subject)  # In their language.
    token = site.inbox.token(email, "verify")
    page.goto(f"{site.url}/verify?token={token}")
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/login"))
    assert say["confirmed"] in page.inner_text("main")

    log_in(page, site, email)
    assert say["hello"] in page.inner_text("main")
    shoot(page, "user-user-home-new")
    user_id = _user_id(site, email)

    # A monthly plan with a fee: refused with an empty wallet, in words, nothing changed.
    page.goto(f"{site.url}/catalog/maps-pro/subscribe")
    assert say["pay_now"] in page.inner_text("main")
    assert say["too_low"] in page.inner_text("main")
    assert page.locator("main form button[type=submit]").count() == 0
    # The operator credits the account (no payment gateway yet).
    site.ctx.run(parties.top_up, SYSTEM, user_id, amount="50", reference="bank transfer")

    page.goto(f"{site.url}/catalog")
    shoot(page, "user-catalog")
    page.locator("a[href='/catalog/maps-pro/subscribe']").click()
    text = page.inner_text("main")
    assert "10.00" in text  # The fee, charged now, shown before confirming.
    shoot(page, "user-subscribe-preview")
    page.get_by_role("button", name=say["confirm"]).click()
    page.wait_for_url(re.compile(r"/subscriptions"))
    assert say["subscribed"] in page.inner_text("main")
    assert "maps-pro" in page.inner_text("main")
    shoot(page, "user-subscriptions")

    # Usage sent through the API arrives on the chart and in the records.
    site.ctx.clock.advance(minutes=10)
    at = (site.ctx.clock.now() - timedelta(minutes=5)).isoformat()
    send_calls(site.url, maps.provider_key, user_id, [4, 6, 10], at)
    analytics.fold(site.ctx)  # What `billfold serve` does every few seconds.
    page.goto(f"{site.url}/usage")
    records = page.locator("main table").last.inner_text()
    assert say["metric"] in records and "20" in records
    assert "$0.15" in records  # 20 calls, 5 free, 0.01 each.
    chart = page.locator("canvas#amounts")
    assert chart.count() == 1
    page.wait_for_function("() => window.Chart && Chart.getChart('amounts')")
    drawn = page.evaluate(
        "Chart.getChart('amounts').data.datasets[0].data.reduce((a, b) => a + b, 0)"
    )
    assert drawn == pytest.approx(0.15)
    shoot(page, "user-usage")
    page.get_by_role("link", name=say["explain"]).first.click()
    assert say["came_about"] in page.inner_text("main")
    assert "0.01" in page.inner_text("main")
    shoot(page, "user-explain")

    # The invoice for the fee, as a PDF.
    page.goto(f"{site.url}/invoices")
    shoot(page, "user-invoices")
    with page.expect_download() as download:
        page.get_by_role("link", name="PDF").first.click()
    pdf = download.value.path().read_bytes()
    assert pdf.startswith(b"%PDF")

    # A budget, kept.
    page.goto(f"{site.url}/alerts")
    page.fill("#f-budget", "25")
    page.locator("main form button[type=submit]").click()
    assert say["saved"] in page.inner_text("main")
    assert page.input_value("#f-budget") == "25.00"
    shoot(page, "user-budget")
    page.goto(f"{site.url}/wallet")
    assert "40.00" in page.inner_text("main")  # 50 credited, 10 for the fee, usage after.
    shoot(page, "user-wallet")


def _user_id(site: Site, email: str) -> Any:
    with site.ctx.work(read_only=True) as work:
        found = parties.list_users(work, SYSTEM, limit=100)
    (user,) = [u for u in found.data if u.email == email]
    return user.id
