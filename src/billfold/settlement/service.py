"""Provider settlement: statements, payouts, the commission report and reconciliation.

A statement is the provider's side of the ledger for one calendar month (UTC): what its
charges earned in all (gross), what refunds and credit notes took back, the platform's
commission, and the net it earned (the seed's profit = income - cost), next to its
earnings balance at the start and end of the month and the payouts in between, so that
`opening + net - payouts = closing` ties it to the ledger.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from billfold import invoicing, ledger
from billfold.analytics import pending_revenue, revenue_of_transfers
from billfold.core import audit
from billfold.core.access import Principal, Role, require_admin, require_provider_access
from billfold.core.context import Work
from billfold.domain.errors import InsufficientFunds, InvalidRequest, NotFound
from billfold.domain.ledger import (
    PLATFORM_OWNER_ID,
    AccountKind,
    OwnerType,
    Posting,
    TransferKind,
    TransferSpec,
)
from billfold.domain.money import Currency, currency, from_units, parse_amount, to_units
from billfold.domain.periods import parse_period
from billfold.ids import new_id
from billfold.store.tables import (
    invoice_lines,
    invoices,
    providers,
    revenue_rollup,
    usage_deltas,
    usage_rollup,
    usage_rollup_users,
)

TICK = timedelta(microseconds=1)


@dataclass
class Statement:
    provider_id: str
    period: str
    currency: Currency
    gross: int = 0
    refunds: int = 0
    commission: int = 0
    transfers: int = 0
    payouts: int = 0
    opening: int = 0
    closing: int = 0
    promotions: int = 0
    """What the provider's vouchers cost it in the period (funded less expired back)."""
    receivable: int = 0
    """What the provider's postpaid customers still owe on open invoices, now."""
    overdue: int = 0
    """The part of `receivable` past its due date."""
    by_service: dict[str, list[int]] = field(default_factory=dict)

    @property
    def net(self) -> int:
        return self.gross - self.refunds - self.commission - self.promotions

    def money(self, units: int) -> Decimal:
        return from_units(units, self.currency)


def _earnings_accounts(work: Work, provider_id: str) -> dict[str, int]:
    """The provider's earnings account per currency."""
    found = ledger.accounts_of(
        work, OwnerType.PROVIDER, [provider_id], [AccountKind.PROVIDER_EARNINGS]
    )
    return {account.currency: account.id for account in found}


def _rollup_revenue(
    work: Work, start: datetime, end: datetime, provider_id: str | None
) -> dict[tuple[str, str, str], list[int]]:
    """Gross, refunds, commission and transfers per (provider, service, currency), from
    the revenue rollup and the transfers the folder has not reached yet."""
    conn = work.conn
    conditions = [
        revenue_rollup.c.bucket >= start,
        revenue_rollup.c.bucket < end,
    ]
    if provider_id is not None:
        conditions.append(revenue_rollup.c.provider_id == provider_id)
    found: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in conn.execute(
        select(
            revenue_rollup.c.provider_id,
            revenue_rollup.c.service,
            revenue_rollup.c.currency,
            func.sum(revenue_rollup.c.gross),
            func.sum(revenue_rollup.c.refunds),
            func.sum(revenue_rollup.c.commission),
            func.sum(revenue_rollup.c.transfers),
        )
        .where(*conditions)
        .group_by(revenue_rollup.c.provider_id, revenue_rollup.c.service, revenue_rollup.c.currency)
    ):
        acc = found[(row[0], row[1], row[2])]
        for i in range(4):
            acc[i] += int(row[3 + i])
    for pending in pending_revenue(work, start, end, provider_id):
        acc = found[(pending.provider_id, pending.service, pending.currency)]
        for i, value in enumerate(
            (pending.gross, pending.refunds, pending.commission, pending.transfers)
        ):
            acc[i] += value
    return found


def _payouts(work: Work, account_id: int, start: datetime, end: datetime) -> int:
    """What was paid out of the account in [start, end), as a positive number of units."""
    which = ledger.TransferFilter(posted_from=start, posted_to=end, kinds=(TransferKind.PAYOUT,))
    rows = ledger.sum_postings(work, which, account_ids=[account_id])
    return -sum(int(total) for (total,) in rows)


def statements(work: Work, principal: Principal, provider_id: str, period: str) -> list[Statement]:
    """The provider's statement for the month, one per currency it earns in."""
    require_provider_access(principal, provider_id)
    start, end = parse_period(period)
    if (
        work.conn.execute(select(providers.c.id).where(providers.c.id == provider_id)).first()
        is None
    ):
        raise NotFound(f"no provider {provider_id}", code="provider_not_found")
    return _statements(work, provider_id, period, start, end)


def _statements(
    work: Work, provider_id: str, period: str, start: datetime, end: datetime
) -> list[Statement]:
    found: dict[str, Statement] = {}
    earnings = _earnings_accounts(work, provider_id)
    for code in earnings:
        found[code] = Statement(provider_id, period, currency(code))
    for (_, service, code), (gross, refunds, commission, count) in _rollup_revenue(
        work, start, end, provider_id
    ).items():
        st = found.setdefault(code, Statement(provider_id, period, currency(code)))
        st.gross += gross
        st.refunds += refunds
        st.commission += commission
        st.transfers += count
        st.by_service[service] = [gross, refunds, commission]
    for code, st in found.items():
        account = earnings.get(code)
        if account is None:
            continue
        st.opening = ledger.balance(work, account, as_of=start - TICK).posted
        st.closing = ledger.balance(work, account, as_of=end - TICK).posted
        st.payouts = _payouts(work, account, start, end)
        st.promotions = -_moved(
            work, account, start, end, (TransferKind.GRANT, TransferKind.EXPIRY)
        )
    # Gross counts what was charged; postpaid customers may not have paid it yet.
    for row in invoicing.aging(work, by="provider", provider_id=provider_id):
        if row.currency in found:
            found[row.currency].receivable = row.total
            found[row.currency].overdue = row.total - row.buckets["current"]
    return [found[code] for code in sorted(found)]


def _moved(
    work: Work, account: int, start: datetime, end: datetime, kinds: tuple[TransferKind, ...]
) -> int:
    """What transfers of these kinds posted on the account in [start, end)."""
    which = ledger.TransferFilter(posted_from=start, posted_to=end, kinds=kinds)
    rows = ledger.sum_postings(work, which, account_ids=[account])
    return int(rows[0][-1]) if rows else 0


# --- payouts --------------------------------------------------------------------------


@dataclass
class Payout:
    id: str
    provider_id: str
    currency: Currency
    amount: int
    balance_after: int
    created_at: datetime
    reference: str | None


def payout(
    work: Work,
    principal: Principal,
    *,
    provider_id: str,
    amount: object,
    currency_code: str | None = None,
    reference: str | None = None,
    transfer_id: str | None = None,
) -> Payout:
    """Moves part of a provider's earned balance out (to the platform's cash account).

    Never more than the balance: the check runs with every part of the earnings account
    locked (docs/DECISIONS.md, 114), so no charge or refund can slip in between.
    """
    require_admin(principal)
    now = work.clock.now()
    if reference is not None and len(reference) > 255:
        raise InvalidRequest("reference is at most 255 characters", param="reference")
    if (
        work.conn.execute(select(providers.c.id).where(providers.c.id == provider_id)).first()
        is None
    ):
        raise NotFound(f"no provider {provider_id}", code="provider_not_found", param="provider")
    earnings = _earnings_accounts(work, provider_id)
    if currency_code is None:
        if len(earnings) != 1:
            raise InvalidRequest(
                "say which currency to pay out"
                if earnings
                else "this provider has earned nothing yet",
                param="currency",
            )
        currency_code = next(iter(earnings))
    cur = currency(currency_code)
    if cur.code not in earnings:
        raise InvalidRequest(f"this provider has no {cur.code} earnings", param="currency")
    units = to_units(parse_amount(amount, allow_zero=False), cur)
    if units <= 0:
        raise InvalidRequest("amount must be positive", param="amount")
    account = earnings[cur.code]
    cash = ledger.ensure_account(
        work, OwnerType.PLATFORM, PLATFORM_OWNER_ID, AccountKind.EXTERNAL_CASH, cur.code, now=now
    )
    spec = TransferSpec(
        id=transfer_id or new_id("po"),
        kind=TransferKind.PAYOUT,
        postings=(Posting(account, cur.code, -units), Posting(cash, cur.code, units)),
        provider_id=provider_id,
        description="Payout",
        reference=reference,
        # Never more than the earned balance: the ledger checks it under its own locks,
        # so no charge or refund can slip in between.
        covered_accounts=frozenset({account}),
    )
    try:
        posted = ledger.post(work, spec, now=now)
    except InsufficientFunds:
        available = ledger.balance(work, account).posted
        raise InsufficientFunds(
            "the payout is more than the provider's earned balance "
            f"({from_units(max(available, 0), cur)} {cur.code})",
            code="payout_exceeds_balance",
            param="amount",
        ) from None
    if not posted.replayed:
        audit.record(
            work,
            principal,
            "provider.paid_out",
            "transfer",
            posted.id,
            at=now,
            details={"provider_id": provider_id, "units": units, "currency": cur.code},
        )
    mine = next(p for p in posted.postings if p.account_id == account)
    # The earnings account is parted by journal chain: what is left is all its parts.
    left = ledger.balance(work, account).posted
    return Payout(posted.id, provider_id, cur, -mine.amount, left, posted.posted_at, reference)


# --- the platform's commission and reconciliation -------------------------------------


@dataclass(frozen=True, slots=True)
class CommissionRow:
    """One provider's revenue and the platform's commission on it, in ledger units."""

    provider_id: str | None
    currency: Currency
    gross: int
    refunds: int
    commission: int
    receivable: int = 0
    """Invoiced and not paid yet, now: what the provider's postpaid customers still owe
    on open invoices (gross counts what was charged, paid or not)."""

    @property
    def net(self) -> int:
        return self.gross - self.refunds - self.commission


def commission_report(work: Work, principal: Principal, period: str) -> list[CommissionRow]:
    """The platform's commission per provider and currency for the month."""
    require_admin(principal)
    start, end = parse_period(period)
    sums = _rollup_revenue(work, start, end, None)
    per: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for (provider, _service, code), (gross, refunds, commission, _n) in sums.items():
        acc = per[(provider, code)]
        acc[0] += gross
        acc[1] += refunds
        acc[2] += commission
    owed = {(row.party, row.currency): row.total for row in invoicing.aging(work, by="provider")}
    return [
        CommissionRow(
            provider or None, currency(code), g, r, c, owed.get((provider or "platform", code), 0)
        )
        for (provider, code), (g, r, c) in sorted(per.items())
    ]


@dataclass
class PromotionCost:
    """What the platform's own promotions cost it in a month, in ledger units: credit
    granted and platform vouchers redeemed, discounts of its coupons, less what expired
    unspent or came back with refunds."""

    currency: Currency
    granted: int = 0
    discounts: int = 0
    returned: int = 0

    @property
    def cost(self) -> int:
        return self.granted + self.discounts - self.returned


def promotion_costs(work: Work, principal: Principal, period: str) -> list[PromotionCost]:
    """The platform promotions account's movements in the month, by what moved it."""
    require_admin(principal)
    start, end = parse_period(period)
    ids = {
        a.id: a.currency
        for a in ledger.accounts_of(
            work, OwnerType.PLATFORM, [PLATFORM_OWNER_ID], [AccountKind.PROMOTIONAL_CREDITS]
        )
    }
    if not ids:
        return []
    found: dict[str, PromotionCost] = {}
    which = ledger.TransferFilter(posted_from=start, posted_to=end)
    for code, kind, total in ledger.sum_postings(
        work, which, account_ids=list(ids), group_by=("currency", "kind")
    ):
        row = found.setdefault(code, PromotionCost(currency(code)))
        amount = int(total)
        if kind == str(TransferKind.GRANT):
            row.granted -= amount
        elif kind == str(TransferKind.CHARGE):
            row.discounts -= amount
        else:  # Expiries, and refunds of discounted sales.
            row.returned += amount
    return [found[code] for code in sorted(found)]


@dataclass
class Difference:
    check: str
    subject: str
    expected: str
    found: str


@dataclass
class Reconciliation:
    period: str
    checks: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def reconcile(work: Work, period: str) -> Reconciliation:
    """Proves that statements, invoices and the ledger agree for the month; names every
    difference it finds.

    1. Every provider's statement (from the revenue rollup) equals the same sums taken
       straight from the ledger's transfers and postings.
    2. Every statement ties to the ledger: opening + net - payouts = closing balance.
    3. The platform's commission in the statements equals what its revenue account gained
       from those transfers.
    4. Every invoice of the month adds up (lines to subtotal, subtotal and tax to total),
       is paid no more than its total, and every ledger transfer its lines cite exists.
    5. The usage rollups (all time) equal the journal's totals: usage series add up to
       what metering charged.
    6. Every postpaid user's receivable owes at least what their open invoices ask for.
    """
    start, end = parse_period(period)
    result = Reconciliation(period)
    rolled = _rollup_revenue(work, start, end, None)
    raw, _, _ = revenue_of_transfers(work, ledger.TransferFilter(posted_from=start, posted_to=end))
    direct: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for (provider, _b, service, code), item in raw.items():
        acc = direct[(provider, service, code)]
        for i, value in enumerate((item.gross, item.refunds, item.commission, item.transfers)):
            acc[i] += value
    for key in sorted(set(rolled) | set(direct)):
        result.checks += 1
        a, b = rolled.get(key, [0, 0, 0, 0]), direct.get(key, [0, 0, 0, 0])
        if a != b:
            result.differences.append(
                Difference(
                    "statement_vs_ledger",
                    f"provider {key[0] or '(platform)'} service {key[1] or '-'} {key[2]}",
                    "gross/refunds/commission/transfers " + "/".join(map(str, b)),
                    "/".join(map(str, a)),
                )
            )
    provider_ids = sorted(
        {k[0] for k in rolled if k[0]}
        | {
            account.owner_id
            for account in ledger.accounts_of(
                work, OwnerType.PROVIDER, kinds=[AccountKind.PROVIDER_EARNINGS]
            )
        }
    )
    for provider_id in provider_ids:
        for st in _statements(work, provider_id, period, start, end):
            result.checks += 1
            if st.opening + st.net - st.payouts != st.closing:
                result.differences.append(
                    Difference(
                        "statement_balance",
                        f"provider {provider_id} {st.currency.code}",
                        f"closing {st.closing}",
                        f"opening {st.opening} + net {st.net} - payouts {st.payouts} = "
                        f"{st.opening + st.net - st.payouts}",
                    )
                )
    _reconcile_commission(work, start, end, rolled, result)
    _reconcile_invoices(work, start, end, result)
    _reconcile_usage(work, result)
    _reconcile_receivables(work, result)
    return result


def _reconcile_receivables(work: Work, result: Reconciliation) -> None:
    """6. Every postpaid user's receivable owes at least what their open invoices ask for
    (the rest is usage not invoiced yet): an invoice marked paid without money arriving,
    or money taken without its invoice knowing, shows here."""
    rows = invoicing.aging(work, by="user")
    for row in rows:
        result.checks += 1
        owed = ledger.user_standing(work, row.party, row.currency, 0).owed
        if owed < row.total:
            result.differences.append(
                Difference(
                    "receivable_vs_open_invoices",
                    f"user {row.party} {row.currency}",
                    f"at least {row.total} owed",
                    f"receivable owes {owed}",
                )
            )


def _reconcile_commission(
    work: Work,
    start: datetime,
    end: datetime,
    rolled: dict[tuple[str, str, str], list[int]],
    result: Reconciliation,
) -> None:
    which = ledger.TransferFilter(
        posted_from=start, posted_to=end, exclude_kinds=(TransferKind.PAYOUT,)
    )
    gained: dict[str, int] = defaultdict(int)
    for code, total in ledger.sum_postings(
        work, which, account_kinds=[str(AccountKind.PLATFORM_REVENUE)], group_by=("currency",)
    ):
        gained[code] += total
    stated: dict[str, int] = defaultdict(int)
    for (_p, _s, code), values in rolled.items():
        stated[code] += values[2]
    for code in sorted(set(gained) | set(stated)):
        result.checks += 1
        if gained[code] != stated[code]:
            result.differences.append(
                Difference(
                    "commission_vs_platform_revenue", code, str(gained[code]), str(stated[code])
                )
            )


def _reconcile_invoices(work: Work, start: datetime, end: datetime, result: Reconciliation) -> None:
    conn = work.conn
    rows = list(
        conn.execute(
            select(invoices).where(
                invoices.c.period_end > start,
                invoices.c.period_end <= end,
                invoices.c.status.in_(("open", "paid", "void")),
            )
        )
    )
    ids = [row.id for row in rows]
    lines: dict[str, list[Any]] = defaultdict(list)
    for offset in range(0, len(ids), 500):
        for line in conn.execute(
            select(invoice_lines).where(invoice_lines.c.invoice_id.in_(ids[offset : offset + 500]))
        ):
            lines[line.invoice_id].append(line)
    cited = sorted({ln.transfer_id for ls in lines.values() for ln in ls if ln.transfer_id})
    known = ledger.existing_ids(work, cited)
    for row in rows:
        result.checks += 1
        mine = lines[row.id]
        subject = f"invoice {row.number or row.id}"
        if sum(int(ln.amount) for ln in mine) != int(row.subtotal):
            result.differences.append(
                Difference(
                    "invoice_lines",
                    subject,
                    f"subtotal {row.subtotal}",
                    str(sum(int(ln.amount) for ln in mine)),
                )
            )
        taxes = sum(int(ln.tax) for ln in mine)
        if taxes != int(row.tax) or int(row.subtotal) + int(row.tax) != int(row.total):
            result.differences.append(
                Difference(
                    "invoice_total",
                    subject,
                    f"total {row.total}",
                    f"subtotal {row.subtotal} + tax {row.tax}",
                )
            )
        if int(row.amount_paid) > int(row.total):
            result.differences.append(
                Difference(
                    "invoice_overpaid", subject, f"at most {row.total}", f"paid {row.amount_paid}"
                )
            )
        for line in mine:
            if line.transfer_id and line.transfer_id not in known:
                result.differences.append(
                    Difference(
                        "invoice_transfer_missing", subject, line.transfer_id, "no such transfer"
                    )
                )


def _sums(work: Work, table: Any) -> dict[tuple[str, str], int]:
    return {
        (row[0], row[1]): int(row[2])
        for row in work.conn.execute(
            select(table.c.provider_id, table.c.currency, func.sum(table.c.amount)).group_by(
                table.c.provider_id, table.c.currency
            )
        )
    }


def _reconcile_usage(work: Work, result: Reconciliation) -> None:
    """Usage analytics (rollups and the journal not folded yet) against the ledger's
    usage charges, all time, per provider and currency; and the two rollups against
    each other."""
    folded, journal = _sums(work, usage_rollup), _sums(work, usage_deltas)
    per_user = _sums(work, usage_rollup_users)
    charged: dict[tuple[str, str], int] = defaultdict(int)
    usage = ledger.TransferFilter(
        kinds=(TransferKind.CHARGE, TransferKind.ADJUSTMENT), metered=True
    )
    for provider_id, code, total in ledger.sum_postings(
        work, usage, account_kinds=ledger.EARNING_KINDS, group_by=("provider_id", "currency")
    ):
        charged[(provider_id, code)] += total
    for key in sorted(set(folded) | set(journal) | set(charged) | set(per_user)):
        result.checks += 1
        analytics = folded.get(key, 0) + journal.get(key, 0)
        if analytics != charged.get(key, 0):
            result.differences.append(
                Difference(
                    "usage_vs_ledger",
                    f"provider {key[0]} {key[1]}",
                    f"usage charges in the ledger {charged.get(key, 0)}",
                    f"usage analytics {analytics}",
                )
            )
        if folded.get(key, 0) != per_user.get(key, 0):
            result.differences.append(
                Difference(
                    "usage_rollups",
                    f"provider {key[0]} {key[1]}",
                    f"per user {per_user.get(key, 0)}",
                    f"per provider {folded.get(key, 0)}",
                )
            )


# --- receivables: what is invoiced and not yet paid ---------------------------------


@dataclass(frozen=True, slots=True)
class AgingView:
    """Open receivables of one party in one currency, by days past due."""

    party: str
    currency: Currency
    invoices: int
    buckets: dict[str, Decimal]
    total: Decimal


def receivables(work: Work, principal: Principal, *, by: str) -> list[AgingView]:
    """Open postpaid invoices' amounts due, by user or by provider, in aging buckets
    (current, 1-30, 31-60, 61-90, over 90 days past due), as of now. An admin sees every
    party; a provider its own invoices (by user: its customers' ids); a user its own."""
    if by not in ("user", "provider"):
        raise InvalidRequest("by is user or provider", param="by")
    provider_id = user_id = None
    if principal.role == Role.PROVIDER:
        provider_id = principal.provider_id
    elif principal.role == Role.USER:
        user_id = principal.user_id
    rows = invoicing.aging(work, by=by, provider_id=provider_id, user_id=user_id)
    found = []
    for row in rows:
        cur = currency(row.currency)
        found.append(
            AgingView(
                party=row.party,
                currency=cur,
                invoices=row.invoices,
                buckets={k: from_units(v, cur) for k, v in row.buckets.items()},
                total=from_units(row.total, cur),
            )
        )
    return found
