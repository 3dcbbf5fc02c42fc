"""What postpaid users owe on their invoices: overdue amounts, the aging of receivables,
and the repair of invoices that older versions paid from the credit line.

A postpaid user's receivable holds everything the user owes: usage not invoiced yet and
invoices still open. An invoice is open from its finalization until money for it
arrives; past its `due_at` what it asks for is overdue and walks the graded arrears
(`billfold.arrears`), counted from the oldest overdue invoice's due date.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import structlog
from sqlalchemy import and_, func, select

from billfold import ledger
from billfold.core import audit
from billfold.core.access import SYSTEM
from billfold.core.context import Context, Work
from billfold.core.directory import AMOUNT_DUE, overdue_since
from billfold.domain.ledger import AccountKind, OwnerType, Posting, TransferKind, TransferSpec
from billfold.ids import derived_id
from billfold.invoicing.batch import Batch
from billfold.invoicing.model import load_invoices
from billfold.store.tables import invoices, users

log = structlog.get_logger("billfold.invoicing")

_DUE = AMOUNT_DUE
_OPEN_POSTPAID = and_(invoices.c.billing_mode == "postpaid", invoices.c.status == "open")

BUCKETS: Final = ("current", "1_30", "31_60", "61_90", "over_90")
"""Aging buckets by days past due: not yet due, 1-30, 31-60, 61-90, more than 90."""


def overdue(work: Work, user_id: str) -> int:
    """Ledger units the user's open postpaid invoices ask for past their due date."""
    return overdue_since(work, user_id)[0]


__all__ = ["BUCKETS", "AgingRow", "aging", "bucket_of", "overdue", "overdue_since",
           "overdue_users", "reopen_paid_from_credit"]  # fmt: skip


def overdue_users(work: Work) -> dict[str, tuple[str, int, datetime]]:
    """user id: (currency, units overdue, oldest due date) for every user with any."""
    now = work.clock.now()
    rows = work.conn.execute(
        select(
            invoices.c.user_id,
            invoices.c.currency,
            func.sum(_DUE),
            func.min(invoices.c.due_at),
        )
        .where(_OPEN_POSTPAID, invoices.c.due_at <= now, _DUE > 0)
        .group_by(invoices.c.user_id, invoices.c.currency)
    ).all()
    return {str(r[0]): (str(r[1]), int(r[2]), r[3]) for r in rows}


def bucket_of(due_at: datetime | None, now: datetime) -> str:
    """The aging bucket of an amount due at `due_at`, seen at `now`."""
    if due_at is None or due_at >= now:
        return "current"
    late = now - due_at
    days = late.days + (1 if late.seconds or late.microseconds else 0)  # Started days.
    if days <= 30:
        return "1_30"
    if days <= 60:
        return "31_60"
    if days <= 90:
        return "61_90"
    return "over_90"


@dataclass(slots=True)
class AgingRow:
    """Open receivables of one party in one currency, by bucket, in ledger units."""

    party: str
    currency: str
    buckets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    invoices: int = 0

    @property
    def total(self) -> int:
        return sum(self.buckets.values())


def aging(
    work: Work, *, by: str, provider_id: str | None = None, user_id: str | None = None
) -> list[AgingRow]:
    """Open postpaid receivables by user or by provider, in aging buckets, as of now.
    `provider_id` or `user_id` narrows it to one party's invoices."""
    assert by in ("user", "provider")
    now = work.clock.now()
    query = select(
        invoices.c.user_id, invoices.c.provider_id, invoices.c.currency, invoices.c.due_at, _DUE
    ).where(_OPEN_POSTPAID, _DUE > 0)
    if provider_id is not None:
        query = query.where(invoices.c.provider_id == provider_id)
    if user_id is not None:
        query = query.where(invoices.c.user_id == user_id)
    found: dict[tuple[str, str], AgingRow] = {}
    for row in work.conn.execute(query):
        party = str(row.user_id if by == "user" else (row.provider_id or "platform"))
        key = (party, str(row.currency))
        entry = found.get(key) or found.setdefault(key, AgingRow(party, str(row.currency)))
        entry.buckets[bucket_of(row.due_at, now)] += int(row[4])
        entry.invoices += 1
    return sorted(found.values(), key=lambda r: (-r.total, r.party, r.currency))


# --- the repair of invoices paid from credit ----------------------------------------


def reopen_paid_from_credit(ctx: Context) -> dict[str, int]:
    """Reopens postpaid invoices that versions before 0015 "paid" by drawing on the
    user's credit line (the wallet went below zero to pay them).

    For each postpaid wallet below zero, the newest invoices paid from it are reopened
    for as much as the wallet is short, and one transfer per invoice moves that much
    back (wallet up, receivable down: the user owes it again). The wallet then holds
    cash only, and its floor becomes 0. One user per transaction; safe to repeat (a
    wallet at or above zero has nothing to repair, and the transfer ids are derived)."""
    with ctx.work(read_only=True) as work:
        postpaid = set(
            work.conn.execute(select(users.c.id).where(users.c.billing_mode == "postpaid"))
            .scalars()
            .all()
        )
        wallets = [
            r
            for r in ledger.accounts_of(work, OwnerType.USER, kinds=[AccountKind.WALLET])
            if r.owner_id in postpaid
        ]
        now_ = ledger.balances(work, [r.id for r in wallets])
        short = [
            (r.owner_id, r.currency)
            for r in wallets
            if now_[r.id].floor != 0 or now_[r.id].posted - now_[r.id].held < 0
        ]
    counts: dict[str, int] = defaultdict(int)
    for user_id, code in short:
        with ctx.work() as work:
            for key, value in _reopen_one(work, user_id, code).items():
                counts[key] += value
            work.commit()
    return dict(counts)


def _reopen_one(work: Work, user_id: str, code: str) -> dict[str, int]:
    now = work.clock.now()
    wallet = ledger.find_account(work, OwnerType.USER, user_id, AccountKind.WALLET, code)
    assert wallet is not None
    standing = ledger.balance(work, wallet)
    shortfall = -(standing.posted - standing.held)
    done: dict[str, int] = defaultdict(int)
    if shortfall > 0:
        paid = load_invoices(
            work,
            and_(
                invoices.c.user_id == user_id,
                invoices.c.billing_mode == "postpaid",
                invoices.c.currency == code,
                invoices.c.status.in_(("open", "paid")),
                invoices.c.amount_paid > 0,
            ),
            lock=True,
        )
        paid.sort(key=lambda inv: (inv.finalized_at or inv.created_at, inv.id), reverse=True)
        batch = Batch(work, now)
        receivable = ledger.ensure_account(
            work, OwnerType.USER, user_id, AccountKind.RECEIVABLE, code, now=now
        )
        for inv in paid:
            if shortfall <= 0:
                break
            back = min(shortfall, inv.amount_paid)
            ledger.post(
                work,
                TransferSpec(
                    id=derived_id("tr", "reopen", inv.id, str(inv.amount_paid)),
                    kind=TransferKind.ADJUSTMENT,
                    postings=(Posting(wallet, code, back), Posting(receivable, code, -back)),
                    user_id=user_id,
                    provider_id=inv.provider_id,
                    description=f"Invoice {inv.number} reopened: it was paid from credit",
                    reference=inv.id,
                ),
                now=now,
            )
            batch.track(inv)
            inv.amount_paid -= back
            inv.status, inv.paid_at, inv.dirty = "open", None, True
            shortfall -= back
            done["invoices_reopened"] += 1
            audit.record(
                work, SYSTEM, "invoice.reopened", "invoice", inv.id, at=now,
                details={"reason": "paid from credit", "amount": back, "currency": code},
            )  # fmt: skip
        batch.flush()
    after = ledger.balance(work, wallet)
    if after.floor != 0 and after.posted - after.held >= 0:
        ledger.set_floor(work, wallet, 0)
        done["wallets_cash_only"] += 1
    elif after.posted - after.held < 0:
        log.warning("postpaid_wallet_still_short", user=user_id, currency=code)
    return dict(done)
