"""Invoice mail: the invoice when it is issued, with its PDF attached and a link to the
console, and reminders before and after the due date of what is still owed.

Notices are an outbox (`invoice_notices`): the bill run writes `issued` in the
transaction that finalizes the invoice, `queue` writes reminders as they fall due, and
`send_pending` mails them afterwards and marks each sent once the SMTP server has taken
it. A process claims a notice for a few minutes before sending it, so two servers do
not both send the same mail. A mail that fails is
retried on the next round (up to MAX_ATTEMPTS); a reminder for an invoice paid
meanwhile is dropped, not sent. A crash between the SMTP server's acceptance and the
mark sends that one mail again, which is the price of never losing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from billfold.core import mail
from billfold.core.access import SYSTEM
from billfold.core.context import Context, Work
from billfold.core.directory import AMOUNT_DUE, billing_profile, load_user, user_locale
from billfold.core.i18n import Formats, translations
from billfold.domain.money import from_units
from billfold.invoicing.invoices import render_pdf
from billfold.invoicing.model import Invoice, load_invoices
from billfold.store.tables import invoice_notices, invoices

log = structlog.get_logger("billfold.invoicing")

MAX_ATTEMPTS: Final = 10
BATCH: Final = 50


def _kind(days: int) -> str:
    return f"due_in_{-days}d" if days < 0 else f"overdue_{days}d"


def queue(ctx: Context) -> int:
    """Writes the reminders that have fallen due (`BILLFOLD_INVOICE_REMINDER_DAYS`) for
    open postpaid invoices that still ask for money: only the latest one that applies,
    so a server that was down for a week does not send three at once. (The `issued`
    notice is written by the bill run, in the transaction that finalizes the invoice.)"""
    wanted: list[tuple[str, str, bool]] = []  # (invoice, kind, superseded)
    with ctx.work(read_only=True) as work:
        now = work.clock.now()
        days = sorted(set(work.settings.invoice_reminder_days))
        if not days:
            return 0
        # Past the last reminder day there is nothing more to send; a month's margin
        # lets a server that was down catch up with the latest one.
        horizon = now + timedelta(days=max(0, -min(days)))
        oldest = now - timedelta(days=max(0, *days) + 30)
        # Columns only, no lines: this runs every housekeeping round.
        for inv in work.conn.execute(
            select(invoices.c.id, invoices.c.due_at, invoices.c.finalized_at).where(
                invoices.c.status == "open",
                invoices.c.due_at <= horizon,
                invoices.c.due_at >= oldest,
                invoices.c.billing_mode == "postpaid",
                AMOUNT_DUE > 0,
            )
        ):
            due = [d for d in days if inv.due_at + timedelta(days=d) <= now]
            # A reminder "due in 3 days" for an invoice issued 2 days before its due
            # date says nothing the invoice's own mail did not.
            due = [
                d for d in due
                if d >= 0 or (inv.finalized_at or now) < inv.due_at + timedelta(days=d)
            ]  # fmt: skip
            if not due:
                continue
            known = _known(work, inv.id)
            if _kind(due[-1]) in known:
                continue
            wanted += [(inv.id, _kind(d), True) for d in due[:-1] if _kind(d) not in known]
            wanted.append((inv.id, _kind(due[-1]), False))
    if not wanted:
        return 0
    with ctx.work() as work:
        insert = postgresql.insert if work.dialect == "postgresql" else sqlite.insert
        for invoice_id, kind, superseded in wanted:
            # Two servers may queue the same reminder at once: one row wins.
            work.conn.execute(
                insert(invoice_notices)
                .values(
                    invoice_id=invoice_id,
                    kind=kind,
                    created_at=now,
                    sent_at=now if superseded else None,
                    attempts=0,
                    last_error="superseded by a later reminder" if superseded else None,
                )
                .on_conflict_do_nothing()
            )
        work.commit()
    return sum(1 for _i, _k, superseded in wanted if not superseded)


def _known(work: Work, invoice_id: str) -> set[str]:
    return set(
        work.conn.execute(
            select(invoice_notices.c.kind).where(invoice_notices.c.invoice_id == invoice_id)
        ).scalars()
    )


@dataclass(frozen=True, slots=True)
class Letter:
    to: str
    subject: str
    text: str
    pdf: bytes | None
    filename: str


def mail_invoices(ctx: Context) -> dict[str, int]:
    """Queues what has fallen due and sends what waits: one round of invoice mail."""
    queued = queue(ctx)
    return {"queued": queued, **send_pending(ctx)}


def send_pending(ctx: Context) -> dict[str, int]:
    """Mails the notices not sent yet, oldest first; counts sent, dropped and failed."""
    counts = {"sent": 0, "dropped": 0, "failed": 0}
    with ctx.work(read_only=True) as work:
        pending = work.conn.execute(
            select(invoice_notices.c.invoice_id, invoice_notices.c.kind)
            .where(
                invoice_notices.c.sent_at.is_(None),
                invoice_notices.c.attempts < MAX_ATTEMPTS,
            )
            .order_by(invoice_notices.c.created_at, invoice_notices.c.invoice_id)
            .limit(BATCH)
        ).all()
    for invoice_id, kind in pending:
        if not _claim(ctx, invoice_id, kind):
            continue  # Another process is sending it.
        try:
            with ctx.work(read_only=True) as work:
                inv = load_invoices(work, invoices.c.id == invoice_id)[0]
                letter = None
                if kind == "issued" or (inv.status == "open" and inv.amount_due > 0):
                    pdf = render_pdf(work, SYSTEM, inv.id)
                    letter = _letter(work, inv, kind, pdf)
        except Exception as error:  # One invoice that cannot be written stops no other.
            log.exception("invoice_mail_not_written", invoice=invoice_id, kind=kind)
            _mark(ctx, invoice_id, kind, error=f"not written: {error}"[:500], sent=False)
            counts["failed"] += 1
            continue
        if letter is None:
            _mark(ctx, invoice_id, kind, error="no longer owed", sent=True)
            counts["dropped"] += 1
            continue
        try:
            attachments = [(letter.filename, "application/pdf", letter.pdf)] if letter.pdf else []
            mail.send(ctx.settings, letter.to, letter.subject, letter.text,
                      attachments=attachments)  # fmt: skip
        except Exception as error:  # Kept, and tried again next round.
            log.warning("invoice_mail_failed", invoice=invoice_id, kind=kind, error=str(error))
            _mark(ctx, invoice_id, kind, error=str(error)[:500], sent=False)
            counts["failed"] += 1
            continue
        _mark(ctx, invoice_id, kind, error=None, sent=True)
        counts["sent"] += 1
    return counts


CLAIM: Final = timedelta(minutes=5)
"""How long a process holds a notice it is sending; past that, it is sent again."""


def _claim(ctx: Context, invoice_id: str, kind: str) -> bool:
    """Takes the notice for `CLAIM`, counting an attempt, unless another process holds
    it: the process that takes it sends the mail. One that dies holding it leaves it
    unsent, and a later round takes it again once the claim has run out."""
    with ctx.work() as work:
        now = work.clock.now()
        claimed = work.conn.execute(
            update(invoice_notices)
            .where(
                invoice_notices.c.invoice_id == invoice_id,
                invoice_notices.c.kind == kind,
                invoice_notices.c.sent_at.is_(None),
                or_(
                    invoice_notices.c.claimed_until.is_(None),
                    invoice_notices.c.claimed_until < now,
                ),
            )
            .values(attempts=invoice_notices.c.attempts + 1, claimed_until=now + CLAIM)
        ).rowcount
        work.commit()
    return claimed == 1


def _mark(ctx: Context, invoice_id: str, kind: str, *, error: str | None, sent: bool) -> None:
    with ctx.work() as work:
        now = work.clock.now()
        values: dict[str, Any] = {"last_error": error, "claimed_until": None}
        if sent:
            values["sent_at"] = now
        work.conn.execute(
            update(invoice_notices)
            .where(invoice_notices.c.invoice_id == invoice_id, invoice_notices.c.kind == kind)
            .values(**values)
        )
        work.commit()


def _letter(work: Work, inv: Invoice, kind: str, pdf: bytes) -> Letter:
    user = load_user(work, inv.user_id)
    profile = billing_profile(work, user.id)
    lang = user_locale(work, user.id)
    t = translations(lang).gettext
    fmt = Formats(lang)
    cur = inv.cur
    values = {
        "name": profile.get("name") or user.name,
        "number": inv.number or "",
        "issuer": work.settings.invoice_issuer,
        "total": fmt.money(from_units(inv.total, cur), cur.code),
        "due": fmt.money(from_units(inv.amount_due, cur), cur.code),
        "date": fmt.date(inv.due_at) if inv.due_at else "",
        "period": f"{fmt.date(inv.period_start)} – {fmt.date(inv.period_end)}",
        "url": f"{work.settings.public_url.rstrip('/')}/invoices",
    }
    if kind == "issued":
        subject = t("Invoice %(number)s from %(issuer)s") % values
        lines = [t("Your invoice %(number)s for %(period)s is attached.") % values,
                 t("Total: %(total)s.") % values]  # fmt: skip
        if inv.status == "open" and inv.amount_due > 0:
            lines.append(t("Amount due: %(due)s, by %(date)s.") % values)
        else:
            lines.append(t("Nothing is due: it is paid."))
    elif kind.startswith("due_in_"):
        subject = t("Invoice %(number)s is due on %(date)s") % values
        lines = [t("A reminder: invoice %(number)s asks for %(due)s by %(date)s.") % values]
    else:
        subject = t("Invoice %(number)s is overdue") % values
        lines = [t("Invoice %(number)s was due on %(date)s and still asks for %(due)s.")
                 % values,
                 t("Please pay it to keep your services.")]  # fmt: skip
    text = "\n\n".join(
        [t("Hello %(name)s,") % values, *lines, t("See and pay it in your console: %(url)s")
         % values]
    ) + "\n"  # fmt: skip
    return Letter(
        to=profile.get("email") or user.email,
        subject=subject,
        text=text,
        pdf=pdf,
        filename=f"{inv.number or inv.id}.pdf",
    )
