"""The bill run's in-memory model: invoices and their lines, subscriptions and their
phases, the catalog of plans a run prices with, loaded in bulk.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import select

from billfold.catalog import PlanVersions, load_versions
from billfold.core.context import Work
from billfold.domain.billing import Schedule
from billfold.domain.ledger import (
    commission_in_force,
)
from billfold.domain.money import Currency, currency, round_to_minor, to_units
from billfold.domain.pricing import Plan
from billfold.store.tables import (
    invoice_lines,
    invoices,
    metrics,
    plans,
    providers,
    subscription_phases,
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
    return to_units(round_to_minor(exact, cur), cur)


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
                users.c.autopay_invoices,
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
