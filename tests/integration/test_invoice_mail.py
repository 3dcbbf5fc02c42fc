"""Invoice mail through a real SMTP server: the issued invoice with its PDF, reminders
before and after the due date while money is owed, none once it is paid, and a mail that
failed is sent on a later round rather than lost."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from pypdf import PdfReader

from billfold import catalog, identity, metering, parties, subscriptions
from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.invoicing import billing, invoices, mail_invoices
from billfold.parties.profile import set_profile
from tests.conftest import _free_port
from tests.mailbox import Inbox, inbox  # noqa: F401 - the fixture

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def _month(ctx: Context, clock: TestClock, locale: str = "en") -> tuple[str, str]:
    provider = ctx.run(
        parties.create_provider, SYSTEM, name="Maps Inc", email="p@p.io", commission_rate="0.2"
    )
    me = Principal("k", Role.PROVIDER, provider_id=provider.id)
    ctx.run(catalog.create_service, me, code="maps", name="Maps")
    ctx.run(catalog.create_metric, me, "maps", code="calls", name="API calls", aggregation="count")
    ctx.run(catalog.create_plan, me, {
        "code": "monthly", "name": "Monthly", "service": "maps", "currency": "USD",
        "interval": "month", "fixed_fee": "30", "fee_timing": "advance",
        "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.002",
                     "free_units": "1000"}],
    })  # fmt: skip
    user = ctx.run(
        parties.create_user, SYSTEM, name="Ada", email="ada@example.com", currency_code="USD",
        billing_mode="postpaid", credit_limit="500",
    )  # fmt: skip
    ctx.run(set_profile, SYSTEM, user.id, {"email": "accounts@ada.example"})
    ctx.run(identity.grant_login, SYSTEM, email="ada@example.com", password="a long password 1",
            user_id=user.id, locale=locale)  # fmt: skip
    ctx.run(subscriptions.create, SYSTEM, user_ref=user.id, plan_code="monthly")
    event = {"id": "e", "user": user.id, "service": "maps", "metric": "calls", "value": "3500"}
    assert metering.ingest(ctx, me, [event]).accepted == 1
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))
    billing.bill_run(ctx)
    inv = ctx.run(invoices.list_for, SYSTEM, user=user.id, status="open", limit=5)[0][0]
    return user.id, inv.id


def _last(box: Inbox, to: str) -> EmailMessage:
    """The latest mail to `to`, parsed with the modern API (bodies and attachments)."""
    raw = box.to(to)[-1].as_bytes()
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())  # type: ignore[attr-defined]


def _smtp(ctx: Context, box: Inbox) -> None:
    ctx.settings.smtp_url = f"smtp://127.0.0.1:{box.port}"


def test_the_issued_invoice_is_mailed_with_its_pdf_then_reminders_until_paid(
    ctx: Context,
    clock: TestClock,
    inbox: Inbox,  # noqa: F811
) -> None:
    _smtp(ctx, inbox)
    _user, invoice_id = _month(ctx, clock)
    inv = ctx.run(invoices.get, SYSTEM, invoice_id)
    assert mail_invoices(ctx)["sent"] == 1
    assert len(inbox.to("accounts@ada.example")) == 1  # The billing address, not the login's.
    message = _last(inbox, "accounts@ada.example")
    assert message["Subject"] == "Invoice BF-2026-000001 from billfold platform"
    body = _text(message)
    assert "Amount due: $35.00, by Dec 15, 2026." in body
    assert "http://127.0.0.1:8000/invoices" in body
    (pdf,) = [p for p in message.iter_attachments() if p.get_content_type() == "application/pdf"]
    assert pdf.get_filename() == "BF-2026-000001.pdf"
    text = PdfReader(io.BytesIO(pdf.get_payload(decode=True))).pages[0].extract_text()
    assert "BF-2026-000001" in text and "API calls" in text and "$35.00" in text
    assert mail_invoices(ctx) == {"queued": 0, "sent": 0, "dropped": 0, "failed": 0}

    assert inv.due_at is not None
    clock.set(inv.due_at - timedelta(days=3))
    assert mail_invoices(ctx)["sent"] == 1
    assert inbox.to("accounts@ada.example")[-1]["Subject"] == (
        "Invoice BF-2026-000001 is due on Dec 15, 2026"
    )
    # A week late, after a server that was down: one reminder, the latest that applies.
    clock.set(inv.due_at + timedelta(days=8))
    assert mail_invoices(ctx)["sent"] == 1
    late = _last(inbox, "accounts@ada.example")
    assert late["Subject"] == "Invoice BF-2026-000001 is overdue"
    assert "still asks for $35.00" in _text(late)
    assert len(inbox.to("accounts@ada.example")) == 3


def test_a_paid_invoice_gets_no_reminder(
    ctx: Context,
    clock: TestClock,
    inbox: Inbox,  # noqa: F811
) -> None:
    _smtp(ctx, inbox)
    _user, invoice_id = _month(ctx, clock)
    mail_invoices(ctx)
    inv = ctx.run(invoices.get, SYSTEM, invoice_id)
    assert inv.due_at is not None
    clock.set(inv.due_at - timedelta(days=3))
    from billfold.invoicing import notices

    assert notices.queue(ctx) == 1  # Queued, then the money arrives before it is sent.
    ctx.run(invoices.record_payment, SYSTEM, invoice_id, amount="35", method="bank_transfer",
            reference="R-1")  # fmt: skip
    assert notices.send_pending(ctx) == {"sent": 0, "dropped": 1, "failed": 0}
    clock.set(inv.due_at + timedelta(days=2))
    assert mail_invoices(ctx)["sent"] == 0
    assert len(inbox.to("accounts@ada.example")) == 1  # Only the invoice itself.


def test_chinese_mail_and_a_failed_mail_sent_later(
    ctx: Context,
    clock: TestClock,
    inbox: Inbox,  # noqa: F811
) -> None:
    ctx.settings.smtp_url = f"smtp://127.0.0.1:{_free_port()}"  # Nobody listens.
    _month(ctx, clock, locale="zh-CN")
    assert mail_invoices(ctx)["failed"] == 1
    _smtp(ctx, inbox)
    assert mail_invoices(ctx)["sent"] == 1
    message = _last(inbox, "accounts@ada.example")
    assert str(message["Subject"]) == "billfold platform 的账单 BF-2026-000001"
    assert "应付金额：US$35.00" in _text(message)


def test_two_senders_at_once_send_each_mail_once(
    ctx: Context,
    clock: TestClock,
    inbox: Inbox,  # noqa: F811
) -> None:
    """A server's housekeeping and the test clock (or two servers) may send at once."""
    import threading

    from billfold.invoicing import notices

    _smtp(ctx, inbox)
    _month(ctx, clock)
    start = threading.Barrier(4)
    results: list[dict[str, int]] = []

    def sender() -> None:
        start.wait()
        results.append(notices.send_pending(ctx))

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r["sent"] for r in results) == 1
    assert len(inbox.to("accounts@ada.example")) == 1


def test_the_arrears_mail_is_in_the_customers_language(
    ctx: Context,
    clock: TestClock,
    inbox: Inbox,  # noqa: F811
) -> None:
    """The arrears mail used to look for a locale on the user row, which has none, and
    was always English."""
    from billfold import arrears

    _smtp(ctx, inbox)
    _user, invoice_id = _month(ctx, clock, locale="zh-CN")
    due = ctx.run(invoices.get, SYSTEM, invoice_id).due_at
    assert due is not None
    clock.set(due + timedelta(hours=1))
    assert arrears.review(ctx)["suspended"] == 1
    # Arrears mail goes to the account's address, in the account's language.
    assert inbox.to("ada@example.com")
    assert "停机" in str(_last(inbox, "ada@example.com")["Subject"])
