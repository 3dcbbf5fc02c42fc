"""Resource packages (资源包): defined by providers, bought from the wallet, drawn on by
usage before the plan prices it.

The sale is a charge like any other (split between the provider and the platform, paid
from vouchers in scope, credit, then cash). What a holding has used lives in
`package_usage`, one row per holding, metric and reset cycle, locked while usage draws on
it, so concurrent batches never draw more than a cycle holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select, tuple_, update

from billfold import ledger
from billfold.catalog import is_customer, load_service
from billfold.core import audit
from billfold.core.access import Principal, Role, acting_provider, require_user_access
from billfold.core.context import Work
from billfold.core.directory import (
    BillingMode,
    UserView,
    arrears_terms,
    debt_stage,
    load_provider,
    load_user,
    overdue_since,
)
from billfold.core.text import Page, check_limit, required_text
from billfold.domain.arrears import GRACE
from billfold.domain.errors import Conflict, InvalidRequest, NotFound
from billfold.domain.ledger import TransferKind, charge_transfer, commission_in_force
from billfold.domain.money import (
    Currency,
    currency,
    format_decimal,
    from_units,
    parse_amount,
    to_units,
)
from billfold.domain.prepaid import (
    Lot,
    cycle_end,
    cycle_start,
    draw,
    parse_reset,
    parse_validity,
)
from billfold.ids import new_id
from billfold.prepaid import promotions
from billfold.store.bulk import db_datetime, insert_new_returning
from billfold.store.prepared import Prepared
from billfold.store.tables import metrics, package_holdings, package_usage, packages, services

CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PACKAGE_AGGREGATIONS = ("count", "sum")
MAX_METRICS = 20


@dataclass(frozen=True, slots=True)
class PackageView:
    id: str
    code: str
    name: str
    provider_id: str
    service: str
    currency: Currency
    price: Decimal
    quantities: dict[str, Decimal]
    validity_days: int
    reset: str
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class HoldingView:
    id: str
    user_id: str
    package_id: str
    package_code: str
    name: str
    provider_id: str
    service: str
    currency: Currency
    price: Decimal
    reset: str
    starts_at: datetime
    expires_at: datetime
    status: str
    transfer_id: str
    quantities: dict[str, Decimal]
    used: dict[str, Decimal]
    """Used in the current cycle (the whole validity when the package does not reset)."""
    cycle_start: datetime
    cycle_end: datetime

    @property
    def remaining(self) -> dict[str, Decimal]:
        return {
            m: max(q - self.used.get(m, Decimal(0)), Decimal(0)) for m, q in self.quantities.items()
        }


# --- defining packages ---------------------------------------------------------------


def create_package(
    work: Work,
    principal: Principal,
    *,
    code: object,
    name: object,
    service: str,
    currency_code: object,
    price: object,
    quantities: object,
    validity_days: object,
    reset: object = "none",
    provider_id: str | None = None,
) -> PackageView:
    """A provider's resource package of its own service's metrics (admin: any service)."""
    acting_provider(principal, provider_id)
    code_text = required_text(code, param="code", max_length=64)
    if not CODE.match(code_text):
        raise InvalidRequest(
            "code may use letters, digits, '_', '.' and '-' (up to 64)", param="code"
        )
    name_text = required_text(name, param="name", max_length=200)
    svc = load_service(work, principal, service, write=True)
    cur = currency(currency_code)
    amount = parse_amount(price, param="price")
    units = to_units(amount, cur, param="price")
    days = parse_validity(validity_days)
    cycle = parse_reset(reset)
    by_metric = _quantities(work, svc.id, quantities)
    now = work.clock.now()
    taken = work.conn.execute(
        select(packages.c.id).where(
            packages.c.provider_id == svc.provider_id, packages.c.code == code_text
        )
    ).first()
    if taken is not None:
        raise Conflict(f"a package {code_text} exists already", code="package_exists", param="code")
    package_id = new_id("pkg")
    work.conn.execute(
        packages.insert().values(
            id=package_id,
            provider_id=svc.provider_id,
            service_id=svc.id,
            code=code_text,
            name=name_text,
            currency=cur.code,
            price=units,
            quantities=json.dumps({m: format_decimal(q) for m, (_c, q) in by_metric.items()}),
            validity_days=days,
            reset=cycle,
            status="active",
            created_at=now,
        )
    )
    audit.record(
        work, principal, "package.created", "package", package_id, at=now,
        details={"service": service, "price": format_decimal(amount), "currency": cur.code},
    )  # fmt: skip
    return get_package(work, package_id)


def _quantities(work: Work, service_id: str, value: object) -> dict[str, tuple[str, Decimal]]:
    """{metric id: (metric code, quantity)} of a package's `quantities` {code: quantity}."""
    if not isinstance(value, dict) or not value:
        raise InvalidRequest(
            'quantities must name at least one metric, e.g. {"api_calls": "10000"}',
            param="quantities",
        )
    if len(value) > MAX_METRICS:
        raise InvalidRequest(f"a package holds at most {MAX_METRICS} metrics", param="quantities")
    rows = {
        row.code: row
        for row in work.conn.execute(
            select(metrics.c.id, metrics.c.code, metrics.c.aggregation).where(
                metrics.c.service_id == service_id
            )
        )
    }
    result: dict[str, tuple[str, Decimal]] = {}
    for code, raw in value.items():
        row = rows.get(code)
        if row is None:
            raise InvalidRequest(
                f"the service has no metric {code}",
                code="metric_not_found",
                param=f"quantities.{code}",
            )
        if row.aggregation not in PACKAGE_AGGREGATIONS:
            raise InvalidRequest(
                f"a package can hold only counted or summed metrics ({code} is {row.aggregation})",
                param=f"quantities.{code}",
            )
        result[row.id] = (code, parse_amount(raw, param=f"quantities.{code}", allow_zero=False))
    return result


def _package_view(work: Work, row: Any) -> PackageView:
    codes = _metric_codes(work, json.loads(row.quantities))
    service_code = work.conn.execute(
        select(services.c.code).where(services.c.id == row.service_id)
    ).scalar_one()
    cur = currency(row.currency)
    return PackageView(
        id=row.id,
        code=row.code,
        name=row.name,
        provider_id=row.provider_id,
        service=service_code,
        currency=cur,
        price=from_units(row.price, cur),
        quantities={codes[m]: Decimal(q) for m, q in json.loads(row.quantities).items()},
        validity_days=row.validity_days,
        reset=row.reset,
        status=row.status,
        created_at=row.created_at,
    )


def _metric_codes(work: Work, ids: Iterable[str]) -> dict[str, str]:
    wanted = list(ids)
    return {
        row.id: row.code
        for row in work.conn.execute(
            select(metrics.c.id, metrics.c.code).where(metrics.c.id.in_(wanted))
        )
    }


def get_package(work: Work, package_id: str, principal: Principal | None = None) -> PackageView:
    """The package; asked by a principal, only one it may see (active, or its own)."""
    row = work.conn.execute(select(packages).where(packages.c.id == package_id)).one_or_none()
    hidden = (
        principal is not None
        and row is not None
        and row.status != "active"
        and not principal.is_admin
        and row.provider_id != principal.provider_id
    )
    if row is None or hidden:
        raise NotFound(f"no package {package_id}", code="package_not_found", param="package")
    return _package_view(work, row)


def list_packages(
    work: Work,
    principal: Principal,
    *,
    service: str | None = None,
    limit: int = 100,
    starting_after: str | None = None,
) -> Page[PackageView]:
    """Packages on sale: everyone sees the active ones; a provider also its own retired."""
    query = select(packages).order_by(packages.c.id)
    if principal.role == Role.PROVIDER:
        query = query.where(packages.c.provider_id == principal.provider_id)
    elif not principal.is_admin:
        query = query.where(packages.c.status == "active")
    if service is not None:
        svc = load_service(work, principal, service)
        query = query.where(packages.c.service_id == svc.id)
    if starting_after:
        query = query.where(packages.c.id > starting_after)
    rows = work.conn.execute(query.limit(check_limit(limit) + 1)).all()
    return Page([_package_view(work, r) for r in rows[:limit]], len(rows) > limit)


def _find_package(work: Work, ref: str) -> Any:
    """A package by id, or by code when only one provider uses that code."""
    row = work.conn.execute(select(packages).where(packages.c.id == ref)).one_or_none()
    if row is None:
        found = work.conn.execute(select(packages).where(packages.c.code == ref)).all()
        row = found[0] if len(found) == 1 else None
    if row is None or row.status != "active":
        raise NotFound(f"no package {ref}", code="package_not_found", param="package")
    return row


# --- buying --------------------------------------------------------------------------


def buy_package(
    work: Work,
    principal: Principal,
    user_ref: str,
    package_ref: str,
    *,
    transfer_id: str | None = None,
) -> HoldingView:
    """The user buys a package: one charge (a discount coupon in scope takes its part off,
    vouchers and credit pay before cash), and a holding valid from now."""
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    row = _find_package(work, package_ref)
    cur = user.currency
    if row.currency != cur.code:
        raise InvalidRequest(
            f"the package is sold in {row.currency}; this account pays in {cur.code}",
            code="currency_mismatch",
            param="package",
        )
    # A prepaid user's debt is what the wallet could not cover; a postpaid user's is what
    # open invoices ask for past their due date (unbilled usage is owed, not due).
    if user.billing_mode == BillingMode.POSTPAID:
        owed = overdue_since(work, user.id)[0]
    else:
        owed = ledger.user_standing(work, user.id, cur.code, 0).owed
    stage = debt_stage(work, user.id, owed, arrears_terms(work)) if owed > 0 else None
    if user.status != "active" or stage not in (None, GRACE):
        raise InvalidRequest(
            "the account is suspended: settle what it owes first", code="account_suspended"
        )
    service_code = work.conn.execute(
        select(services.c.code).where(services.c.id == row.service_id)
    ).scalar_one()
    now = work.clock.now()
    if transfer_id is not None:
        # The same purchase again (a retried request, a form sent twice): the same holding.
        done = work.conn.execute(
            select(package_holdings.c.id).where(package_holdings.c.transfer_id == transfer_id)
        ).scalar_one_or_none()
        if done is not None:
            return _holdings(work, [done], now)[0]
    holding_id = new_id("hold")
    sale_id = transfer_id or new_id("tr")
    if row.price > 0:
        _charge_sale(work, user, row, service_code, sale_id, now)
    work.conn.execute(
        package_holdings.insert().values(
            id=holding_id,
            user_id=user.id,
            package_id=row.id,
            provider_id=row.provider_id,
            service_id=row.service_id,
            currency=row.currency,
            price=row.price,
            quantities=row.quantities,
            reset=row.reset,
            starts_at=now,
            expires_at=now + timedelta(days=row.validity_days),
            transfer_id=sale_id,
            status="active",
            created_at=now,
        )
    )
    audit.record(
        work, principal, "package.bought", "package_holding", holding_id, at=now,
        details={"user_id": user.id, "package_id": row.id, "transfer_id": sale_id},
    )  # fmt: skip
    return _holdings(work, [holding_id], now)[0]


def _charge_sale(
    work: Work, user: UserView, row: Any, service_code: str, sale_id: str, now: datetime
) -> None:
    cur = user.currency
    provider = load_provider(work, row.provider_id)
    discount = promotions.take_discount(
        work, user.id, cur.code, service_code, row.provider_id, row.price, sale_id, now=now
    )
    accounts = ledger.charge_accounts(
        work,
        user.id,
        cur.code,
        prepaid=user.billing_mode == BillingMode.PREPAID,
        provider_id=row.provider_id,
        now=now,
        sources=promotions.funding_sources(
            work, user.id, cur.code, service_code, row.provider_id, now=now
        ),
        credit_limit=to_units(user.credit_limit, cur),
    )
    spec = charge_transfer(
        accounts,
        transfer_id=sale_id,
        kind=TransferKind.CHARGE,
        currency=cur.code,
        amount=row.price,
        commission_rate=commission_in_force(None, provider.commission_rate),
        user_id=user.id,
        provider_id=row.provider_id,
        service=service_code,
        description=f"Resource package {row.code} ({row.name})",
        reference=f"package:{row.id}",
        discount=discount,
    )
    ledger.post(work, spec, now=now)


# --- what a user holds ---------------------------------------------------------------


def list_holdings(
    work: Work, principal: Principal, user_ref: str, *, include_ended: bool = False
) -> list[HoldingView]:
    """The user's packages, expiring first first; a provider sees only its own packages
    held by the user (and a user it does not serve looks unknown)."""
    user = load_user(work, user_ref)
    now = work.clock.now()
    query = select(package_holdings.c.id).where(package_holdings.c.user_id == user.id)
    if principal.role == Role.PROVIDER:
        query = query.where(package_holdings.c.provider_id == principal.provider_id)
    else:
        require_user_access(principal, user.id, asked=user_ref)
    if not include_ended:
        query = query.where(
            package_holdings.c.status == "active", package_holdings.c.expires_at > now
        )
    ids = list(work.conn.execute(query).scalars())
    if principal.role == Role.PROVIDER and not ids:
        assert principal.provider_id is not None
        if not is_customer(work, user.id, principal.provider_id):
            raise NotFound(f"no user {user_ref}", code="user_not_found", param="user")
    return sorted(_holdings(work, ids, now), key=lambda h: (h.expires_at, h.id))


def _holdings(work: Work, ids: Sequence[str], now: datetime) -> list[HoldingView]:
    if not ids:
        return []
    rows = work.conn.execute(
        select(
            package_holdings,
            packages.c.code.label("package_code"),
            packages.c.name.label("package_name"),
            services.c.code.label("service_code"),
        )
        .join(packages, packages.c.id == package_holdings.c.package_id)
        .join(services, services.c.id == package_holdings.c.service_id)
        .where(package_holdings.c.id.in_(list(ids)))
    ).all()
    metric_ids = {m for row in rows for m in json.loads(row.quantities)}
    codes = _metric_codes(work, metric_ids)
    cycles = {
        row.id: cycle_start(row.starts_at, row.reset, min(max(now, row.starts_at), row.expires_at))
        for row in rows
    }
    used: dict[tuple[str, str], Decimal] = {}
    if rows:
        for u in work.conn.execute(
            select(package_usage).where(package_usage.c.holding_id.in_([r.id for r in rows]))
        ):
            if u.cycle_start == cycles[u.holding_id]:
                used[(u.holding_id, u.metric_id)] = Decimal(u.used)
    views = []
    for row in rows:
        cur = currency(row.currency)
        start = cycles[row.id]
        held = {m: Decimal(q) for m, q in json.loads(row.quantities).items()}
        views.append(
            HoldingView(
                id=row.id,
                user_id=row.user_id,
                package_id=row.package_id,
                package_code=row.package_code,
                name=row.package_name,
                provider_id=row.provider_id,
                service=row.service_code,
                currency=cur,
                price=from_units(row.price, cur),
                reset=row.reset,
                starts_at=row.starts_at,
                expires_at=row.expires_at,
                # A refunded sale ends its holding at once: it says refunded, not expired.
                status="expired"
                if row.status == "active" and row.expires_at <= now
                else row.status,
                transfer_id=row.transfer_id,
                quantities={codes[m]: q for m, q in held.items()},
                used={codes[m]: used.get((row.id, m), Decimal(0)) for m in held},
                cycle_start=start,
                cycle_end=cycle_end(row.starts_at, row.reset, start, row.expires_at),
            )
        )
    return views


def end_holding_for_refund(work: Work, sale_transfer_id: str, *, now: datetime) -> str | None:
    """A refunded sale ends its holding at once (what it had left is no longer the
    user's); the holding's id, or None when the transfer sold no package."""
    row = work.conn.execute(
        select(package_holdings.c.id).where(
            package_holdings.c.transfer_id == sale_transfer_id,
            package_holdings.c.status == "active",
        )
    ).one_or_none()
    if row is None:
        return None
    work.conn.execute(
        update(package_holdings)
        .where(package_holdings.c.id == row.id)
        .values(status="refunded", expires_at=now)
    )
    return str(row.id)


# --- usage drawing on packages -------------------------------------------------------


@dataclass
class Draws:
    """The package cycles a batch of usage may draw on, locked, and what it drew."""

    lots: dict[tuple[str, str], list[tuple[Any, Decimal]]] = field(default_factory=dict)
    """(user id, metric id) -> [(holding row, its quantity of the metric)], expiring first
    first; the quantities are parsed once per batch, not once per event."""
    used: dict[tuple[str, str, datetime], Decimal] = field(default_factory=dict)
    changed: set[tuple[str, str, datetime]] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.lots)

    def take(self, user_id: str, metric_id: str, at: datetime, value: Decimal) -> Decimal:
        """What the user's packages cover of `value` of the metric used at `at`."""
        candidates = self.lots.get((user_id, metric_id))
        if not candidates or value <= 0:
            return Decimal(0)
        lots = []
        for holding, quantity in candidates:
            if not holding.starts_at <= at < holding.expires_at:
                continue
            start = cycle_start(holding.starts_at, holding.reset, at)
            key = (holding.id, metric_id, start)
            lots.append(Lot(holding.id, start, quantity - self.used.get(key, Decimal(0))))
        covered, taken = draw(lots, value)
        for lot, amount in taken:
            key = (lot.holding_id, metric_id, lot.cycle_start)
            self.used[key] = self.used.get(key, Decimal(0)) + amount
            self.changed.add(key)
        return covered

    def write(self, work: Work, now: datetime) -> None:
        if not self.changed:
            return
        work.conn.execute(
            update(package_usage)
            .where(
                package_usage.c.holding_id == bindparam("b_holding"),
                package_usage.c.metric_id == bindparam("b_metric"),
                package_usage.c.cycle_start == bindparam("b_start"),
            )
            .values(used=bindparam("b_used"), updated_at=bindparam("b_now")),
            [
                {
                    "b_holding": h,
                    "b_metric": m,
                    "b_start": s,
                    "b_used": format_decimal(self.used[(h, m, s)]),
                    "b_now": now,
                }
                for h, m, s in sorted(self.changed)
            ],
        )


_HELD = select(package_holdings).where(
    package_holdings.c.status == "active",
    package_holdings.c.starts_at <= bindparam("latest"),
    package_holdings.c.expires_at > bindparam("earliest"),
)
_HELD_BY = _HELD.where(package_holdings.c.user_id.in_(bindparam("user_ids", expanding=True)))
_HELD_BY_USER = Prepared(_HELD.where(package_holdings.c.user_id == bindparam("user_id")))
"""The packages that users hold at some moment of a span: built once, one user's prepared."""


def _held(work: Work, users: list[str], earliest: datetime, latest: datetime) -> list[Any]:
    span = {"latest": latest, "earliest": earliest}
    if len(users) == 1:  # A single event, a capture: prepared (docs/DECISIONS.md, 119).
        return _HELD_BY_USER.rows(work.conn, {**span, "user_id": users[0]})
    rows: list[Any] = []
    for offset in range(0, len(users), 500):
        rows += work.conn.execute(_HELD_BY, {**span, "user_ids": users[offset : offset + 500]})
    return rows


def load_draws(work: Work, moments: dict[tuple[str, str], list[datetime]], now: datetime) -> Draws:
    """The packages the users of a batch hold for its metrics at its events' moments, with
    the cycles those moments fall in created if missing and locked (in key order, after
    metering's usage rows and before the ledger's locks). One query when nobody holds one."""
    draws = Draws()
    if not moments:
        return draws
    users = sorted({u for u, _m in moments})
    earliest = min(t for ts in moments.values() for t in ts)
    latest = max(t for ts in moments.values() for t in ts)
    rows = _held(work, users, earliest, latest)
    if not rows:
        return draws
    cycles: set[tuple[str, str, datetime]] = set()
    for row in sorted(rows, key=lambda r: (r.expires_at, r.id)):
        for metric_id, quantity in json.loads(row.quantities).items():
            times = moments.get((row.user_id, metric_id))
            if not times:
                continue
            draws.lots.setdefault((row.user_id, metric_id), []).append((row, Decimal(quantity)))
            for t in times:
                if row.starts_at <= t < row.expires_at:
                    cycles.add((row.id, metric_id, cycle_start(row.starts_at, row.reset, t)))
    if not cycles:
        return Draws()
    keys = sorted(cycles)
    conn = work.conn
    stamp = db_datetime(conn, now)
    for offset in range(0, len(keys), 500):
        insert_new_returning(
            conn,
            package_usage,
            ("holding_id", "metric_id", "cycle_start", "used", "updated_at"),
            [(h, m, db_datetime(conn, s), "0", stamp) for h, m, s in keys[offset : offset + 500]],
            conflict=("holding_id", "metric_id", "cycle_start"),
            returning=("holding_id",),
        )
    for offset in range(0, len(keys), 500):
        chunk = keys[offset : offset + 500]
        for u in conn.execute(_LOCK_CYCLES, {"keys": chunk}):
            draws.used[(u.holding_id, u.metric_id, u.cycle_start)] = Decimal(u.used)
    return draws


_LOCK_CYCLES = (
    select(package_usage)
    .where(
        tuple_(
            package_usage.c.holding_id, package_usage.c.metric_id, package_usage.c.cycle_start
        ).in_(bindparam("keys", expanding=True))
    )
    .order_by(package_usage.c.holding_id, package_usage.c.metric_id, package_usage.c.cycle_start)
    .with_for_update()
)
"""The usage rows of package cycles, locked in key order (built once, as _LOCK_PERIODS)."""


def usage_levels(work: Work, now: datetime) -> list[tuple[HoldingView, str, Decimal]]:
    """For alerts: every active holding's metric with the share of it used in its cycle."""
    ids = list(
        work.conn.execute(
            select(package_holdings.c.id).where(
                package_holdings.c.status == "active", package_holdings.c.expires_at > now
            )
        ).scalars()
    )
    result = []
    for holding in _holdings(work, ids, now):
        for metric, quantity in holding.quantities.items():
            result.append((holding, metric, holding.used.get(metric, Decimal(0)) / quantity))
    return result


def expiring(work: Work, now: datetime, within: timedelta) -> list[HoldingView]:
    ids = list(
        work.conn.execute(
            select(package_holdings.c.id).where(
                package_holdings.c.status == "active",
                package_holdings.c.expires_at > now,
                package_holdings.c.expires_at <= now + within,
            )
        ).scalars()
    )
    return _holdings(work, ids, now)


# Asked by every authorization of a metered use (docs/DECISIONS.md, 118).
_VALID_HOLDINGS = Prepared(
    select(package_holdings.c.id).where(
        package_holdings.c.user_id == bindparam("user_id"),
        package_holdings.c.service_id == bindparam("service_id"),
        package_holdings.c.status == "active",
        package_holdings.c.starts_at <= bindparam("now"),
        package_holdings.c.expires_at > bindparam("now"),
    )
)


def remaining_now(work: Work, user_id: str, service_id: str) -> dict[str, Decimal]:
    """{metric code: what the user's valid packages of the service have left now}: what
    entitlements show and authorizations do not need to price."""
    now = work.clock.now()
    found = _VALID_HOLDINGS.rows(
        work.conn, {"user_id": user_id, "service_id": service_id, "now": now}
    )
    ids = [row.id for row in found]
    left: dict[str, Decimal] = {}
    for holding in _holdings(work, ids, now):
        for metric, quantity in holding.remaining.items():
            left[metric] = left.get(metric, Decimal(0)) + quantity
    return left
