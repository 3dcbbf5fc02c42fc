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
  postpaid user's charges go to the receivable, and the invoice is paid from the wallet.
  Usage was charged as it happened; its invoice line only settles the rounding to the
  minor unit (round half-up, once, on the line), so the ledger and the invoice agree to
  the last unit.

The batch is done in memory over rows loaded in bulk, then written back in bulk, so a bill
run over many subscriptions costs a few statements per chunk, not per subscription.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from billfold import ledger
from billfold.catalog import PlanVersions, load_versions
from billfold.core.context import Context, Work
from billfold.domain.billing import Schedule, period_fraction, prorate, round_half_up
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
    commission_in_force,
)
from billfold.domain.money import Currency, currency, format_decimal, to_units
from billfold.domain.pricing import Plan
from billfold.ids import new_id
from billfold.store.tables import (
    accounts,
    invoice_counters,
    invoice_lines,
    invoices,
    metrics,
    plans,
    providers,
    subscription_phases,
    subscriptions,
    usage_invoiced,
    usage_periods,
    users,
)

CHUNK: Final = 250
"""Subscriptions per bill-run transaction: big enough to share statements, small enough
that a killed run loses little batch and other writers wait little."""

LIVE: Final = ("trialing", "active", "past_due", "suspended")


# --- in-memory model ------------------------------------------------------------------


@dataclass(slots=True)
class Line:
    kind: str
    description: str
    amount: int
    """Ledger units, a whole number of minor units (rounded half-up once, here)."""
    tax: int = 0
    metric: str | None = None
    quantity: str | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    prepaid: int = 0
    """Ledger units of the line already charged as the usage happened (usage lines)."""
    settled: bool = False
    transfer_id: str | None = None
    id: int | None = None
    dirty: bool = False

    @property
    def gross(self) -> int:
        return self.amount + self.tax


@dataclass(slots=True)
class Invoice:
    id: str
    billing_key: str
    user_id: str
    subscription_id: str | None
    provider_id: str | None
    cur: Currency
    billing_mode: str
    period_start: datetime
    period_end: datetime
    status: str
    tax_rate: Decimal
    commission_rate: Decimal
    created_at: datetime
    number: str | None = None
    due_at: datetime | None = None
    finalized_at: datetime | None = None
    paid_at: datetime | None = None
    voided_at: datetime | None = None
    amount_paid: int = 0
    amount_credited: int = 0
    lines: list[Line] = field(default_factory=list)
    new: bool = False
    dirty: bool = False

    @property
    def subtotal(self) -> int:
        return sum(line.amount for line in self.lines)

    @property
    def tax(self) -> int:
        return sum(line.tax for line in self.lines)

    @property
    def total(self) -> int:
        return self.subtotal + self.tax

    @property
    def amount_due(self) -> int:
        if self.status == "void":
            return 0
        if self.billing_mode == "prepaid":
            owed = sum(line.gross for line in self.lines if not line.settled)
            return max(owed - self.amount_credited, 0)
        if self.status == "draft":
            return 0
        return max(self.total - self.amount_paid - self.amount_credited, 0)

    def add(self, line: Line) -> Line:
        line.tax = _tax(line.amount, self.tax_rate, self.cur)
        line.dirty = True
        self.lines.append(line)
        self.dirty = True
        return line


@dataclass(slots=True)
class Phase:
    plan_id: str
    starts_at: datetime
    ends_at: datetime | None
    id: int | None = None
    dirty: bool = False


@dataclass(slots=True)
class Sub:
    row: dict[str, Any]
    phases: list[Phase]
    user: Any
    invoice: Invoice | None = None
    """The invoice of the current period."""
    dirty: bool = False

    def __getattr__(self, name: str) -> Any:
        try:
            return self.row[name]
        except KeyError:
            raise AttributeError(name) from None

    def set(self, **values: Any) -> None:
        self.row.update(values)
        self.dirty = True

    @property
    def schedule(self) -> Schedule:
        return Schedule(
            self.row["interval"],
            self.row["interval_count"],
            self.row["billing_anchor"],
            self.row["billing_origin"],
        )

    def in_trial(self, moment: datetime) -> bool:
        return self.row["trial_end"] is not None and moment < self.row["trial_end"]

    def whole_period(self, start: datetime) -> tuple[datetime, datetime]:
        """The whole grid period a (possibly partial) period starting at `start` is part of."""
        return self.schedule.period_containing(start)

    def next_period(self, start: datetime) -> tuple[datetime, datetime]:
        """The billing period that starts at `start` (a trial is one period of its own)."""
        if self.in_trial(start):
            return start, self.row["trial_end"]
        return start, self.schedule.billing_period(start)[1]


def _tax(amount: int, rate: Decimal, cur: Currency) -> int:
    if not rate or not amount:
        return 0
    exact = Decimal(amount) * rate / (10**cur.ledger_scale)
    return to_units(round_half_up(exact, cur), cur)


def money(amount: Decimal, cur: Currency) -> int:
    """A line amount (already a whole number of minor units) in ledger units."""
    return to_units(amount, cur)


# --- loading --------------------------------------------------------------------------


class Catalog:
    """Plan versions and metric codes, loaded once per run and cached."""

    def __init__(self) -> None:
        self._versions: dict[str, PlanVersions] = {}
        self._names: dict[str, str] = {}
        self.metric_codes: dict[str, str] = {}
        self.commissions: dict[str, Decimal] = {}

    def load(self, work: Work, plan_ids: Iterable[str], provider_ids: Iterable[str]) -> None:
        missing = sorted(set(plan_ids) - set(self._versions))
        for offset in range(0, len(missing), 500):
            chunk = missing[offset : offset + 500]
            self._versions.update(load_versions(work, chunk))
            for row in work.conn.execute(
                select(metrics.c.id, metrics.c.code)
                .join(plans, plans.c.service_id == metrics.c.service_id)
                .where(plans.c.id.in_(chunk))
            ):
                self.metric_codes[str(row[0])] = str(row[1])
        wanted = sorted(set(provider_ids) - set(self.commissions))
        if wanted:
            for row in work.conn.execute(
                select(providers.c.id, providers.c.commission_rate).where(
                    providers.c.id.in_(wanted)
                )
            ):
                self.commissions[row.id] = Decimal(row.commission_rate)

    def plan(self, plan_id: str, at: datetime) -> Plan:
        """The plan's version in force at `at`."""
        return self._versions[plan_id].at(at).plan

    def commission(self, plan: Plan, provider_id: str) -> Decimal:
        return commission_in_force(plan.commission_rate, self.commissions[provider_id])


def _invoice_from_row(row: Any) -> Invoice:
    return Invoice(
        id=row.id,
        billing_key=row.billing_key,
        user_id=row.user_id,
        subscription_id=row.subscription_id,
        provider_id=row.provider_id,
        cur=currency(row.currency),
        billing_mode=row.billing_mode,
        period_start=row.period_start,
        period_end=row.period_end,
        status=row.status,
        tax_rate=Decimal(row.tax_rate),
        commission_rate=Decimal(row.commission_rate),
        created_at=row.created_at,
        number=row.number,
        due_at=row.due_at,
        finalized_at=row.finalized_at,
        paid_at=row.paid_at,
        voided_at=row.voided_at,
        amount_paid=int(row.amount_paid),
        amount_credited=int(row.amount_credited),
    )


def _line_from_row(row: Any) -> Line:
    return Line(
        kind=row.kind,
        description=row.description,
        amount=int(row.amount),
        tax=int(row.tax),
        metric=row.metric,
        quantity=row.quantity,
        period_start=row.period_start,
        period_end=row.period_end,
        prepaid=int(row.prepaid),
        settled=bool(row.settled),
        transfer_id=row.transfer_id,
        id=int(row.id),
    )


def load_invoices(work: Work, where: Any, *, lock: bool = False) -> list[Invoice]:
    query = select(invoices).where(where).order_by(invoices.c.id)
    if lock:
        query = query.with_for_update()
    found = [_invoice_from_row(row) for row in work.conn.execute(query)]
    if not found:
        return found
    by_id = {invoice.id: invoice for invoice in found}
    ids = list(by_id)
    for offset in range(0, len(ids), 500):
        for row in work.conn.execute(
            select(invoice_lines)
            .where(invoice_lines.c.invoice_id.in_(ids[offset : offset + 500]))
            .order_by(invoice_lines.c.id)
        ):
            by_id[row.invoice_id].lines.append(_line_from_row(row))
    return found


def load_subs(work: Work, rows: Sequence[Any]) -> list[Sub]:
    """Subscriptions with their phases, users and current invoices, in bulk."""
    if not rows:
        return []
    ids = [row.id for row in rows]
    phases: dict[str, list[Phase]] = defaultdict(list)
    for row in work.conn.execute(
        select(subscription_phases)
        .where(subscription_phases.c.subscription_id.in_(ids))
        .order_by(subscription_phases.c.subscription_id, subscription_phases.c.starts_at)
    ):
        phases[row.subscription_id].append(Phase(row.plan_id, row.starts_at, row.ends_at, row.id))
    user_ids = sorted({row.user_id for row in rows})
    people = {
        row.id: row
        for row in work.conn.execute(
            select(
                users.c.id,
                users.c.currency,
                users.c.billing_mode,
                users.c.credit_limit,
                users.c.tax_rate,
                users.c.status,
            ).where(users.c.id.in_(user_ids))
        )
    }
    keys = [billing_key(row.id, row.current_period_start) for row in rows]
    current = {
        inv.billing_key: inv for inv in load_invoices(work, invoices.c.billing_key.in_(keys))
    }
    subs = []
    for row, key in zip(rows, keys, strict=True):
        subs.append(Sub(dict(row._mapping), phases[row.id], people[row.user_id], current.get(key)))
    return subs


def billing_key(subscription_id: str, period_start: datetime) -> str:
    return f"{subscription_id}:{period_start.isoformat()}"


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
    _numbers: dict[int, int] = field(default_factory=dict)
    _accounts: dict[tuple[str, str, str, str], int] = field(default_factory=dict)

    def prime_accounts(self, owner_ids: Iterable[str]) -> None:
        """Looks up the accounts of many users in one statement (a bill run's chunk)."""
        wanted = sorted(set(owner_ids))
        for offset in range(0, len(wanted), 500):
            for row in self.work.conn.execute(
                select(
                    accounts.c.id,
                    accounts.c.owner_type,
                    accounts.c.owner_id,
                    accounts.c.kind,
                    accounts.c.currency,
                ).where(
                    # owner_type first: the lookup then uses the accounts' unique index
                    # (owner_type, owner_id, ...) instead of scanning every account.
                    accounts.c.owner_type == str(OwnerType.USER),
                    accounts.c.owner_id.in_(wanted[offset : offset + 500]),
                )
            ):
                key = (row.owner_type, row.owner_id, row.kind, row.currency)
                self._accounts[key] = int(row.id)

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
            invoice.add(self.fee_line(sub, plan, start, end, "fixed_fee"))
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
                    invoice.add(self.fee_line(sub, plan, seg_start, seg_end, "fixed_fee"))
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
        for row in rows:
            before = int(row.invoiced_units or 0)
            charged += int(row.charged_units) - before
            quantity += Decimal(row.quantity) - Decimal(row.invoiced_quantity or 0)
            self.usage_marks.append(
                {"b_id": row.id, "b_units": int(row.charged_units), "b_quantity": row.quantity}
            )
        cur = invoice.cur
        exact = Decimal(charged).scaleb(-cur.ledger_scale)
        amount = money(round_half_up(exact, cur), cur)
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
        invoice.status = "finalized"
        invoice.finalized_at = self.now
        invoice.due_at = dated + timedelta(days=self.settings.invoice_due_days)
        invoice.dirty = True

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
                floor=-int(user.credit_limit),
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
    ) -> TransferSpec | None:
        """The payer pays `net + tax`: the net split by commission, the tax to taxes."""
        if net == 0 and tax == 0:
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
            amount=net,
            commission_rate=invoice.commission_rate,
            tax=tax,
            user_id=invoice.user_id,
            provider_id=invoice.provider_id,
            description=description,
            reference=invoice.id,
        )

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
                label = "Invoice " + (invoice.number or f"for {invoice.period_start:%Y-%m-%d}")
                spec = self.charge_spec(
                    invoice,
                    user,
                    net,
                    tax,
                    f"{label}: {', '.join(sorted({line.kind for line in group}))}",
                    payer=payer,
                    overflow=overflow,
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
        """A postpaid invoice paid from the wallet: wallet down, receivable up."""
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
        if invoice.status == "finalized" and invoice.amount_due == 0:
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
            sub.set(
                status=new_status,
                past_due_since=since,
                next_retry_at=next_retry,
                updated_at=self.now,
            )

    # Writing -------------------------------------------------------------------------

    def flush(self) -> None:
        conn = self.work.conn
        for invoice in self.invoices.values():
            self.refresh(invoice)
        fresh = [inv for inv in self.invoices.values() if inv.new]
        if fresh:
            conn.execute(invoices.insert(), [_invoice_values(inv) for inv in fresh])
        changed = [inv for inv in self.invoices.values() if inv.dirty and not inv.new]
        if changed:
            values = [_invoice_values(inv) for inv in changed]
            conn.execute(
                update(invoices)
                .where(invoices.c.id == bindparam("b_id"))
                .values({name: bindparam(f"b_{name}") for name in values[0] if name != "id"}),
                [{f"b_{k}": v for k, v in row.items()} | {"b_id": row["id"]} for row in values],
            )
        new_lines = [
            _line_values(inv.id, line, self.now)
            for inv in self.invoices.values()
            for line in inv.lines
            if line.id is None
        ]
        if new_lines:
            conn.execute(invoice_lines.insert(), new_lines)
        settled = [
            {"b_id": line.id, "b_settled": 1, "b_transfer_id": line.transfer_id}
            for inv in self.invoices.values()
            for line in inv.lines
            if line.id is not None and line.dirty
        ]
        if settled:
            conn.execute(
                update(invoice_lines)
                .where(invoice_lines.c.id == bindparam("b_id"))
                .values(settled=bindparam("b_settled"), transfer_id=bindparam("b_transfer_id")),
                settled,
            )
        for inv in self.invoices.values():
            inv.new = inv.dirty = False
            for line in inv.lines:
                line.dirty = False
        if self.usage_marks:
            insert = postgresql.insert if self.work.dialect == "postgresql" else sqlite.insert
            statement = insert(usage_invoiced).values(
                usage_period_id=bindparam("b_id"),
                invoiced_units=bindparam("b_units"),
                quantity=bindparam("b_quantity"),
            )
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["usage_period_id"],
                    set_={
                        "invoiced_units": statement.excluded.invoiced_units,
                        "quantity": statement.excluded.quantity,
                    },
                ),
                self.usage_marks,
            )
            self.usage_marks = []
        for year, last in self._numbers.items():
            conn.execute(
                update(invoice_counters)
                .where(invoice_counters.c.year == year)
                .values(last_number=last)
            )
        dirty = [sub for sub in self.subs if sub.dirty]
        if dirty:
            columns = [
                "plan_id",
                "status",
                "current_period_start",
                "current_period_end",
                "pending_plan_id",
                "cancel_at_period_end",
                "ended_at",
                "past_due_since",
                "next_retry_at",
                "updated_at",
            ]
            conn.execute(
                update(subscriptions)
                .where(subscriptions.c.id == bindparam("b_id"))
                .values({name: bindparam(f"b_{name}") for name in columns}),
                [
                    {"b_id": sub.id} | {f"b_{name}": sub.row[name] for name in columns}
                    for sub in dirty
                ],
            )
            for sub in dirty:
                sub.dirty = False
        new_phases = [
            {
                "subscription_id": sub.id,
                "plan_id": p.plan_id,
                "starts_at": p.starts_at,
                "ends_at": p.ends_at,
            }
            for sub in self.subs
            for p in sub.phases
            if p.id is None
        ]
        ended = [
            {"b_id": p.id, "b_ends_at": p.ends_at}
            for sub in self.subs
            for p in sub.phases
            if p.id is not None and p.dirty
        ]
        if new_phases:
            conn.execute(subscription_phases.insert(), new_phases)
        if ended:
            conn.execute(
                update(subscription_phases)
                .where(subscription_phases.c.id == bindparam("b_id"))
                .values(ends_at=bindparam("b_ends_at")),
                ended,
            )


def _invoice_values(inv: Invoice) -> dict[str, Any]:
    return {
        "id": inv.id,
        "billing_key": inv.billing_key,
        "number": inv.number,
        "user_id": inv.user_id,
        "subscription_id": inv.subscription_id,
        "provider_id": inv.provider_id,
        "currency": inv.cur.code,
        "billing_mode": inv.billing_mode,
        "period_start": inv.period_start,
        "period_end": inv.period_end,
        "status": inv.status,
        "subtotal": inv.subtotal,
        "tax": inv.tax,
        "total": inv.total,
        "amount_paid": inv.amount_paid,
        "amount_credited": inv.amount_credited,
        "tax_rate": format_decimal(inv.tax_rate),
        "commission_rate": format_decimal(inv.commission_rate),
        "due_at": inv.due_at,
        "created_at": inv.created_at,
        "finalized_at": inv.finalized_at,
        "paid_at": inv.paid_at,
        "voided_at": inv.voided_at,
    }


def _line_values(invoice_id: str, line: Line, now: datetime) -> dict[str, Any]:
    return {
        "invoice_id": invoice_id,
        "kind": line.kind,
        "description": line.description[:500],
        "metric": line.metric,
        "quantity": line.quantity,
        "amount": line.amount,
        "tax": line.tax,
        "provider_id": None,
        "period_start": line.period_start,
        "period_end": line.period_end,
        "prepaid": line.prepaid,
        "settled": int(line.settled),
        "transfer_id": line.transfer_id,
        "created_at": now,
    }


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
                break
            if sub.pending_plan_id:
                sub.phases[-1].ends_at, sub.phases[-1].dirty = end, True
                sub.phases.append(Phase(sub.pending_plan_id, end, None))
                sub.set(plan_id=sub.pending_plan_id, pending_plan_id=None)
            start, next_end = sub.next_period(end)
            batch.open_period(sub, start, next_end)
            del invoice


def run_chunk(
    ctx: Context, as_of: datetime, *, after: str | None = None
) -> tuple[int, str | None, dict[str, int]]:
    """One transaction of the bill run: up to CHUNK due subscriptions, by id."""
    now = ctx.clock.now()
    with ctx.work() as work:
        query = (
            select(subscriptions)
            .where(subscriptions.c.status.in_(LIVE), subscriptions.c.current_period_end <= as_of)
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
    """Postpaid invoices are paid from the wallet when it holds enough (auto-pay)."""
    for invoice in invoices_:
        if (
            invoice.billing_mode == "postpaid"
            and invoice.status == "finalized"
            and invoice.amount_due > 0
            and batch.pay_from_wallet(invoice, people[invoice.user_id])
        ):
            batch.counts["invoices_paid"] += 1


def _open_invoices(
    work: Work, sub_ids: Sequence[str], known: dict[str, Invoice]
) -> dict[str, list[Invoice]]:
    """Each subscription's invoices that may still be owed (draft or finalized)."""
    found: dict[str, list[Invoice]] = defaultdict(list)
    if not sub_ids:
        return found
    for inv in load_invoices(
        work,
        and_(
            invoices.c.subscription_id.in_(list(sub_ids)),
            invoices.c.status.in_(("draft", "finalized")),
        ),
    ):
        # An invoice this unit of work changed is used as it is in memory.
        found[inv.subscription_id or ""].append(known.get(inv.id, inv))
    stored = {inv.id for invoices_ in found.values() for inv in invoices_}
    for inv in known.values():
        if inv.id not in stored and inv.status in ("draft", "finalized"):
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
            .where(invoices.c.status == "finalized", invoices.c.due_at <= as_of)
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
                    and_(
                        subscriptions.c.status.in_(("past_due", "suspended")),
                        or_(
                            subscriptions.c.next_retry_at <= as_of,
                            subscriptions.c.past_due_since
                            <= as_of - timedelta(days=ctx.settings.dunning_grace_days),
                        ),
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
                    subscriptions.c.status.in_(LIVE), subscriptions.c.current_period_end <= as_of
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
    return dict(totals)


def collect_for_user(work: Work, user_id: str) -> dict[str, int]:
    """After a top-up: pays what the user's subscriptions owe, and restores them."""
    now = work.clock.now()
    rows = list(
        work.conn.execute(
            select(subscriptions)
            .where(subscriptions.c.user_id == user_id, subscriptions.c.status.in_(LIVE))
            .order_by(subscriptions.c.id)
            .with_for_update()
        )
    )
    if not rows:
        return {}
    batch = _collect(work, now, rows)
    return dict(batch.counts)
