"""Subscriptions' money: periods opened and closed, invoice lines, settlement, dunning.

Every subscription period has exactly one invoice, keyed by (subscription, period start)
in `invoices.billing_key`, so no run, rerun or race can bill a period twice.

- When a period opens, its invoice is created as a draft holding the fixed fee when it is
  paid in advance (prorated by days for a partial period). Immediate plan changes and
  cancellations add their proration lines to it.
- When the period closes, the invoice gets the fee paid in arrears, one usage line per
  metric (plus usage that arrived late for earlier, already invoiced periods), the
  minimum true-up and the tax of every line; it is numbered and finalized.
- A line is settled when its money has moved: a prepaid user pays from the wallet (a fee
  the wallet cannot cover stays unsettled, and the subscription goes past due); a
  postpaid user's charges go to the receivable, and the invoice stays open until money
  for it arrives (cash from the wallet, by choice or on request, or a payment recorded
  by an operator); the credit line never pays it.
  Usage was charged as it happened; its invoice line only settles the rounding to the
  minor unit (round half-up, once, on the line), so the ledger and the invoice agree to
  the last unit.

The batch is done in memory over rows loaded in bulk, then written back in bulk, so a bill
run over many subscriptions costs a few statements per chunk, not per subscription.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select

from billfold import ledger, prepaid
from billfold.core.context import Context, Work
from billfold.domain.errors import BillfoldError
from billfold.invoicing.batch import Batch, usage_rows
from billfold.invoicing.model import (
    CHUNK,
    LIVE,
    Invoice,
    Phase,
    Sub,
    load_invoices,
    load_subs,
)
from billfold.store.tables import (
    invoice_lines,
    invoices,
    subscriptions,
)

# --- the bill run ---------------------------------------------------------------------


def advance(batch: Batch, subs: Sequence[Sub], as_of: datetime) -> None:
    """Closes every period of `subs` that ended by `as_of` and opens the next ones."""
    rows = usage_rows(batch.work, subs)
    for sub in subs:
        while sub.status != "canceled" and sub.current_period_end <= as_of:
            end = sub.current_period_end
            invoice = batch.close_period(sub, rows)
            # Rows invoiced now are done; a late event reopens them in a later run.
            rows = [r for r in rows if not (r.user_id == sub.user_id and r.period_start < end)]
            if sub.cancel_at_period_end:
                sub.phases[-1].ends_at, sub.phases[-1].dirty = end, True
                sub.set(status="canceled", ended_at=end, updated_at=batch.now)
                batch.counts["subscriptions_canceled"] += 1
                batch.note("subscription.expired", sub, ended_at=end.isoformat())
                break
            if sub.pending_plan_id:
                sub.phases[-1].ends_at, sub.phases[-1].dirty = end, True
                sub.phases.append(Phase(sub.pending_plan_id, end, None))
                batch.note("subscription.plan_changed", sub, plan_id=sub.pending_plan_id)
                sub.set(plan_id=sub.pending_plan_id, pending_plan_id=None)
            start, next_end = sub.next_period(end)
            batch.open_period(sub, start, next_end)
            batch.note(
                "subscription.renewed",
                sub,
                period_start=start.isoformat(),
                period_end=next_end.isoformat(),
            )
            del invoice


def run_chunk(
    ctx: Context, as_of: datetime, *, after: str | None = None
) -> tuple[int, str | None, dict[str, int]]:
    """One transaction of the bill run: up to CHUNK due subscriptions, by id."""
    now = ctx.clock.now()
    with ctx.work() as work:
        query = (
            select(subscriptions)
            .where(
                subscriptions.c.status.in_(LIVE),
                subscriptions.c.current_period_end <= as_of,
                subscriptions.c.interval != "none",
            )
            .order_by(subscriptions.c.id)
            .limit(CHUNK)
        )
        if after is not None:
            query = query.where(subscriptions.c.id > after)
        if work.dialect == "postgresql":
            # Two bill runs at once (the server's and a command's) share out the batch.
            query = query.with_for_update(skip_locked=True)
        rows = list(work.conn.execute(query))
        if not rows:
            return 0, None, {}
        batch = Batch(work, now)
        batch.subs = load_subs(work, rows)
        batch.catalog.load(
            work,
            {p.plan_id for s in batch.subs for p in s.phases}
            | {s.pending_plan_id for s in batch.subs if s.pending_plan_id},
            {s.provider_id for s in batch.subs},
        )
        batch.prime_accounts([s.user_id for s in batch.subs])
        advance(batch, batch.subs, as_of)
        _settle_and_review(batch, batch.invoices)
        work.commit()
    return len(rows), rows[-1].id, dict(batch.counts)


def _settle_and_review(batch: Batch, known: dict[str, Invoice]) -> None:
    """Moves the money the chunk's invoices ask for, then each subscription's standing.

    `known` are invoices already in memory (changed by this chunk), which take the place
    of their stored rows; the other open invoices of the subscriptions are loaded.
    """
    people = {sub.user_id: sub.user for sub in batch.subs}
    batch.settle(batch.invoices.values(), people)
    collect_postpaid(batch, batch.invoices.values(), people)
    open_by_sub = _open_invoices(batch.work, [s.id for s in batch.subs], known)
    for sub in batch.subs:
        batch.standing(sub, open_by_sub.get(sub.id, []))
    batch.flush()


def _collect(work: Work, now: datetime, rows: Sequence[Any]) -> Batch:
    """Retries what the subscriptions in `rows` owe: dunning, and after a top-up."""
    batch = Batch(work, now)
    batch.subs = load_subs(work, rows)
    batch.prime_accounts([s.user_id for s in batch.subs])
    for invoices_ in _open_invoices(work, [s.id for s in batch.subs], {}).values():
        for inv in invoices_:
            batch.track(inv)
    _settle_and_review(batch, batch.invoices)
    return batch


def collect_postpaid(batch: Batch, invoices_: Iterable[Invoice], people: dict[str, Any]) -> None:
    """Open postpaid invoices are paid from the cash in the wallet, oldest first, when
    the user has chosen so (`autopay_invoices`) and the cash covers the invoice.
    Otherwise they stay open until money for them arrives."""
    for invoice in sorted(invoices_, key=lambda inv: (inv.finalized_at or inv.created_at, inv.id)):
        user = people[invoice.user_id]
        if (
            invoice.billing_mode == "postpaid"
            and invoice.status == "open"
            and invoice.amount_due > 0
            and user.autopay_invoices
            and batch.pay_from_wallet(invoice, user)
        ):
            batch.counts["invoices_paid"] += 1


def _open_invoices(
    work: Work, sub_ids: Sequence[str], known: dict[str, Invoice]
) -> dict[str, list[Invoice]]:
    """Each subscription's invoices that may still be owed (draft or open)."""
    found: dict[str, list[Invoice]] = defaultdict(list)
    if not sub_ids:
        return found
    for inv in load_invoices(
        work,
        and_(
            invoices.c.subscription_id.in_(list(sub_ids)),
            invoices.c.status.in_(("draft", "open")),
        ),
    ):
        # An invoice this unit of work changed is used as it is in memory.
        found[inv.subscription_id or ""].append(known.get(inv.id, inv))
    stored = {inv.id for invoices_ in found.values() for inv in invoices_}
    for inv in known.values():
        if inv.id not in stored and inv.status in ("draft", "open"):
            found[inv.subscription_id or ""].append(inv)  # Created by this unit of work.
    return found


def dunning_chunk(
    ctx: Context, as_of: datetime, *, after: str | None = None
) -> tuple[int, str | None, dict[str, int]]:
    """Retries what is due for subscriptions in arrears, and marks newly overdue ones."""
    now = ctx.clock.now()
    with ctx.work() as work:
        overdue = (
            select(invoices.c.subscription_id)
            .where(invoices.c.status == "open", invoices.c.due_at <= as_of)
            .scalar_subquery()
        )
        unpaid_prepaid = (
            select(invoices.c.subscription_id)
            .join(invoice_lines, invoice_lines.c.invoice_id == invoices.c.id)
            .where(
                invoices.c.billing_mode == "prepaid",
                invoices.c.status != "void",
                invoice_lines.c.settled == 0,
            )
            .scalar_subquery()
        )
        query = (
            select(subscriptions)
            .where(
                or_(
                    # A retry that is due; or a grace period that has run out (once: the
                    # subscription is then suspended, and stays so until money arrives,
                    # which reviews it at once, so suspended ones are not read again
                    # every run however many there are).
                    and_(
                        subscriptions.c.status.in_(("past_due", "suspended")),
                        subscriptions.c.next_retry_at <= as_of,
                    ),
                    and_(
                        subscriptions.c.status == "past_due",
                        subscriptions.c.past_due_since
                        <= as_of - timedelta(days=ctx.settings.dunning_grace_days),
                    ),
                    and_(
                        subscriptions.c.status.in_(("active", "trialing")),
                        or_(
                            subscriptions.c.id.in_(overdue), subscriptions.c.id.in_(unpaid_prepaid)
                        ),
                    ),
                )
            )
            .order_by(subscriptions.c.id)
            .limit(CHUNK)
        )
        if after is not None:
            query = query.where(subscriptions.c.id > after)
        if work.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = list(work.conn.execute(query))
        if not rows:
            return 0, None, {}
        batch = _collect(work, now, rows)
        work.commit()
    return len(rows), rows[-1].id, dict(batch.counts)


Progress = Callable[[str, int, int], None]


def count_due(ctx: Context, as_of: datetime) -> int:
    from sqlalchemy import func

    with ctx.work(read_only=True) as work:
        return int(
            work.conn.execute(
                select(func.count()).where(
                    subscriptions.c.status.in_(LIVE),
                    subscriptions.c.current_period_end <= as_of,
                    subscriptions.c.interval != "none",
                )
            ).scalar_one()
        )


def bill_run(
    ctx: Context, as_of: datetime | None = None, progress: Progress | None = None
) -> dict[str, int]:
    """Renewals, invoice finalization, dunning and hold expiry due by `as_of`.

    Idempotent and resumable: every chunk is one transaction that moves its subscriptions'
    periods on together with their invoices, so a rerun finds only what is still due.
    """
    now = ctx.clock.now()
    as_of = as_of or now
    if as_of > now:
        raise BillfoldError("as_of must not be in the future", param="as_of")
    totals: dict[str, int] = defaultdict(int)
    # Each round moves every due subscription on by one period; several rounds catch up
    # subscriptions that are several periods behind.
    while True:
        due = count_due(ctx, as_of)
        if not due:
            break
        done, after = 0, None
        while True:
            count, after, counts = run_chunk(ctx, as_of, after=after)
            if not count:
                break
            done += count
            totals["subscriptions_processed"] += count
            for key, value in counts.items():
                totals[key] += value
            if progress is not None:
                progress("renewals", min(done, due), due)
    after = None
    while True:
        count, after, counts = dunning_chunk(ctx, as_of, after=after)
        if not count:
            break
        for key, value in counts.items():
            totals[key] += value
        if progress is not None:
            progress("dunning", count, count)
    with ctx.work() as work:
        totals["holds_expired"] = ledger.expire_holds(work, now=now)
        work.commit()
    totals["grants_expired"] = expire_grants(ctx, now)
    return dict(totals)


def expire_grants(ctx: Context, now: datetime) -> int:
    """Ends every voucher and credit past its expiry, 500 to a transaction."""
    total = 0
    while True:
        with ctx.work() as work:
            ended = prepaid.expire_due(work, now=now)
            work.commit()
        total += ended
        if ended < 500:
            return total


def collect_for_user(work: Work, user_id: str) -> dict[str, int]:
    """After a top-up: pays what the user's subscriptions owe, and restores them."""
    now = work.clock.now()
    rows = list(
        work.conn.execute(
            select(subscriptions)
            .where(
                subscriptions.c.user_id == user_id,
                subscriptions.c.status.in_(LIVE),
                subscriptions.c.interval != "none",
            )
            .order_by(subscriptions.c.id)
            .with_for_update()
        )
    )
    if not rows:
        return {}
    batch = _collect(work, now, rows)
    return dict(batch.counts)
