"""A batch of billing work: periods opened and closed, invoice lines, settlement and
standing, gathered in memory and written back in bulk by `flush`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from billfold import ledger, prepaid
from billfold.core import audit
from billfold.core.access import SYSTEM
from billfold.core.context import Work
from billfold.domain.billing import period_fraction, prorate
from billfold.domain.errors import BillfoldError, InsufficientFunds
from billfold.domain.ledger import (
    PLATFORM_OWNER_ID,
    AccountKind,
    ChargeAccounts,
    OwnerType,
    Posting,
    TransferKind,
    TransferSpec,
    charge_transfer,
)
from billfold.domain.money import Currency, currency, format_decimal, round_to_minor
from billfold.domain.pricing import Plan
from billfold.ids import new_id
from billfold.invoicing._writing import write_invoices, write_subscriptions, write_usage_marks
from billfold.invoicing.model import (
    Catalog,
    Invoice,
    Line,
    Sub,
    billing_key,
    money,
)
from billfold.store.tables import (
    invoice_counters,
    invoice_notices,
    usage_invoiced,
    usage_periods,
)

# --- the batch -------------------------------------------------------------------------


@dataclass
class Batch:
    """What a unit of work changes, gathered in memory and written in bulk by `flush`."""

    work: Work
    now: datetime
    catalog: Catalog = field(default_factory=Catalog)
    subs: list[Sub] = field(default_factory=list)
    invoices: dict[str, Invoice] = field(default_factory=dict)
    usage_marks: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    notes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    """What the bill run did to each subscription, for the audit trail (see `note`)."""
    issued: list[str] = field(default_factory=list)
    """Invoices finalized by this batch: their mail is queued in the same commit."""
    _numbers: dict[int, int] = field(default_factory=dict)
    _accounts: dict[tuple[str, str, str, str], int] = field(default_factory=dict)

    def note(self, action: str, sub: Sub, **details: Any) -> None:
        """An audit entry, by the system, for a change the billing itself made to `sub`
        (a renewal, an expiry, a change of standing); written with the batch."""
        self.notes.append((action, sub.id, {"user_id": sub.user_id, **details}))

    def prime_accounts(self, owner_ids: Iterable[str]) -> None:
        """Looks up the accounts of many users in one statement (a bill run's chunk)."""
        for account in ledger.accounts_of(self.work, OwnerType.USER, owner_ids):
            key = (account.owner_type, account.owner_id, account.kind, account.currency)
            self._accounts[key] = account.id

    @property
    def settings(self) -> Any:
        return self.work.settings

    def track(self, invoice: Invoice) -> Invoice:
        self.invoices[invoice.id] = invoice
        return invoice

    def tax_rate(self, user: Any) -> Decimal:
        return Decimal(user.tax_rate if user.tax_rate is not None else self.settings.tax_rate)

    # Periods ------------------------------------------------------------------------

    def plan_of(self, sub: Sub, at: datetime) -> tuple[str, Plan]:
        """The plan (and version) a subscription was on at `at`."""
        plan_id = sub.phases[-1].plan_id
        for phase in sub.phases:
            if phase.starts_at <= at and (phase.ends_at is None or at < phase.ends_at):
                plan_id = phase.plan_id
        return plan_id, self.catalog.plan(plan_id, at)

    def open_period(self, sub: Sub, start: datetime, end: datetime) -> Invoice:
        """The period's draft invoice, with the fee paid in advance."""
        plan = self.plan_of(sub, start)[1]
        invoice = self.track(
            Invoice(
                id=new_id("in"),
                billing_key=billing_key(sub.id, start),
                user_id=sub.user_id,
                subscription_id=sub.id,
                provider_id=sub.provider_id,
                cur=currency(sub.currency),
                billing_mode=sub.user.billing_mode,
                period_start=start,
                period_end=end,
                status="draft",
                tax_rate=self.tax_rate(sub.user),
                commission_rate=self.catalog.commission(plan, sub.provider_id),
                created_at=self.now,
                new=True,
                dirty=True,
            )
        )
        sub.invoice = invoice
        sub.set(current_period_start=start, current_period_end=end, updated_at=self.now)
        if not sub.in_trial(start) and plan.fee_timing == "advance" and plan.fixed_fee:
            fee = invoice.add(self.fee_line(sub, plan, start, end, "fixed_fee"))
            self.discount(invoice, sub, plan, fee)
        self.counts["periods_opened"] += 1
        return invoice

    def fee_line(self, sub: Sub, plan: Plan, start: datetime, end: datetime, kind: str) -> Line:
        whole_start, whole_end = sub.whole_period(start)
        used, days = period_fraction(start, end, whole_start, whole_end)
        amount = prorate(plan.fixed_fee, used, days, plan.currency)
        span = f"{start:%Y-%m-%d} to {end:%Y-%m-%d}"
        note = "" if used == days else f", prorated {used}/{days} days"
        return Line(
            kind,
            f"{plan.name} fixed fee ({span}{note})",
            money(amount, plan.currency),
            period_start=start,
            period_end=end,
        )

    def discount(self, invoice: Invoice, sub: Sub, plan: Plan, fee: Line) -> None:
        """A waiting discount coupon in scope takes its part off the fee: a `discount`
        line, paid at settlement by the coupon's funder (the provider still earns its
        share of the whole fee)."""
        found = prepaid.claim_discount(
            self.work, sub.user_id, invoice.cur.code, plan.service, sub.provider_id,
            fee.amount, invoice.id, now=self.now,
        )  # fmt: skip
        if found is None:
            return
        cur = invoice.cur
        off = min(money(round_to_minor(Decimal(found.units).scaleb(-cur.ledger_scale), cur), cur),
                  fee.amount)  # fmt: skip
        if off > 0:
            invoice.add(
                Line(
                    "discount",
                    f"Coupon {found.code}: {format_decimal(found.percent)}% off",
                    -off,
                    period_start=fee.period_start,
                    period_end=fee.period_end,
                )
            )

    def close_period(self, sub: Sub, rows: Sequence[Any]) -> Invoice:
        """Finishes the current period's invoice: arrears fees, usage, minimum, number."""
        start, end = sub.current_period_start, sub.current_period_end
        invoice = sub.invoice
        if invoice is None:  # Created before this engine kept one per period: make it now.
            invoice = self.open_period(sub, start, end)
        self.track(invoice)
        trial = sub.in_trial(start)
        segments = self.segments(sub, start, end)
        if not trial:
            for seg_start, seg_end, plan in segments:
                if plan.fee_timing == "arrears" and plan.fixed_fee:
                    fee = invoice.add(self.fee_line(sub, plan, seg_start, seg_end, "fixed_fee"))
                    self.discount(invoice, sub, plan, fee)
        usage_total = self.usage_lines(sub, invoice, rows, start, end)
        last_plan = segments[-1][2]
        if not trial and last_plan.minimum:
            whole_start, whole_end = sub.whole_period(start)
            covered = sum(period_fraction(a, b, whole_start, whole_end)[0] for a, b, _ in segments)
            days = period_fraction(whole_start, whole_end, whole_start, whole_end)[1]
            minimum = money(
                prorate(last_plan.minimum, min(covered, days), days, invoice.cur), invoice.cur
            )
            if usage_total < minimum:
                note = "" if covered >= days else f", prorated {covered}/{days} days"
                invoice.add(
                    Line(
                        "minimum",
                        f"Minimum spend true-up ({format_decimal(last_plan.minimum)}{note})",
                        minimum - usage_total,
                        period_start=start,
                        period_end=end,
                    )
                )
        self.finalize(invoice, end)
        self.counts["invoices_finalized"] += 1
        return invoice

    def segments(
        self, sub: Sub, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime, Plan]]:
        """The parts of [start, end) on each plan the subscription was on."""
        found = []
        for phase in sub.phases:
            a = max(start, phase.starts_at)
            b = min(end, phase.ends_at) if phase.ends_at is not None else end
            if a < b:
                found.append((a, b, self.catalog.plan(phase.plan_id, a)))
        if not found:
            found.append((start, end, self.plan_of(sub, start)[1]))
        return found

    def usage_lines(
        self, sub: Sub, invoice: Invoice, rows: Sequence[Any], start: datetime, end: datetime
    ) -> int:
        """One line per metric for this period's usage, one per metric for late usage.

        Returns the period's usage amount (for the minimum), in ledger units.
        """
        plan_ids = {phase.plan_id for phase in sub.phases}
        current: dict[str, list[Any]] = defaultdict(list)
        late: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            if row.user_id != sub.user_id or row.plan_id not in plan_ids or row.period_start >= end:
                continue
            code = self.catalog.metric_codes.get(row.metric_id, row.metric_id)
            (current if row.period_start >= start else late)[code].append(row)
        total = 0
        for code in sorted(current):
            total += self._usage_line(invoice, code, current[code], "usage", f"Usage: {code}")
        for code in sorted(late):
            self._usage_line(
                invoice, code, late[code], "usage", f"Late usage: {code} (earlier periods)"
            )
        return total

    def _usage_line(
        self, invoice: Invoice, code: str, rows: list[Any], kind: str, text: str
    ) -> int:
        charged = 0
        quantity = Decimal(0)
        covered = sum((Decimal(row.covered) for row in rows), Decimal(0))
        if covered:
            # The line's quantity is what the plan priced; packages covered the rest.
            text += f" ({format_decimal(covered)} covered by resource packages)"
        for row in rows:
            before = int(row.invoiced_units or 0)
            charged += int(row.charged_units) - before
            quantity += Decimal(row.quantity) - Decimal(row.invoiced_quantity or 0)
            self.usage_marks.append(
                {"b_id": row.id, "b_units": int(row.charged_units), "b_quantity": row.quantity}
            )
        cur = invoice.cur
        exact = Decimal(charged).scaleb(-cur.ledger_scale)
        amount = money(round_to_minor(exact, cur), cur)
        invoice.add(
            Line(
                kind,
                text,
                amount,
                metric=code,
                quantity=format_decimal(quantity),
                period_start=invoice.period_start,
                period_end=invoice.period_end,
                prepaid=charged,
            )
        )
        return amount

    def finalize(self, invoice: Invoice, dated: datetime) -> None:
        invoice.number = self.next_number(dated.year)
        invoice.status = "open"
        invoice.finalized_at = self.now
        invoice.due_at = dated + timedelta(days=self.settings.invoice_due_days)
        invoice.dirty = True
        self.issued.append(invoice.id)

    def next_number(self, year: int) -> str:
        """The next gap-free number of `year`, under the counter's row lock."""
        if year not in self._numbers:
            insert = postgresql.insert if self.work.dialect == "postgresql" else sqlite.insert
            self.work.conn.execute(
                insert(invoice_counters).values(year=year, last_number=0).on_conflict_do_nothing()
            )
            self._numbers[year] = int(
                self.work.conn.execute(
                    select(invoice_counters.c.last_number)
                    .where(invoice_counters.c.year == year)
                    .with_for_update()
                ).scalar_one()
            )
        self._numbers[year] += 1
        return f"{self.settings.invoice_prefix}-{year}-{self._numbers[year]:06d}"

    # Settlement ---------------------------------------------------------------------

    def accounts(self, user: Any, provider_id: str | None, cur: Currency) -> dict[str, int]:
        work, now = self.work, self.now

        def ensure(
            work: Work,
            owner_type: OwnerType,
            owner_id: str,
            kind: AccountKind,
            code: str,
            *,
            now: datetime,
            floor: int | None = None,
        ) -> int:
            key = (str(owner_type), owner_id, str(kind), code)
            found = self._accounts.get(key)
            if found is None:
                found = self._accounts[key] = ledger.ensure_account(
                    work, owner_type, owner_id, kind, code, now=now, floor=floor
                )
            return found

        found = {
            "wallet": ensure(
                work,
                OwnerType.USER,
                user.id,
                AccountKind.WALLET,
                cur.code,
                now=now,
                # A postpaid wallet holds cash only; its credit is on the receivable.
                floor=-int(user.credit_limit) if user.billing_mode == "prepaid" else 0,
            ),
            "receivable": ensure(
                work, OwnerType.USER, user.id, AccountKind.RECEIVABLE, cur.code, now=now
            ),
            "revenue": ensure(
                work,
                OwnerType.PLATFORM,
                PLATFORM_OWNER_ID,
                AccountKind.PLATFORM_REVENUE,
                cur.code,
                now=now,
            ),
            "taxes": ensure(
                work, OwnerType.PLATFORM, PLATFORM_OWNER_ID, AccountKind.TAXES, cur.code, now=now
            ),
        }
        if provider_id is not None:
            found["earnings"] = ensure(
                work,
                OwnerType.PROVIDER,
                provider_id,
                AccountKind.PROVIDER_EARNINGS,
                cur.code,
                now=now,
            )
        return found

    def charge_spec(
        self,
        invoice: Invoice,
        user: Any,
        net: int,
        tax: int,
        description: str,
        *,
        payer: str,
        overflow: bool = False,
        kind: TransferKind = TransferKind.CHARGE,
        discount: tuple[int, int] | None = None,
    ) -> TransferSpec | None:
        """The payer pays `net + tax`: the net split by commission, the tax to taxes.
        With a `discount` (its funder's account, units), the net before it is split and
        the funder pays that part."""
        off = 0 if discount is None else discount[1]
        if net + off == 0 and tax == 0:
            return None
        ids = self.accounts(user, invoice.provider_id, invoice.cur)
        accounts = ChargeAccounts(
            payer=ids[payer],
            revenue=ids["revenue"],
            earnings=ids["earnings"] if invoice.provider_id is not None else None,
            taxes=ids["taxes"],
            overflow=ids["receivable"] if overflow and payer == "wallet" else None,
        )
        return charge_transfer(
            accounts,
            transfer_id=new_id("tr"),
            kind=kind if net + tax >= 0 else TransferKind.REFUND,
            currency=invoice.cur.code,
            amount=net + off,
            commission_rate=invoice.commission_rate,
            tax=tax,
            discount=discount,
            user_id=invoice.user_id,
            provider_id=invoice.provider_id,
            description=description,
            reference=invoice.id,
        )

    def discount_of(self, invoice: Invoice, group: list[Line]) -> tuple[int, int] | None:
        """(the funder's account, units) of the discount lines among `group`."""
        off = -sum(line.amount for line in group if line.kind == "discount")
        if off <= 0:
            return None
        funder = prepaid.discount_funder(self.work, invoice.id, invoice.cur.code)
        return None if funder is None else (funder, off)

    def settle(self, invoices_: Iterable[Invoice], users_: dict[str, Any]) -> None:
        """Moves the money of every unsettled line; what a wallet can't cover stays so."""
        plans_: list[tuple[TransferSpec, list[Line], Invoice]] = []
        for invoice in invoices_:
            if invoice.status == "void":
                continue
            user = users_[invoice.user_id]
            payer = "wallet" if invoice.billing_mode == "prepaid" else "receivable"
            open_lines = [line for line in invoice.lines if not line.settled]
            # Usage already happened: its rounding (and tax) is charged like usage, into
            # debt if need be. Fees and credits are all or nothing per invoice.
            usage = [line for line in open_lines if line.prepaid or line.kind == "usage"]
            others = [line for line in open_lines if line not in usage]
            for group, overflow in ((usage, True), (others, False)):
                if not group:
                    continue
                net = sum(line.amount - line.prepaid for line in group)
                tax = sum(line.tax for line in group)
                discount = self.discount_of(invoice, group)
                label = "Invoice " + (invoice.number or f"for {invoice.period_start:%Y-%m-%d}")
                spec = self.charge_spec(
                    invoice,
                    user,
                    net,
                    tax,
                    f"{label}: {', '.join(sorted({line.kind for line in group}))}",
                    payer=payer,
                    overflow=overflow,
                    discount=discount,
                )
                if spec is None:
                    for line in group:
                        line.settled, line.dirty = True, True
                    continue
                plans_.append((spec, group, invoice))
        for offset in range(0, len(plans_), ledger.MAX_BATCH):
            batch = plans_[offset : offset + ledger.MAX_BATCH]
            results = ledger.post_many(self.work, [spec for spec, _, _ in batch], now=self.now)
            for (spec, group, invoice), result in zip(batch, results, strict=True):
                if isinstance(result, InsufficientFunds):
                    self.counts["charges_declined"] += 1
                    continue
                if isinstance(result, BillfoldError):
                    raise result
                for line in group:
                    line.settled, line.transfer_id, line.dirty = True, spec.id, True
                invoice.dirty = True
                self.counts["charges_posted"] += 1

    def pay_from_wallet(self, invoice: Invoice, user: Any) -> bool:
        """A postpaid invoice paid from the cash in the wallet: wallet down, receivable
        up. Never from the credit line: the credit limit bounds what the user may owe,
        it is not money that pays what they owe."""
        due = invoice.amount_due
        if due <= 0:
            return True
        ids = self.accounts(user, None, invoice.cur)
        code = invoice.cur.code
        spec = TransferSpec(
            id=new_id("tr"),
            kind=TransferKind.INVOICE_PAYMENT,
            postings=(Posting(ids["wallet"], code, -due), Posting(ids["receivable"], code, due)),
            user_id=invoice.user_id,
            provider_id=invoice.provider_id,
            description=f"Payment of invoice {invoice.number}",
            reference=invoice.id,
            covered_accounts=frozenset({ids["wallet"]}),
        )
        result = ledger.post_many(self.work, [spec], now=self.now)[0]
        if isinstance(result, InsufficientFunds):
            return False
        if isinstance(result, BillfoldError):
            raise result
        invoice.amount_paid += due
        invoice.dirty = True
        return True

    def refresh(self, invoice: Invoice) -> None:
        """Paid status and amounts after settlement."""
        if invoice.billing_mode == "prepaid":
            invoice.amount_paid = sum(
                line.gross for line in invoice.lines if line.settled and line.gross > 0
            )
        if invoice.status == "open" and invoice.amount_due == 0:
            invoice.status = "paid"
            invoice.paid_at = self.now
            invoice.dirty = True

    # Dunning -------------------------------------------------------------------------

    def standing(self, sub: Sub, open_invoices: Sequence[Invoice]) -> None:
        """Past due while a charge is unpaid; suspended after the grace period; back to
        active (or trialing) once everything is paid."""
        owing = [
            inv
            for inv in open_invoices
            if inv.amount_due > 0
            and (
                inv.billing_mode == "prepaid" or (inv.due_at is not None and inv.due_at <= self.now)
            )
        ]
        status = sub.status
        if status == "canceled":
            return
        if not owing:
            if status in ("past_due", "suspended"):
                good = "trialing" if sub.in_trial(self.now) else "active"
                sub.set(status=good, past_due_since=None, next_retry_at=None, updated_at=self.now)
                self.counts["subscriptions_recovered"] += 1
                self.note("subscription.recovered", sub, status=good)
            elif status == "trialing" and not sub.in_trial(self.now):
                sub.set(status="active", updated_at=self.now)
            return
        since = sub.past_due_since or self.now
        retries = self.settings.dunning_retry_hours
        failures = sum(1 for hours in retries if since + timedelta(hours=hours) <= self.now)
        next_retry = since + timedelta(hours=retries[failures]) if failures < len(retries) else None
        grace_over = self.now >= since + timedelta(days=self.settings.dunning_grace_days)
        new_status = "suspended" if grace_over else "past_due"
        if new_status != status or sub.next_retry_at != next_retry or sub.past_due_since is None:
            if new_status != status:
                self.counts[f"subscriptions_{new_status}"] += 1
                self.note(f"subscription.{new_status}", sub, since=since.isoformat())
            sub.set(
                status=new_status,
                past_due_since=since,
                next_retry_at=next_retry,
                updated_at=self.now,
            )

    # Writing -------------------------------------------------------------------------

    def flush(self) -> None:
        """Writes everything the batch changed, in bulk: a few statements per batch."""
        conn = self.work.conn
        for invoice in self.invoices.values():
            self.refresh(invoice)
        write_invoices(conn, list(self.invoices.values()), self.now)
        if self.usage_marks:
            write_usage_marks(conn, self.usage_marks)
            self.usage_marks = []
        if self.issued:
            # The outbox of invoice mail (invoicing.notices), written with the invoices.
            conn.execute(
                invoice_notices.insert(),
                [
                    {"invoice_id": i, "kind": "issued", "created_at": self.now, "attempts": 0}
                    for i in self.issued
                ],
            )
            self.issued = []
        for year, last in self._numbers.items():
            conn.execute(
                update(invoice_counters)
                .where(invoice_counters.c.year == year)
                .values(last_number=last)
            )
        write_subscriptions(conn, self.subs)
        for action, sub_id, details in self.notes:
            audit.record(
                self.work, SYSTEM, action, "subscription", sub_id, at=self.now, details=details
            )
        self.notes = []


def usage_rows(work: Work, subs: Sequence[Sub]) -> list[Any]:
    """Usage of these subscriptions' users and plans not invoiced yet (or not all of it)."""
    if not subs:
        return []
    user_ids = sorted({sub.user_id for sub in subs})
    plan_ids = sorted({phase.plan_id for sub in subs for phase in sub.phases})
    query = (
        select(
            usage_periods.c.id,
            usage_periods.c.user_id,
            usage_periods.c.metric_id,
            usage_periods.c.period_start,
            usage_periods.c.plan_id,
            usage_periods.c.quantity,
            usage_periods.c.charged_units,
            usage_periods.c.covered,
            usage_invoiced.c.invoiced_units,
            usage_invoiced.c.quantity.label("invoiced_quantity"),
        )
        .outerjoin(usage_invoiced, usage_invoiced.c.usage_period_id == usage_periods.c.id)
        .where(
            usage_periods.c.user_id.in_(user_ids),
            usage_periods.c.plan_id.in_(plan_ids),
            or_(
                usage_invoiced.c.usage_period_id.is_(None),
                usage_invoiced.c.invoiced_units != usage_periods.c.charged_units,
                usage_invoiced.c.quantity != usage_periods.c.quantity,
            ),
        )
        .order_by(usage_periods.c.id)
        # Metering updates these rows as usage arrives: lock them (in metering's order,
        # before the ledger) so that what is invoiced is exactly what was charged.
        .with_for_update(of=usage_periods)
    )
    return list(work.conn.execute(query))
