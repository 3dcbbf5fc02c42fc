"""The invoice a business can send, read back from the rendered PDF: seller, buyer,
provider, service and metric names, how each usage amount came about, taxes by rate,
payment instructions, in English and in Chinese."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pypdf import PdfReader

from billfold import catalog, metering, parties, subscriptions
from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.invoicing import billing, invoices
from billfold.parties.profile import set_profile

LOGO = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="120" height="30">'
    b'<rect width="120" height="30" fill="#234"/></svg>'
)


def _invoice(ctx: Context, clock: TestClock, tmp_path: Path) -> tuple[str, Principal]:
    settings = ctx.settings
    settings.invoice_issuer = "Open Platform Ltd"
    settings.invoice_seller_address = "1 Market Street\\nLondon EC1A 1AA"
    settings.invoice_seller_tax_number = "GB999888777"
    settings.invoice_seller_contact = "billing@platform.example"
    settings.invoice_bank_details = "IBAN GB00 BANK 0000 0000 0000 00\nBIC BANKGB22"
    (tmp_path / "logo.svg").write_bytes(LOGO)
    settings.invoice_seller_logo = tmp_path / "logo.svg"
    settings.tax_rate = "0.2"
    provider = ctx.run(
        parties.create_provider, SYSTEM, name="Maps Inc", email="p@p.io", commission_rate="0.2"
    )
    me = Principal("k", Role.PROVIDER, provider_id=provider.id)
    ctx.run(catalog.create_service, me, code="maps", name="Maps Platform")
    ctx.run(catalog.create_metric, me, "maps", code="calls", name="API calls", aggregation="count")
    ctx.run(catalog.create_metric, me, "maps", code="gb", name="Storage GB", aggregation="count")
    ctx.run(
        catalog.create_plan,
        me,
        {
            "code": "monthly", "name": "Monthly", "service": "maps", "currency": "USD",
            "interval": "month", "fixed_fee": "30", "fee_timing": "advance",
            "charges": [
                {"metric": "calls", "model": "per_unit", "unit_price": "0.002",
                 "free_units": "1000"},
                {"metric": "gb", "model": "graduated", "tiers": [
                    {"up_to": "10", "unit_price": "0.5"}, {"up_to": None, "unit_price": "0.2"},
                ]},
            ],
        },
    )  # fmt: skip
    user = ctx.run(
        parties.create_user, SYSTEM, name="Ada Lovelace", email="ada@example.com",
        currency_code="USD", billing_mode="postpaid", credit_limit="500",
    )  # fmt: skip
    ctx.run(set_profile, SYSTEM, user.id, {
        "company": "Analytical Engines Ltd", "address": "12 St James's Square\nLondon",
        "tax_number": "GB123456789", "fapiao_title": "分析机有限公司",
        "fapiao_tax_number": "91310000MA1FL12345",
    })  # fmt: skip
    ctx.run(subscriptions.create, SYSTEM, user_ref=user.id, plan_code="monthly")
    events = [
        {"id": "a", "user": user.id, "service": "maps", "metric": "calls", "value": "3500"},
        {"id": "b", "user": user.id, "service": "maps", "metric": "gb", "value": "25"},
    ]
    assert metering.ingest(ctx, me, events).accepted == 2
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))
    billing.bill_run(ctx)
    found = ctx.run(invoices.list_for, SYSTEM, user=user.id, status="open", limit=5)[0]
    return found[0].id, me


def _text(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() or "" for page in reader.pages))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_pdf_names_everyone_and_explains_every_amount(
    ctx: Context, clock: TestClock, tmp_path: Path
) -> None:
    invoice_id, provider = _invoice(ctx, clock, tmp_path)
    english = _text(ctx.run(invoices.render_pdf, SYSTEM, invoice_id, locale="en"))
    for expected in (
        "Open Platform Ltd", "1 Market Street", "GB999888777", "billing@platform.example",
        "Analytical Engines Ltd", "Ada Lovelace", "12 St James", "GB123456789",
        "Maps Inc", "Maps Platform", "API calls", "Storage GB",
        "1,000 free", "2,500 × $0.002 = $5.00",
        "Tier 1 (0 to 10): 10 × $0.50 = $5.00", "Tier 2 (above 10): 15 × $0.20 = $3.00",
        "Subtotal", "$43.00", "Tax at 20% on $43.00", "$8.60", "$51.60", "Amount due",
        "IBAN GB00 BANK", "BF-2026-000001", "How to pay",
    ):  # fmt: skip
        assert expected in english, expected
    chinese = _text(ctx.run(invoices.render_pdf, SYSTEM, invoice_id, locale="zh-CN"))
    for expected in (
        "账单", "Open Platform Ltd", "GB999888777", "Analytical Engines Ltd", "GB123456789",
        "发票抬头", "分析机有限公司", "91310000MA1FL12345", "Maps Inc", "Maps Platform",
        "API calls", "Storage GB", "免费 1,000", "2,500 × US$0.002 = US$5.00",
        "第 1 档（0 至 10）：10 × US$0.50 = US$5.00", "小计", "US$43.00", "US$8.60",
        "应付金额", "US$51.60", "2026年12月1日", "付款方式",
    ):  # fmt: skip
        assert expected in chinese, expected
    # A provider's copy names the customer by id only.
    theirs = _text(ctx.run(invoices.render_pdf, provider, invoice_id, locale="en"))
    assert "Ada Lovelace" not in theirs and "GB123456789" not in theirs
    assert "API calls" in theirs


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_packages_and_late_usage_are_explained_in_the_readers_words(
    ctx: Context, clock: TestClock, tmp_path: Path
) -> None:
    """Usage covered by a resource package, and usage that arrived after its period was
    invoiced, each say so on the document, in English and in Chinese."""
    from billfold import prepaid

    invoice_id, provider = _invoice(ctx, clock, tmp_path)
    user = ctx.run(invoices.get, SYSTEM, invoice_id).user
    package = ctx.run(prepaid.create_package, provider, code="calls-2k", name="2,000 calls",
                      service="maps", currency_code="USD", price="2",
                      quantities={"calls": "2000"}, validity_days=60, reset="none")  # fmt: skip
    ctx.run(prepaid.buy_package, Principal("u", Role.USER, user_id=user), user, package.id)
    events = [
        {"id": "dec", "user": user, "service": "maps", "metric": "calls", "value": "3500",
         "timestamp": "2026-12-10T00:00:00Z"},
        {"id": "late", "user": user, "service": "maps", "metric": "gb", "value": "5",
         "timestamp": "2026-11-30T00:00:00Z"},
    ]  # fmt: skip
    clock.set(datetime(2026, 12, 12, tzinfo=UTC))
    assert metering.ingest(ctx, provider, events).accepted == 2
    clock.set(datetime(2027, 1, 1, tzinfo=UTC))
    billing.bill_run(ctx)
    december = next(
        v
        for v in ctx.run(invoices.list_for, SYSTEM, user=user, status="open", limit=5)[0]
        if v.period_start.month == 12
    )
    english = _text(ctx.run(invoices.render_pdf, SYSTEM, december.id, locale="en"))
    assert "2,000 more covered by resource packages" in english
    assert "1,000 free" in english and "500 × $0.002 = $1.00" in english
    assert "Late usage (earlier periods)" in english
    chinese = _text(ctx.run(invoices.render_pdf, SYSTEM, december.id, locale="zh-CN"))
    assert "资源包另抵扣 2,000" in chinese and "往期补计用量" in chinese


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_provider_that_is_the_merchant_of_record_is_the_seller(
    ctx: Context, clock: TestClock, tmp_path: Path
) -> None:
    from billfold.domain.errors import InvalidRequest, NotFound
    from billfold.parties.profile import set_seller

    invoice_id, provider = _invoice(ctx, clock, tmp_path)
    assert provider.provider_id is not None
    with pytest.raises(InvalidRequest):  # A seller needs its legal name and address.
        ctx.run(set_seller, provider, provider.provider_id, {"merchant_of_record": True})
    user = ctx.run(invoices.get, SYSTEM, invoice_id).user
    for stranger in (Principal("u", Role.USER, user_id=user),
                     Principal("o", Role.PROVIDER, provider_id="prv_other")):  # fmt: skip
        with pytest.raises(NotFound):
            ctx.run(set_seller, stranger, provider.provider_id, {"legal_name": "Mine"})
    done = ctx.run(set_seller, provider, provider.provider_id, {
        "merchant_of_record": True, "legal_name": "Maps Incorporated GmbH",
        "address": "Kartenweg 5\n80331 München", "tax_number": "DE811111111",
    })  # fmt: skip
    assert done.merchant_of_record and done.get("tax_number") == "DE811111111"
    english = _text(ctx.run(invoices.render_pdf, SYSTEM, invoice_id, locale="en"))
    for expected in ("Maps Incorporated GmbH", "Kartenweg 5", "DE811111111",
                     "BILLED ON THE SELLER'S BEHALF BY", "Open Platform Ltd", "GB999888777",
                     "IBAN GB00 BANK"):  # fmt: skip
        assert expected in english, expected
    chinese = _text(ctx.run(invoices.render_pdf, SYSTEM, invoice_id, locale="zh-CN"))
    assert "Maps Incorporated GmbH" in chinese and "代收方" in chinese


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_time_of_day_usage_opens_into_its_windows(ctx: Context, clock: TestClock) -> None:
    provider = ctx.run(
        parties.create_provider, SYSTEM, name="Power Co", email="pw@p.io", commission_rate="0.1"
    )
    me = Principal("k", Role.PROVIDER, provider_id=provider.id)
    ctx.run(catalog.create_service, me, code="gpu", name="GPU hours")
    ctx.run(catalog.create_metric, me, "gpu", code="hours", name="GPU hours",
            aggregation="count")  # fmt: skip
    ctx.run(catalog.create_plan, me, {
        "code": "tod", "name": "Peak and off-peak", "service": "gpu", "currency": "USD",
        "interval": "month", "fixed_fee": "0",
        "charges": [{"metric": "hours", "model": "time_of_day", "timezone": "UTC",
                     "free_units": "10", "default_unit_price": "0.01",
                     "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"],
                                  "from": "09:00", "to": "18:00", "unit_price": "0.02"}]}],
    })  # fmt: skip
    user = ctx.run(parties.create_user, SYSTEM, name="Tod", email="tod@example.com",
                   currency_code="USD", billing_mode="postpaid", credit_limit="100")  # fmt: skip
    ctx.run(subscriptions.create, SYSTEM, user_ref=user.id, plan_code="tod")
    events = [  # 2026-11-02 is a Monday. The free units go to the first hours used.
        {"id": "peak", "user": user.id, "service": "gpu", "metric": "hours", "value": "30",
         "timestamp": "2026-11-02T10:00:00Z"},
        {"id": "night", "user": user.id, "service": "gpu", "metric": "hours", "value": "50",
         "timestamp": "2026-11-02T20:00:00Z"},
    ]  # fmt: skip
    clock.set(datetime(2026, 11, 3, tzinfo=UTC))
    assert metering.ingest(ctx, me, events).accepted == 2
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))
    billing.bill_run(ctx)
    (inv,) = ctx.run(invoices.list_for, SYSTEM, user=user.id, status="open", limit=5)[0]
    english = _text(ctx.run(invoices.render_pdf, SYSTEM, inv.id, locale="en"))
    assert "10 free" in english
    assert "mon,tue,wed,thu,fri 09:00-18:00 (UTC): 20 × $0.02 = $0.40" in english
    assert "other times (UTC): 50 × $0.01 = $0.50" in english
    chinese = _text(ctx.run(invoices.render_pdf, SYSTEM, inv.id, locale="zh-CN"))
    assert "其他时段 (UTC)：50 × US$0.01 = US$0.50" in chinese


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_what_buyers_and_sellers_type_is_text_on_the_invoice(
    ctx: Context, clock: TestClock, tmp_path: Path
) -> None:
    """A customer's or a provider's markup is printed as text, never run: the document
    is HTML, and the console opens it."""
    from billfold.parties.profile import set_seller

    invoice_id, provider = _invoice(ctx, clock, tmp_path)
    user = ctx.run(invoices.get, SYSTEM, invoice_id).user
    ctx.run(set_profile, SYSTEM, user, {"company": "<script>alert(1)</script>"})
    assert provider.provider_id is not None
    ctx.run(set_seller, provider, provider.provider_id, {
        "merchant_of_record": True, "legal_name": '<img src=x onerror="alert(2)">',
        "address": "1 <b>Bold</b> Street",
    })  # fmt: skip
    html = ctx.run(invoices.render_html, SYSTEM, invoice_id)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "<b>" not in html


def test_every_invoice_of_the_demo_renders_and_is_mailed(tmp_path: Path) -> None:
    """The demo's plans use every charge model; each invoice's document renders, in both
    languages, and the invoice mail goes out (found by `make run`: a volume tier's
    details have no `from`, and one such invoice stopped every housekeeping round)."""
    from billfold import demo
    from billfold.config import Settings
    from billfold.invoicing import mail_invoices
    from tests.conftest import TEST_SECRET, make_context

    settings = Settings(home=tmp_path, secret_key=TEST_SECRET)
    demo.load(settings)
    ctx = make_context(settings.resolved_database_url(), tmp_path)
    try:
        found = ctx.run(invoices.list_for, SYSTEM, limit=1000)[0]
        assert len(found) > 20
        for inv in found[:40]:
            for locale in ("en", "zh-CN"):
                assert "</html>" in ctx.run(invoices.render_html, SYSTEM, inv.id, locale=locale)
        done = mail_invoices(ctx)
        assert done["failed"] == 0 and done["sent"] > 0
    finally:
        ctx.db.dispose()
