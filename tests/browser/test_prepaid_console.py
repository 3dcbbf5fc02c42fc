"""Prepaid products and payments in the browser: a provider defines a resource package and
a voucher; the operator creates a platform discount coupon and grants credit; a user
redeems both codes, buys the package (the discount off, the voucher and credit paying
first), sees the parts of the balance and what the package has left, and pays by Alipay
(sent to Alipay's page); in English and in Chinese, at desktop and phone width."""

from __future__ import annotations

import pytest

from billfold import identity, parties, subscriptions
from billfold.core.access import SYSTEM
from tests.browser.conftest import PASSWORD, Site, log_in, shoot
from tests.browser.world import maps_provider

WORDS = {
    "en-US": {
        "bought": "You bought",
        "redeemed": "Code accepted",
        "on_sale": "is on sale",
        "ready": "ready to hand out",
        "used_up": "redeemed this code",
    },
    "zh-CN": {
        "bought": "您已购买",
        "redeemed": "兑换成功",
        "on_sale": "已上架",
        "ready": "已可发放",
        "used_up": "已兑换过",
    },
}


def _logins(site: Site, lang: str) -> tuple[str, str, str]:
    maps = maps_provider(site.ctx)
    with site.ctx.work() as work:
        user = parties.create_user(
            work, SYSTEM, name="Mei", email=f"mei-{lang}@example.com", currency_code="USD"
        )
        locale = "zh-CN" if lang == "zh" else "en"
        identity.grant_login(work, SYSTEM, email=f"mei-{lang}@example.com", password=PASSWORD,
                             user_id=user.id, locale=locale)  # fmt: skip
        identity.grant_login(work, SYSTEM, email=f"atlas-{lang}@example.com", password=PASSWORD,
                             provider_id=maps.provider_id, locale=locale)  # fmt: skip
        work.commit()
    site.ctx.run(parties.top_up, SYSTEM, user.id, amount="20")
    site.ctx.run(subscriptions.create, SYSTEM, user_ref=user.id, plan_code="maps-payg",
                 service_code=None, start=None)  # fmt: skip
    return user.id, f"mei-{lang}@example.com", f"atlas-{lang}@example.com"


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_packages_codes_credit_and_payments_in_the_console(site: Site, locale: str) -> None:
    say = WORDS[locale]
    lang = "zh" if locale == "zh-CN" else "en"
    user_id, user_email, provider_email = _logins(site, lang)

    # The provider puts a package on sale and makes a voucher for its service.
    seller = site.page(locale)
    log_in(seller, site, provider_email)
    seller.goto(f"{site.url}/provider/packages")
    form = seller.locator("form[action='/provider/packages']")
    form.locator("select[name=service]").select_option("maps")
    form.locator("input[name=code]").fill(f"calls-{lang}")
    form.locator("input[name=name]").fill("10,000 calls")
    form.locator("input[name=price]").fill("5")
    form.locator("input[name=quantities]").fill("calls=10000")
    form.locator("button").click()
    assert say["on_sale"] in seller.inner_text("main")
    coupon = seller.locator("form[action='/provider/coupons']")
    coupon.locator("input[name=code]").fill(f"ATLAS2-{lang}")
    coupon.locator("input[name=value]").fill("2")
    coupon.locator("input[name=services]").fill("maps")
    coupon.locator("button").click()
    assert say["ready"] in seller.inner_text("main")
    shoot(seller, f"provider-packages-{lang}")

    # The operator: a platform discount coupon, and credit for the user.
    email, secret = site.admin(f"op-{lang}@example.com")
    operator = site.page(locale)
    log_in(operator, site, email, totp=site.code(secret))
    operator.goto(f"{site.url}/admin/coupons")
    form = operator.locator("main form[action='/admin/coupons']")
    form.locator("input[name=code]").fill(f"HALF-{lang}")
    form.locator("select[name=kind]").select_option("percent")
    form.locator("input[name=value]").fill("50")
    form.locator("input[name=max_discount]").fill("2")
    form.locator("button").click()
    # The operator's account speaks English, whatever the browser says.
    assert "ready to hand out" in operator.inner_text("main")
    shoot(operator, f"admin-coupons-{lang}")
    operator.goto(f"{site.url}/admin/users/{user_id}")
    grant = operator.locator(f"form[action='/admin/users/{user_id}/credits']")
    grant.locator("input[name=amount]").fill("1")
    grant.locator("input[name=reason]").fill("welcome")
    grant.locator("button").click()
    assert "promotional credit granted" in operator.inner_text("main")

    # The user redeems both codes (a second time is refused in words) and buys.
    page = site.page(locale)
    log_in(page, site, user_email)
    for code in (f"atlas2-{lang}", f"HALF-{lang}"):
        page.goto(f"{site.url}/wallet")
        page.fill("#f-code", code)
        page.locator("form[action='/wallet/redeem'] button").click()
        assert say["redeemed"] in page.inner_text("main")
    page.fill("#f-code", f"HALF-{lang}")
    page.guard.allowed_statuses.add(409)
    page.locator("form[action='/wallet/redeem'] button").click()
    assert say["used_up"] in page.inner_text("main")
    page.goto(f"{site.url}/packages")
    shoot(page, f"packages-{lang}")
    page.locator("section", has_text="10,000 calls").locator("button").click()
    assert say["bought"] in page.inner_text("main")
    shoot(page, f"packages-bought-{lang}")
    # 5 less 2 off (50%, at most 2) is 3: the voucher's 2, then 1 of credit; cash untouched.
    balance = site.ctx.run(parties.get_balance, SYSTEM, user_id)
    assert (balance.cash, balance.vouchers, balance.credits) == (20, 0, 0)
    page.goto(f"{site.url}/wallet")
    shoot(page, f"wallet-parts-{lang}")
    text = page.inner_text("main")
    assert "20.00" in text
