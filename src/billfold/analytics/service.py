"""Usage and revenue analytics, kept current as usage is charged.

Two rollups answer every series:

- usage: metering appends what each ingest transaction charged to `usage_deltas`;
  `fold` moves the journal into `usage_rollup` (per provider, service and metric) and
  `usage_rollup_users` (per user and metric), per UTC quarter-hour;
- revenue: `fold` reads the ledger past its mark in each journal chain
  (`analytics_state` rows `revenue_chain.<n>`) and adds each transfer's provider and
  platform postings to `revenue_rollup`.

A query reads the rollup rows in its range and adds what `fold` has not reached yet (the
journal rows still there, the transfers past the mark), so answers are always exact and
current, however far behind the folder is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Table, and_, bindparam, delete, select, tuple_, update
from sqlalchemy.sql.elements import ColumnElement

from billfold import ledger
from billfold.catalog import plan_in_force
from billfold.core.access import Principal, Role, require_role
from billfold.core.context import Context, Work
from billfold.domain.analytics import bucket_of, check_range, window_start, windows, zone
from billfold.domain.errors import InvalidRequest
from billfold.domain.ledger import TransferKind
from billfold.domain.money import currency, format_decimal, from_units, round_to_minor
from billfold.store.bulk import insert_rows, upsert
from billfold.store.db import UnitOfWork
from billfold.store.tables import (
    analytics_state,
    metrics,
    revenue_rollup,
    services,
    subscriptions,
    usage_deltas,
    usage_rollup,
    usage_rollup_users,
)

FOLD_BATCH: Final = 20_000
REVENUE_MARK: Final = "revenue_seq"
"""The folder's lock (one folder at a time). Its value was the mark before the journal
had chains; the marks are now per chain, CHAIN_MARK."""
CHAIN_MARK: Final = "revenue_chain."
USAGE_GROUPS: Final = ("user", "provider", "service", "metric")
REVENUE_GROUPS: Final = ("provider", "service")
# Transfers that move a provider's earnings without being revenue.
# Payouts, and the funding and expiry of promotions (statements show those apart).
NOT_REVENUE: Final = (TransferKind.PAYOUT, TransferKind.GRANT, TransferKind.EXPIRY)


# --- folding --------------------------------------------------------------------------


def _mark(uow: UnitOfWork, name: str, *, lock: bool = False) -> int:
    query = select(analytics_state.c.value).where(analytics_state.c.name == name)
    if lock:
        query = query.with_for_update()
    value = uow.conn.execute(query).scalar_one_or_none()
    if value is None:
        insert_rows(uow.conn, analytics_state, ("name", "value"), [(name, 0)])
        if lock and uow.dialect == "postgresql":
            uow.conn.execute(query)  # Lock the row just made.
        return 0
    return int(value)


def chain_marks(uow: UnitOfWork) -> dict[int, int]:
    """How far the folder has read each journal chain (a chain not named: not at all)."""
    rows = uow.conn.execute(
        select(analytics_state.c.name, analytics_state.c.value).where(
            analytics_state.c.name.startswith(CHAIN_MARK)
        )
    )
    return {int(row.name[len(CHAIN_MARK) :]): int(row.value) for row in rows}


def _set_marks(uow: UnitOfWork, marks: Mapping[int, int]) -> None:
    if marks:
        upsert(
            uow.conn,
            analytics_state,
            ("name",),
            [{"name": f"{CHAIN_MARK}{c}", "value": s} for c, s in sorted(marks.items())],
        )


def mark_folded(uow: UnitOfWork) -> None:
    """Marks every transfer so far as folded (for a benchmark that loads rollups itself)."""
    _set_marks(uow, ledger.chain_heads(uow))


def fold(ctx: Context, *, batch: int = FOLD_BATCH) -> dict[str, int]:
    """Moves the usage journal and new ledger transfers into the rollups, until caught up.

    One folder at a time (the lock on the revenue mark); each batch is one transaction
    that adds to the rollups and removes (or passes) exactly what it added.
    """
    totals = {"usage_deltas": 0, "transfers": 0}
    while True:
        with ctx.db.unit_of_work() as uow:
            _mark(uow, REVENUE_MARK, lock=True)
            marks = chain_marks(uow)
            used = _fold_usage(uow, batch)
            seen, reached = _fold_revenue(uow, marks, batch)
            _set_marks(uow, {c: s for c, s in reached.items() if s > marks.get(c, 0)})
            uow.commit()
        totals["usage_deltas"] += used
        totals["transfers"] += seen
        if used < batch and seen < batch:
            return totals


def _fold_usage(uow: UnitOfWork, batch: int) -> int:
    conn = uow.conn
    rows = list(conn.execute(select(usage_deltas).order_by(usage_deltas.c.seq).limit(batch)))
    if not rows:
        return 0

    def zero() -> dict[str, Any]:
        return {"quantity": Decimal(0), "events": 0, "amount": 0}

    by_provider: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(zero)
    by_user: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(zero)
    extra: dict[tuple[Any, ...], tuple[str, str, str]] = {}
    for row in rows:
        for target, key in (
            (
                by_provider,
                (row.provider_id, row.bucket, row.service_id, row.metric_id, row.currency),
            ),
            (by_user, (row.user_id, row.bucket, row.metric_id)),
        ):
            acc = target[key]
            acc["quantity"] += Decimal(row.quantity)
            acc["events"] += int(row.events)
            acc["amount"] += int(row.amount)
        extra[(row.user_id, row.bucket, row.metric_id)] = (
            row.provider_id,
            row.service_id,
            row.currency,
        )
    _upsert(
        uow,
        usage_rollup,
        ("provider_id", "bucket", "service_id", "metric_id", "currency"),
        by_provider,
        {},
    )
    _upsert(
        uow,
        usage_rollup_users,
        ("user_id", "bucket", "metric_id"),
        by_user,
        {
            key: dict(zip(("provider_id", "service_id", "currency"), v, strict=True))
            for key, v in extra.items()
        },
    )
    seqs = [row.seq for row in rows]
    for offset in range(0, len(seqs), 1000):
        conn.execute(
            delete(usage_deltas).where(usage_deltas.c.seq.in_(seqs[offset : offset + 1000]))
        )
    return len(rows)


def _upsert(
    uow: UnitOfWork,
    table: Table,
    key_columns: Sequence[str],
    sums: Mapping[tuple[Any, ...], Mapping[str, Any]],
    extra: Mapping[tuple[Any, ...], dict[str, Any]],
) -> None:
    """Adds `sums` (value column -> amount to add) to the rollup rows with these keys,
    creating the rows that do not exist yet (with their `extra` columns). A `quantity` is
    decimal text, added exactly; the other values are integers."""
    conn = uow.conn
    keys = list(sums)
    columns = [table.c[name] for name in key_columns]
    existing: dict[tuple[Any, ...], Any] = {}
    for offset in range(0, len(keys), 300):
        chunk = keys[offset : offset + 300]
        for row in conn.execute(select(table).where(tuple_(*columns).in_(chunk))):
            existing[tuple(row._mapping[name] for name in key_columns)] = row._mapping
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for key, adds in sums.items():
        found = existing.get(key)
        if found is None:
            values = dict(zip(key_columns, key, strict=True))
            values.update(extra.get(key, {}))
            values.update(_text_quantity(adds))
            inserts.append(values)
        else:
            updates.append(
                {
                    **{f"k_{name}": found[name] for name in key_columns},
                    **{f"v_{name}": _add(name, found[name], value) for name, value in adds.items()},
                }
            )
    if inserts:
        conn.execute(table.insert(), inserts)
    if updates:
        conn.execute(
            update(table)
            .where(and_(*(table.c[name] == bindparam(f"k_{name}") for name in key_columns)))
            .values(**{name: bindparam(f"v_{name}") for name in next(iter(sums.values()))}),
            updates,
        )


def _text_quantity(adds: Mapping[str, Any]) -> dict[str, Any]:
    return {k: format_decimal(v) if k == "quantity" else v for k, v in adds.items()}


def _add(name: str, stored: Any, value: Any) -> Any:
    if name == "quantity":
        return format_decimal(Decimal(stored) + value)
    return int(stored) + value


@dataclass
class _Revenue:
    gross: int = 0
    refunds: int = 0
    commission: int = 0
    transfers: int = 0

    def add(self, other: _Revenue) -> None:
        self.gross += other.gross
        self.refunds += other.refunds
        self.commission += other.commission
        self.transfers += other.transfers

    @property
    def net(self) -> int:
        return self.gross - self.refunds - self.commission


def revenue_of_transfers(
    uow: UnitOfWork, which: ledger.TransferFilter, limit: int | None = None
) -> tuple[dict[tuple[str, datetime, str, str], _Revenue], int, dict[int, int]]:
    """Revenue per (provider, bucket, service, currency) of the selected transfers (never
    payouts: they move earnings out, they are not revenue).

    A transfer's provider share is its postings on provider earnings accounts and the
    platform's commission its postings on platform revenue; a transfer that adds to them
    is gross income, one that takes away (refund, reversal, credit note) a refund.
    Returns the sums, how many transfers were read and each chain's last place read.
    """
    which = replace(which, exclude_kinds=NOT_REVENUE)
    found, count, reached = ledger.earnings(uow, which, limit=limit)
    sums: dict[tuple[str, datetime, str, str], _Revenue] = defaultdict(_Revenue)
    for e in found:
        total = e.provider_share + e.commission
        item = _Revenue(
            gross=max(total, 0), refunds=max(-total, 0), commission=e.commission, transfers=1
        )
        key = (e.provider_id or "", bucket_of(e.posted_at), e.service or "", e.currency)
        sums[key].add(item)
    return sums, count, reached


def _fold_revenue(
    uow: UnitOfWork, marks: Mapping[int, int], batch: int
) -> tuple[int, dict[int, int]]:
    # Within a chain, transfers are numbered under its head's lock and committed in that
    # order, so none can appear later below a place already read; chains commit in any
    # order among themselves, hence a mark per chain.
    which = ledger.TransferFilter(after_chains=tuple(sorted(marks.items())))
    sums, count, reached = revenue_of_transfers(uow, which, batch)
    if not count:
        return 0, {}
    _upsert(
        uow,
        revenue_rollup,
        ("provider_id", "bucket", "service", "currency"),
        {
            key: {
                "gross": item.gross,
                "refunds": item.refunds,
                "commission": item.commission,
                "transfers": item.transfers,
            }
            for key, item in sums.items()
        },
        {},
    )
    return count, reached


# --- series ---------------------------------------------------------------------------


@dataclass
class Point:
    start: datetime
    quantity: Decimal = Decimal(0)
    events: int = 0
    amount: int = 0
    revenue: _Revenue = field(default_factory=_Revenue)


@dataclass
class Series:
    group: dict[str, str]
    currency: str
    points: list[Point]


@dataclass(frozen=True)
class Query:
    start: datetime
    end: datetime
    window: str = "day"
    tz: str | None = None
    group_by: tuple[str, ...] = ()
    user: str | None = None
    provider: str | None = None
    service: str | None = None
    metric: str | None = None


def parse_group_by(text: str | None, allowed: Sequence[str]) -> tuple[str, ...]:
    if not text:
        return ()
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    wrong = [n for n in names if n not in allowed]
    if wrong:
        raise InvalidRequest(
            f"cannot group by {', '.join(wrong)}; use {', '.join(allowed)}", param="group_by"
        )
    return names


class _Names:
    """Service and metric codes by id (and back), for groups and filters."""

    def __init__(self, work: Work) -> None:
        self.services = {r.id: (r.code, r.provider_id) for r in work.conn.execute(select(services))}
        self.metrics = {
            r.id: (r.code, r.service_id)
            for r in work.conn.execute(select(metrics.c.id, metrics.c.code, metrics.c.service_id))
        }

    def service_ids(self, code: str, provider: str | None) -> list[str]:
        found = [
            sid
            for sid, (c, p) in self.services.items()
            if c == code and (provider is None or p == provider)
        ]
        if not found:
            raise InvalidRequest(f"no service {code}", code="service_not_found", param="service")
        return found

    def metric_ids(self, code: str, service_ids: Sequence[str] | None) -> list[str]:
        return [
            mid
            for mid, (c, s) in self.metrics.items()
            if c == code and (service_ids is None or s in service_ids)
        ]


def _scope(principal: Principal, q: Query) -> Query:
    """What the asker may see: a provider its own, a user itself, an admin everything."""
    if principal.role == Role.PROVIDER:
        if q.provider not in (None, principal.provider_id):
            raise InvalidRequest(
                "a provider key sees only its own provider", code="other_provider", param="provider"
            )
        return replace(q, provider=principal.provider_id)
    if principal.role == Role.USER:
        if q.user not in (None, principal.user_id):
            raise InvalidRequest(
                "a user key sees only its own usage", code="other_user", param="user"
            )
        return replace(q, user=principal.user_id)
    return q


def usage_series(work: Work, principal: Principal, q: Query) -> list[Series]:
    """Usage (quantity, events) and its charges per window, per group."""
    check_range(q.start, q.end)
    tz = zone(q.tz)
    q = _scope(principal, q)
    per_user = q.user is not None or "user" in q.group_by
    table = usage_rollup_users if per_user else usage_rollup
    names = _Names(work)
    conditions_for = _usage_filters(names, q)
    conn = work.conn
    start, end = q.start, q.end
    rollup_rows = conn.execute(
        select(*_usage_columns(table)).where(
            table.c.bucket >= start, table.c.bucket < end, *conditions_for(table)
        )
    ).all()
    pending = conn.execute(
        select(*_usage_columns(usage_deltas)).where(
            usage_deltas.c.bucket >= start,
            usage_deltas.c.bucket < end,
            *conditions_for(usage_deltas),
        )
    ).all()
    return _series(
        q,
        tz,
        (*rollup_rows, *pending),
        lambda row: _usage_group(row, q.group_by, names),
        _add_usage,
    )


def _usage_columns(table: Table) -> list[Any]:
    columns = [table.c.bucket, table.c.metric_id, table.c.currency, table.c.quantity]
    columns += [table.c.events, table.c.amount]
    columns += [table.c.provider_id, table.c.service_id]
    if "user_id" in table.c:
        columns.append(table.c.user_id)
    return columns


def _usage_filters(names: _Names, q: Query) -> Any:
    service_ids = names.service_ids(q.service, q.provider) if q.service else None
    metric_ids = names.metric_ids(q.metric, service_ids) if q.metric else None
    if q.metric and not metric_ids:
        raise InvalidRequest(f"no metric {q.metric}", code="metric_not_found", param="metric")

    def conditions(table: Table) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if q.provider is not None:
            found.append(table.c.provider_id == q.provider)
        if q.user is not None:
            found.append(table.c.user_id == q.user)
        if service_ids is not None:
            found.append(table.c.service_id.in_(service_ids))
        if metric_ids is not None:
            found.append(table.c.metric_id.in_(metric_ids))
        return found

    return conditions


def _usage_group(row: Any, group_by: Sequence[str], names: _Names) -> tuple[tuple[str, str], ...]:
    values = {
        "user": getattr(row, "user_id", ""),
        "provider": row.provider_id,
        "service": names.services.get(row.service_id, (row.service_id, ""))[0],
        "metric": names.metrics.get(row.metric_id, (row.metric_id, ""))[0],
    }
    return tuple((name, values[name]) for name in group_by)


def _add_usage(point: Point, row: Any) -> None:
    point.quantity += Decimal(row.quantity)
    point.events += int(row.events)
    point.amount += int(row.amount)


def _series(
    q: Query,
    tz: Any,
    rows: Iterable[Any],
    group_of: Any,
    add: Any,
) -> list[Series]:
    starts = list(windows(q.start, q.end, q.window, tz))
    index = {s: i for i, s in enumerate(starts)}
    window_of: dict[datetime, int] = {}
    found: dict[tuple[Any, ...], Series] = {}
    for row in rows:
        bucket = row.bucket if row.bucket.tzinfo else row.bucket.replace(tzinfo=UTC)
        slot = window_of.get(bucket)
        if slot is None:
            slot = window_of[bucket] = index[window_start(bucket, q.window, tz)]
        group = group_of(row)
        key = (group, row.currency)
        series = found.get(key)
        if series is None:
            series = found[key] = Series(dict(group), row.currency, [Point(s) for s in starts])
        add(series.points[slot], row)
    return [found[key] for key in sorted(found)]


def revenue_series(work: Work, principal: Principal, q: Query) -> list[Series]:
    """Gross income, commission, refunds and net per window, per group."""
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    check_range(q.start, q.end)
    tz = zone(q.tz)
    q = _scope(principal, q)
    conn = work.conn
    start, end = q.start, q.end
    conditions = [revenue_rollup.c.bucket >= start, revenue_rollup.c.bucket < end]
    if q.provider is not None:
        conditions.append(revenue_rollup.c.provider_id == q.provider)
    if q.service is not None:
        conditions.append(revenue_rollup.c.service == q.service)
    rows: list[Any] = list(conn.execute(select(revenue_rollup).where(*conditions)))
    rows.extend(pending_revenue(work, q.start, q.end, q.provider, q.service))
    return _series(
        q,
        tz,
        rows,
        lambda row: tuple(
            (name, row.provider_id if name == "provider" else row.service) for name in q.group_by
        ),
        _add_revenue,
    )


@dataclass
class _RevenueRow:
    provider_id: str
    bucket: datetime
    service: str
    currency: str
    gross: int
    refunds: int
    commission: int
    transfers: int


def pending_revenue(
    work: Work,
    start: datetime,
    end: datetime,
    provider: str | None = None,
    service: str | None = None,
) -> list[_RevenueRow]:
    """Revenue of the transfers posted in [start, end) that the folder has not reached."""
    which = ledger.TransferFilter(
        after_chains=tuple(sorted(chain_marks(work).items())),
        posted_from=start,
        posted_to=end,
        provider_id=provider,
        service=service,
    )
    sums, _, _ = revenue_of_transfers(work, which)
    return [
        _RevenueRow(key[0], key[1], key[2], key[3], s.gross, s.refunds, s.commission, s.transfers)
        for key, s in sums.items()
    ]


def _add_revenue(point: Point, row: Any) -> None:
    point.revenue.add(_Revenue(row.gross, row.refunds, row.commission, row.transfers))


# --- subscriptions and top lists ------------------------------------------------------

MONTHS_PER: Final = {"day": Decimal(12) / Decimal(365), "week": Decimal(12) / Decimal(52)}
MONTHS_PER.update({"month": Decimal(1), "quarter": Decimal(3), "year": Decimal(12)})


@dataclass
class SubscriptionMetrics:
    currency: str
    active: int
    trialing: int
    mrr: Decimal
    churned: int
    active_at_start: int
    paying_users: int
    revenue: int

    @property
    def arr(self) -> Decimal:
        return self.mrr * 12

    @property
    def churn_rate(self) -> Decimal | None:
        if not self.active_at_start:
            return None
        return (Decimal(self.churned) / self.active_at_start).quantize(Decimal("0.0001"))

    @property
    def arpu(self) -> Decimal:
        """Gross revenue per paying user, rounded half-up to the currency's minor unit."""
        cur = currency(self.currency)
        if not self.paying_users:
            return round_to_minor(Decimal(0), cur)
        return round_to_minor(from_units(self.revenue, cur) / self.paying_users, cur)


def subscription_metrics(
    work: Work, principal: Principal, start: datetime, end: datetime
) -> list[SubscriptionMetrics]:
    """MRR and ARR of the subscriptions live at `end`, churn over [start, end), and ARPU
    (gross revenue over the users who paid anything in the range), per currency."""

    require_role(principal, Role.ADMIN, Role.PROVIDER)
    if end <= start:
        raise InvalidRequest("to must be after from", param="to")
    provider = principal.provider_id if principal.role == Role.PROVIDER else None
    found: dict[str, SubscriptionMetrics] = {}

    def of(code: str) -> SubscriptionMetrics:
        return found.setdefault(code, SubscriptionMetrics(code, 0, 0, Decimal(0), 0, 0, 0, 0))

    # Pay-as-you-go subscriptions are consent, not recurring revenue: MRR, churn and
    # ARPU count only plans with an interval.
    query = select(subscriptions).where(
        subscriptions.c.started_at < end, subscriptions.c.interval != "none"
    )
    if provider:
        query = query.where(subscriptions.c.provider_id == provider)
    plans_seen: dict[str, Any] = {}
    for sub in work.conn.execute(query):
        m = of(sub.currency)
        ended = sub.ended_at
        if sub.started_at < start and (ended is None or ended >= start):
            m.active_at_start += 1
            if ended is not None and ended < end:
                m.churned += 1
        if ended is not None and ended <= end:
            continue
        if sub.trial_end is not None and sub.trial_end > end:
            m.trialing += 1
            continue
        m.active += 1
        plan = plans_seen.get(sub.plan_id)
        if plan is None:
            plan = plans_seen[sub.plan_id] = plan_in_force(work, sub.plan_id, end)
        per = MONTHS_PER[sub.interval] * int(sub.interval_count)
        m.mrr += plan.fixed_fee / per
    revenue = _rollup_gross(work, start, end, provider)
    for code, (units, payers) in revenue.items():
        m = of(code)
        m.revenue, m.paying_users = units, payers
    for m in found.values():
        # Rounded once, half-up to the currency's minor unit (JPY has none, KWD three).
        m.mrr = round_to_minor(m.mrr, currency(m.currency))
    return [found[c] for c in sorted(found)]


def _rollup_gross(
    work: Work, start: datetime, end: datetime, provider: str | None
) -> dict[str, tuple[int, int]]:
    """Gross charged per currency, and how many distinct users paid it, from the ledger."""
    which = ledger.TransferFilter(
        posted_from=start, posted_to=end, exclude_kinds=NOT_REVENUE, provider_id=provider
    )
    totals: dict[str, int] = defaultdict(int)
    payers: dict[str, set[str]] = defaultdict(set)
    for code, user_id, units in ledger.sum_postings(
        work, which, account_kinds=ledger.EARNING_KINDS, group_by=("currency", "user_id")
    ):
        totals[code] += units
        if user_id and units > 0:
            payers[code].add(user_id)
    return {code: (units, len(payers[code])) for code, units in totals.items()}


def top(
    work: Work, principal: Principal, q: Query, by: str, limit: int = 10
) -> list[tuple[str, str, int, Decimal]]:
    """The users or services that were charged most for usage in the range:
    (name, currency, amount in ledger units, quantity), largest first."""
    if by not in ("user", "service"):
        raise InvalidRequest("by is user or service", param="by")
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit is from 1 to 1000", param="limit")
    require_role(principal, Role.ADMIN, Role.PROVIDER)
    series = usage_series(work, principal, replace(q, window="month", tz=None, group_by=(by,)))
    ranked = [
        (
            s.group[by],
            s.currency,
            sum(p.amount for p in s.points),
            sum((p.quantity for p in s.points), Decimal(0)),
        )
        for s in series
    ]
    ranked.sort(key=lambda item: (-item[2], item[0]))
    return ranked[:limit]
