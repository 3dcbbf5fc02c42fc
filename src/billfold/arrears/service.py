"""Graded arrears: each debt (a prepaid user's overdrawn balance, a postpaid user's
overdue invoices) walks grace, suspension and termination, and each
step is announced once: an audit entry, a webhook (the alerts' outbox) and a mail in the
user's language. Paying the debt restores access at once (access is judged from the debt
itself, see `billfold.core.directory.debt_stage`); the next review announces it.

Termination cancels the user's current subscriptions at once, each when its own plan's
terms (or the platform's) say so; what was recorded and billed stays.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import delete, select, update

from billfold import alerts, invoicing, ledger, subscriptions
from billfold.catalog import plan_in_force
from billfold.core import audit, mail
from billfold.core.access import SYSTEM
from billfold.core.context import Context, Work
from billfold.core.directory import arrears_terms, load_user, user_locale, user_row
from billfold.domain.arrears import GRACE, STAGES, SUSPENDED, TERMINATED, stage_at
from billfold.domain.errors import BillfoldError
from billfold.domain.money import format_money, from_units
from billfold.store.tables import arrears
from billfold.store.tables import subscriptions as subscription_rows

log = structlog.get_logger("billfold.arrears")

CURRENT = ("trialing", "active", "past_due", "suspended")

_WORDS = {
    "en": {
        GRACE: (
            "Your billfold balance is overdrawn",
            "Your usage went past your balance: you owe {owed}. Usage goes on until "
            "{until}; top up before then to keep your services.",
        ),
        SUSPENDED: (
            "Your billfold services are suspended",
            "You owe {owed}, and your services are suspended. Top up to restore them at "
            "once; unpaid, your subscriptions end on {until}.",
        ),
        TERMINATED: (
            "Your billfold subscriptions have ended",
            "You still owe {owed}. Your subscriptions have been cancelled; your records and "
            "invoices are kept.",
        ),
        "cleared": (
            "Your billfold balance is settled",
            "Thank you: what you owed is paid, and your services are available again.",
        ),
    },
    "zh-CN": {
        GRACE: (
            "您的 billfold 账户已欠费",
            "您的用量超出了余额，当前欠费 {owed}。服务将持续到 {until}，请在此之前充值以免停机。",
        ),
        SUSPENDED: (
            "您的 billfold 服务已停机",
            "您欠费 {owed}，服务已暂停。充值后立即恢复；若一直未支付，订阅将于 {until} 终止。",
        ),
        TERMINATED: (
            "您的 billfold 订阅已终止",
            "您仍欠费 {owed}。您的订阅已取消，消费记录和账单会保留。",
        ),
        "cleared": ("您的 billfold 欠费已结清", "感谢您的支付，欠费已结清，服务已恢复。"),
    },
}


# A postpaid user's arrears are overdue invoices, not an overdrawn balance.
_POSTPAID_WORDS = {
    "en": {
        GRACE: (
            "Your billfold invoice is overdue",
            "An invoice is past its due date: you owe {owed}. Your services go on until "
            "{until}; pay before then to keep them.",
        ),
        SUSPENDED: (
            "Your billfold services are suspended",
            "Overdue invoices ask for {owed}, and your services are suspended. Paying "
            "restores them at once; unpaid, your subscriptions end on {until}.",
        ),
        "cleared": (
            "Your billfold invoices are paid",
            "Thank you: your overdue invoices are paid, and your services are available.",
        ),
    },
    "zh-CN": {
        GRACE: (
            "您的 billfold 账单已逾期",
            "您有账单已过付款期限，当前应付 {owed}。服务将持续到 {until}，请在此之前付款以免停机。",
        ),
        SUSPENDED: (
            "您的 billfold 服务已停机",
            "逾期账单应付 {owed}，服务已暂停。付款后立即恢复；"
            "若一直未支付，订阅将于 {until} 终止。",
        ),
        "cleared": ("您的 billfold 逾期账单已结清", "感谢您的付款，逾期账单已结清，服务已恢复。"),
    },
}


def review(ctx: Context) -> dict[str, int]:
    """Moves every debt on to the stage its age calls for, and ends the arrears of users
    who have paid; one user per transaction. Safe to repeat. A prepaid user's debt is
    what the wallet could not cover, counted from when the review first saw it; a
    postpaid user's is what open invoices ask for past their due date, counted from
    the oldest one's due date."""
    with ctx.work(read_only=True) as work:
        owed = {user: (code, units) for user, code, units in ledger.debtors(work)}
        late = set(invoicing.overdue_users(work))
        known = set(work.conn.execute(select(arrears.c.user_id)).scalars())
    counts = dict.fromkeys((*STAGES, "cleared"), 0)
    for user_id in sorted(set(owed) | late | known):
        with ctx.work() as work:
            try:
                for step in _review_one(work, user_id, owed.get(user_id)):
                    counts[step] += 1
                work.commit()
            except BillfoldError as error:  # Logged; the next round tries again.
                log.warning("arrears_review_failed", user=user_id, reason=error.message)
    return counts


def _review_one(work: Work, user_id: str, debt: tuple[str, int] | None) -> list[str]:
    now = work.clock.now()
    row = work.conn.execute(
        select(arrears).where(arrears.c.user_id == user_id).with_for_update()
    ).one_or_none()
    user = user_row(work, user_id)
    started = now
    if user.billing_mode == "postpaid":
        units, oldest = invoicing.overdue_since(work, user_id)
        debt = (user.currency, units) if units > 0 else None
        started = oldest or now
    elif user.billing_mode != "prepaid":
        debt = None
    if debt is None:
        if row is None:
            return []
        work.conn.execute(delete(arrears).where(arrears.c.user_id == user_id))
        _announce(work, user_id, "cleared", row.since, now, None)
        return ["cleared"]
    terms = arrears_terms(work)
    if row is None:
        work.conn.execute(
            arrears.insert().values(
                user_id=user_id, since=started, stage=GRACE, stage_at=now, updated_at=now
            )
        )
        since, done = started, -1
    else:
        since, done = row.since, STAGES.index(row.stage)
    reached = STAGES.index(stage_at(since, now, terms))
    steps = []
    for index in range(done + 1, reached + 1):
        stage = STAGES[index]
        if stage == TERMINATED:
            _terminate(work, user_id, since, now)
        _announce(work, user_id, stage, since, now, debt)
        steps.append(stage)
    if steps:
        work.conn.execute(
            update(arrears)
            .where(arrears.c.user_id == user_id)
            .values(stage=STAGES[reached], stage_at=now, updated_at=now)
        )
    if reached == STAGES.index(TERMINATED) and not steps:
        # Subscriptions whose plans keep them longer end when their own terms say so.
        _terminate(work, user_id, since, now)
    return steps


def _terminate(work: Work, user_id: str, since: datetime, now: datetime) -> None:
    """Cancels the user's current subscriptions whose plan's terms have run out."""
    for sub in work.conn.execute(
        select(subscription_rows.c.id, subscription_rows.c.plan_id).where(
            subscription_rows.c.user_id == user_id, subscription_rows.c.status.in_(CURRENT)
        )
    ).all():
        terms = arrears_terms(work, plan_in_force(work, sub.plan_id, now).arrears)
        if stage_at(since, now, terms) != TERMINATED:
            continue
        subscriptions.cancel(work, SYSTEM, sub.id, timing="immediate")
        audit.record(
            work, SYSTEM, "subscription.terminated_for_arrears", "subscription", sub.id,
            at=now, details={"user_id": user_id, "since": since.isoformat()},
        )  # fmt: skip


def _announce(
    work: Work,
    user_id: str,
    stage: str,
    since: datetime,
    now: datetime,
    debt: tuple[str, int] | None,
) -> None:
    """The step's audit entry, webhook and mail (the mail after commit, best effort)."""
    terms = arrears_terms(work)
    user = load_user(work, user_id)
    owed = "" if debt is None else format_money(from_units(debt[1], user.currency), user.currency)
    until = since + terms.grace if stage == GRACE else since + terms.grace + terms.terminate_after
    data: dict[str, Any] = {"stage": stage, "since": since.isoformat(), "owed": owed,
                            "currency": user.currency.code, "until": until.isoformat()}  # fmt: skip
    audit.record(work, SYSTEM, f"arrears.{stage}", "user", user_id, at=now, details=data)
    alerts.announce(
        work, f"arrears:{user_id}:{since.isoformat()}:{stage}", f"arrears.{stage}", data,
        now=now, user_id=user_id,
    )  # fmt: skip
    row = user_row(work, user_id)
    locale = user_locale(work, user_id)
    words = _WORDS[locale]
    if row.billing_mode == "postpaid":
        words = {**words, **_POSTPAID_WORDS[locale]}
    subject, text = words[stage]
    body = text.format(owed=f"{owed} {user.currency.code}", until=f"{until:%Y-%m-%d %H:%M} UTC")
    settings, to = work.settings, user.email

    def send() -> None:
        try:
            mail.send(settings, to, subject, body + "\n")
        except Exception:  # The step stands; the mail is what failed.
            log.exception("arrears_mail_failed", user=user_id, stage=stage)

    work.after_commit(send)
