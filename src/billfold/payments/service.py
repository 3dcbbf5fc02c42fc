"""Payments through gateways: checkouts, signed notifications, returns, refunds to the
card, saved cards and auto-recharge, and their reconciliation with the ledger.

Exactly once. A verified success credits the wallet with a top-up whose transfer id is
derived from the gateway and its payment id, under the payment row's lock: a second
notification, the user's return, or both at once, find the payment settled (or post the
same transfer id, which the ledger answers with the first one). Failures and expiries
change no money. A notification that does not verify changes nothing and is logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import func, select, update

from billfold import ledger, parties, prepaid
from billfold.core import audit
from billfold.core.access import SYSTEM, Principal, require_admin, require_user_access
from billfold.core.context import Context, Work
from billfold.core.directory import load_user
from billfold.domain.errors import BillfoldError, Conflict, InvalidRequest, NotFound
from billfold.domain.ledger import AccountKind, OwnerType, TransferKind
from billfold.domain.money import (
    Currency,
    currency,
    from_units,
    parse_amount,
    require_minor_units,
    to_units,
)
from billfold.domain.periods import parse_period
from billfold.ids import derived_id, new_id
from billfold.invoicing import invoices
from billfold.payments.gateways import (
    Gateway,
    InvalidSignature,
    Notice,
    SavedMethod,
    gateway_for,
)
from billfold.settlement import Difference, Reconciliation
from billfold.settlement import reconcile as reconcile_books
from billfold.store.tables import payment_methods, payments, recharge_settings

log = structlog.get_logger("billfold.payments")

MAX_CHECKOUT = Decimal("1000000")


@dataclass(frozen=True, slots=True)
class PaymentView:
    id: str
    user_id: str
    gateway: str
    purpose: str
    invoice_id: str | None
    currency: Currency
    amount: Decimal
    status: str
    refunded: Decimal
    gateway_ref: str | None
    transfer_id: str | None
    failure: str | None
    created_at: datetime
    redirect_url: str | None = None
    client_secret: str | None = None


def _view(
    row: Any, redirect_url: str | None = None, client_secret: str | None = None
) -> PaymentView:
    cur = currency(row.currency)
    return PaymentView(
        id=row.id,
        user_id=row.user_id,
        gateway=row.gateway,
        purpose=row.purpose,
        invoice_id=row.invoice_id,
        currency=cur,
        amount=from_units(row.amount, cur),
        status=row.status,
        refunded=from_units(row.refunded, cur),
        gateway_ref=row.gateway_ref,
        transfer_id=row.transfer_id,
        failure=row.failure,
        created_at=row.created_at,
        redirect_url=redirect_url,
        client_secret=client_secret,
    )


def _minor(units: int, cur: Currency) -> int:
    """Ledger units as the gateway's minor units (cents, fen): whole by construction."""
    step: int = 10 ** (cur.ledger_scale - cur.minor_units)
    assert units % step == 0
    return units // step


# --- checkouts -------------------------------------------------------------------------


def start_checkout(
    work: Work,
    principal: Principal,
    user_ref: str,
    *,
    gateway: str,
    amount: object = None,
    invoice_id: str | None = None,
    return_url: str | None = None,
    saved_card: bool = False,
) -> PaymentView:
    """Starts a payment of `amount` (a top-up) or of an invoice's amount due (that user,
    admin): the answer carries the gateway's redirect URL or client secret. With
    `saved_card`, the user's saved card is charged at once (Stripe)."""
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    gw = gateway_for(work.settings, gateway)
    cur = user.currency
    purpose = "top_up"
    if invoice_id is not None:
        invoice = invoices.get(work, principal, invoice_id)
        if invoice.user != user.id:
            raise NotFound(f"no invoice {invoice_id}", code="invoice_not_found", param="invoice")
        if invoice.status != "open" or invoice.amount_due <= 0:
            raise Conflict("the invoice asks for nothing", code="invoice_paid", param="invoice")
        due = invoice.amount_due
        value = due if amount is None else parse_amount(amount, allow_zero=False)
        if value > due:
            raise InvalidRequest("the amount is more than the invoice asks for", param="amount")
        purpose = "invoice"
    else:
        if amount is None:
            raise InvalidRequest("a top-up needs an amount", param="amount")
        value = parse_amount(amount, allow_zero=False, max_amount=MAX_CHECKOUT)
    require_minor_units(value, cur)
    saved = None
    if saved_card:
        saved = _saved(work, user.id)
        if saved is None or gw.name != "stripe":
            raise InvalidRequest(
                "no card is saved for this account",
                code="gateway_not_configured",
                param="saved_card",
            )
    return _begin(
        work,
        principal,
        user.id,
        cur,
        to_units(value, cur),
        gw,
        purpose,
        invoice_id,
        return_url,
        saved,
    )


def _begin(
    work: Work,
    principal: Principal,
    user_id: str,
    cur: Currency,
    units: int,
    gw: Gateway,
    purpose: str,
    invoice_id: str | None,
    return_url: str | None,
    saved: SavedMethod | None = None,
) -> PaymentView:
    now = work.clock.now()
    payment_id = new_id("pay")
    back = return_url or f"{work.settings.public_url.rstrip('/')}/wallet?payment={payment_id}"
    started = gw.start(
        payment_id=payment_id,
        amount_minor=_minor(units, cur),
        currency=cur.code,
        subject=f"billfold {purpose.replace('_', '-')} {payment_id}",
        return_url=back,
        saved=saved,
    )
    work.conn.execute(
        payments.insert().values(
            id=payment_id,
            user_id=user_id,
            gateway=gw.name,
            purpose=purpose,
            invoice_id=invoice_id,
            currency=cur.code,
            amount=units,
            status="pending",
            gateway_ref=started.gateway_ref,
            refunded=0,
            created_at=now,
            updated_at=now,
        )
    )
    audit.record(
        work, principal, "payment.started", "payment", payment_id, at=now,
        details={"user_id": user_id, "gateway": gw.name, "units": units, "purpose": purpose},
    )  # fmt: skip
    if started.status == "succeeded":  # An off-session card payment can succeed at once.
        apply_notice(work, gw.name, gw.fetch(started.gateway_ref))
    row = _row(work, payment_id)
    return _view(row, started.redirect_url, started.client_secret)


def _row(work: Work, payment_id: str, *, lock: bool = False) -> Any:
    query = select(payments).where(payments.c.id == payment_id)
    row = work.conn.execute(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise NotFound(f"no payment {payment_id}", code="payment_not_found")
    return row


# --- notifications and returns ---------------------------------------------------------


def receive_notification(
    work: Work, gateway: str, headers: Mapping[str, str], body: bytes
) -> bytes:
    """A gateway's notification: verified, then applied. What the gateway is answered."""
    gw = gateway_for(work.settings, gateway)
    try:
        notice = gw.parse_notice(headers, body)
    except InvalidSignature as refused:
        log.warning(
            "gateway_notification_refused", gateway=gateway, reason=refused.message,
            size=len(body),
        )  # fmt: skip
        raise
    apply_notice(work, gw.name, notice)
    return gw.webhook_answer


def apply_notice(work: Work, gateway: str, notice: Notice) -> str:
    """Applies what a verified notice says to its payment: what came of it."""
    if notice.outcome in ("ignored", "pending"):
        return notice.outcome
    row = work.conn.execute(
        select(payments)
        .where(payments.c.gateway == gateway, payments.c.gateway_ref == notice.gateway_ref)
        .with_for_update()
    ).one_or_none()
    if row is None:
        log.warning("gateway_notification_unknown", gateway=gateway, ref=notice.gateway_ref)
        return "unknown"
    now = work.clock.now()
    cur = currency(row.currency)
    if notice.outcome != "succeeded":
        if row.status == "pending":
            work.conn.execute(
                update(payments)
                .where(payments.c.id == row.id)
                .values(status=notice.outcome, failure=notice.outcome, updated_at=now)
            )
        return notice.outcome
    if row.status == "succeeded":
        return "replayed"
    if notice.amount_minor != _minor(row.amount, cur) or notice.currency != cur.code:
        log.warning(
            "gateway_notification_mismatch", gateway=gateway, payment=row.id,
            amount=notice.amount_minor, currency=notice.currency,
        )  # fmt: skip
        raise InvalidRequest(
            "the notification's amount or currency is not the payment's", param="body"
        )
    transfer_id = derived_id("tr", "payment", gateway, notice.gateway_payment_id)
    parties.top_up(
        work,
        SYSTEM,
        row.user_id,
        amount=from_units(row.amount, cur),
        reference=f"{gateway}:{notice.gateway_payment_id}",
        transfer_id=transfer_id,
    )
    work.conn.execute(
        update(payments)
        .where(payments.c.id == row.id)
        .values(
            status="succeeded",
            gateway_payment_id=notice.gateway_payment_id,
            transfer_id=transfer_id,
            failure=None,
            updated_at=now,
        )
    )
    audit.record(
        work, SYSTEM, "payment.succeeded", "payment", row.id, at=now,
        details={"gateway": gateway, "gateway_payment_id": notice.gateway_payment_id},
    )  # fmt: skip
    if row.invoice_id is not None:
        try:
            invoices.pay(work, SYSTEM, row.invoice_id)
        except BillfoldError as error:  # Paid meanwhile: the money stays in the wallet.
            log.info("payment_invoice_not_paid", payment=row.id, reason=error.message)
    return "succeeded"


def sync_payment(work: Work, principal: Principal, payment_id: str) -> PaymentView:
    """The user is back from the gateway: asks it how the payment stands and applies that,
    as its notification would (whichever comes first, the money arrives once)."""
    row = _row(work, payment_id)
    require_user_access(principal, row.user_id)
    if row.status == "pending":
        gw = gateway_for(work.settings, row.gateway)
        if row.gateway_ref is not None:
            apply_notice(work, gw.name, gw.fetch(row.gateway_ref))
    return _view(_row(work, payment_id))


def get_payment(work: Work, principal: Principal, payment_id: str) -> PaymentView:
    row = _row(work, payment_id)
    try:
        require_user_access(principal, row.user_id)
    except NotFound:
        raise NotFound(f"no payment {payment_id}", code="payment_not_found") from None
    return _view(row)


def list_payments(
    work: Work, principal: Principal, user_ref: str, *, limit: int = 100
) -> list[PaymentView]:
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    rows = work.conn.execute(
        select(payments)
        .where(payments.c.user_id == user.id)
        .order_by(payments.c.created_at.desc(), payments.c.id.desc())
        .limit(limit)
    ).all()
    return [_view(r) for r in rows]


# --- refunds to the card ---------------------------------------------------------------


def refund_payment(
    work: Work, principal: Principal, payment_id: str, *, amount: object = None
) -> PaymentView:
    """Gives unspent cash back to the payment it came from (admin): the wallet pays it
    out, never below zero, and the gateway refunds the card."""
    require_admin(principal)
    row = _row(work, payment_id, lock=True)
    if row.status != "succeeded" or row.transfer_id is None:
        raise Conflict("only a payment that succeeded can be refunded", code="not_billed")
    cur = currency(row.currency)
    left = row.amount - row.refunded
    units = left if amount is None else to_units(parse_amount(amount, allow_zero=False), cur)
    if units <= 0 or units > left:
        raise InvalidRequest(
            "the amount is more than is left to refund on this payment",
            code="refund_exceeds_original",
            param="amount",
        )
    require_minor_units(from_units(units, cur), cur)
    now = work.clock.now()
    original = ledger.get_transfer(work, row.transfer_id)
    wallet = ledger.ensure_account(
        work, OwnerType.USER, row.user_id, AccountKind.WALLET, cur.code, now=now
    )
    refund_id = derived_id("tr", "payment-refund", row.id, str(row.refunded), str(units))
    spec = ledger.reversal_spec(
        work,
        original=original,
        transfer_id=refund_id,
        anchor_account_id=wallet,
        anchor_amount=units,
        kind=TransferKind.REFUND,
        description=f"Refund to {row.gateway} payment {row.id}",
        reference=f"{row.gateway}:{row.gateway_payment_id}",
    )
    # Only cash goes back, and never more than the wallet holds (no credit limit).
    ledger.post(work, replace(spec, covered_accounts=frozenset({wallet})), now=now)
    gw = gateway_for(work.settings, row.gateway)
    gateway_refund = gw.refund(
        gateway_ref=str(row.gateway_ref),
        amount_minor=_minor(units, cur),
        idempotency_key=f"billfold-{refund_id}",
    )
    work.conn.execute(
        update(payments)
        .where(payments.c.id == row.id)
        .values(refunded=row.refunded + units, updated_at=now)
    )
    audit.record(
        work, principal, "payment.refunded", "payment", row.id, at=now,
        details={"units": units, "gateway_refund": gateway_refund, "transfer_id": refund_id},
    )  # fmt: skip
    return _view(_row(work, payment_id))


# --- saved cards and auto-recharge ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recharge:
    user_id: str
    currency: Currency
    threshold: Decimal
    amount: Decimal
    daily_cap: Decimal
    enabled: bool
    method: str | None


def save_method(
    work: Work, principal: Principal, user_ref: str, *, gateway: str, method_ref: str
) -> str:
    """Saves a card (a Stripe PaymentMethod made in the browser) for auto-recharge."""
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    gw = gateway_for(work.settings, gateway)
    saved = gw.save_method(user_id=user.id, method_ref=method_ref)
    now = work.clock.now()
    work.conn.execute(
        payment_methods.delete().where(
            payment_methods.c.user_id == user.id, payment_methods.c.gateway == gw.name
        )
    )
    work.conn.execute(
        payment_methods.insert().values(
            user_id=user.id,
            gateway=gw.name,
            customer_ref=saved.customer_ref,
            method_ref=saved.method_ref,
            label=saved.label,
            created_at=now,
        )
    )
    audit.record(work, principal, "payment_method.saved", "user", user.id, at=now,
                 details={"gateway": gw.name, "label": saved.label})  # fmt: skip
    return saved.label


def set_recharge(
    work: Work,
    principal: Principal,
    user_ref: str,
    *,
    threshold: object,
    amount: object,
    daily_cap: object = None,
    enabled: bool = True,
) -> Recharge:
    """Below `threshold` available, one payment of `amount` on the saved card; never a
    second while one is pending, never more than `daily_cap` in 24 hours."""
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    cur = user.currency
    if enabled and _saved(work, user.id) is None:
        raise InvalidRequest(
            "save a card first (POST /v1/users/{id}/payment-methods)",
            code="recharge_not_configured",
        )
    limit = parse_amount(work.settings.auto_recharge_daily_cap, param="daily_cap")
    low = parse_amount(threshold, param="threshold")
    each = parse_amount(amount, allow_zero=False)
    cap = each if daily_cap is None else parse_amount(daily_cap, param="daily_cap")
    for value, name in ((low, "threshold"), (each, "amount"), (cap, "daily_cap")):
        require_minor_units(value, cur, param=name)
    if cap < each or cap > limit:
        raise InvalidRequest(
            f"daily_cap must be at least the amount and at most {limit}", param="daily_cap"
        )
    now = work.clock.now()
    values = {
        "threshold": to_units(low, cur, param="threshold"),
        "amount": to_units(each, cur),
        "daily_cap": to_units(cap, cur, param="daily_cap"),
        "enabled": int(enabled),
        "updated_at": now,
    }
    work.conn.execute(recharge_settings.delete().where(recharge_settings.c.user_id == user.id))
    work.conn.execute(recharge_settings.insert().values(user_id=user.id, **values))
    audit.record(work, principal, "auto_recharge.set", "user", user.id, at=now,
                 details={k: v for k, v in values.items() if k != "updated_at"})  # fmt: skip
    return get_recharge(work, principal, user.id)


def get_recharge(work: Work, principal: Principal, user_ref: str) -> Recharge:
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    cur = user.currency
    row = work.conn.execute(
        select(recharge_settings).where(recharge_settings.c.user_id == user.id)
    ).one_or_none()
    saved = _saved(work, user.id)
    zero = Decimal(0)
    return Recharge(
        user_id=user.id,
        currency=cur,
        threshold=from_units(row.threshold, cur) if row else zero,
        amount=from_units(row.amount, cur) if row else zero,
        daily_cap=from_units(row.daily_cap, cur) if row else zero,
        enabled=bool(row.enabled) if row else False,
        method=saved.label if saved else None,
    )


def _saved(work: Work, user_id: str) -> SavedMethod | None:
    row = work.conn.execute(
        select(payment_methods).where(
            payment_methods.c.user_id == user_id, payment_methods.c.gateway == "stripe"
        )
    ).one_or_none()
    return None if row is None else SavedMethod(row.customer_ref, row.method_ref, row.label)


def recharge_due(ctx: Context) -> int:
    """Starts the auto-recharges that are due: one per user below its threshold, none
    while one is pending, none past the daily cap. Each user in its own transaction,
    under its settings row's lock, so two servers never start two."""
    with ctx.work(read_only=True) as work:
        users = list(
            work.conn.execute(
                select(recharge_settings.c.user_id).where(recharge_settings.c.enabled == 1)
            ).scalars()
        )
    started = 0
    for user_id in users:
        with ctx.work() as work:
            try:
                started += _recharge_one(work, user_id)
                work.commit()
            except BillfoldError as error:  # A declined card: logged, tried next round.
                log.warning("auto_recharge_failed", user=user_id, reason=error.message)
    return started


def _recharge_one(work: Work, user_id: str) -> int:
    row = work.conn.execute(
        select(recharge_settings).where(recharge_settings.c.user_id == user_id).with_for_update()
    ).one_or_none()
    saved = _saved(work, user_id)
    if row is None or not row.enabled or saved is None:
        return 0
    user = load_user(work, user_id)
    cur = user.currency
    available = prepaid.spendable(work, user_id, cur.code, to_units(user.credit_limit, cur))
    if available >= row.threshold:
        return 0
    now = work.clock.now()
    recent = work.conn.execute(
        select(payments.c.status, func.coalesce(func.sum(payments.c.amount), 0))
        .where(
            payments.c.user_id == user_id,
            payments.c.purpose == "recharge",
            payments.c.created_at > now - timedelta(days=1),
            payments.c.status.in_(("pending", "succeeded")),
        )
        .group_by(payments.c.status)
    ).all()
    sums = {status: int(total) for status, total in recent}
    pending = work.conn.execute(
        select(payments.c.id).where(
            payments.c.user_id == user_id,
            payments.c.purpose == "recharge",
            payments.c.status == "pending",
        )
    ).first()
    if pending is not None or sum(sums.values()) + row.amount > row.daily_cap:
        return 0
    gw = gateway_for(work.settings, "stripe")
    _begin(work, SYSTEM, user_id, cur, int(row.amount), gw, "recharge", None, None, saved)
    return 1


# --- reconciliation --------------------------------------------------------------------


def reconcile(work: Work, period: str) -> Reconciliation:
    """The books' reconciliation (billfold.settlement.reconcile), and every gateway
    payment of the month matched to its ledger top-up: each success credited once, for
    its amount, with what was refunded to the card gone back out of the wallet; and no
    top-up from a gateway without a payment."""
    report = reconcile_books(work, period)
    start, end = parse_period(period)
    rows = work.conn.execute(
        select(payments).where(payments.c.updated_at >= start, payments.c.created_at < end)
    ).all()
    succeeded = [r for r in rows if r.status == "succeeded"]
    found = {t.id: t for t in ledger.load_transfers(work, [r.transfer_id for r in succeeded])}
    for row in succeeded:
        report.checks += 1
        subject = f"payment {row.id} ({row.gateway} {row.gateway_payment_id})"
        transfer = found.get(row.transfer_id)
        if transfer is None or transfer.kind != str(TransferKind.TOP_UP):
            report.differences.append(
                Difference("payment_vs_ledger", subject, "a top-up", "no top-up")
            )
            continue
        credited_to = [p.account_id for p in transfer.postings if p.amount > 0]
        credited = sum(p.amount for p in transfer.postings if p.amount > 0)
        reversed_ = ledger.reversed_so_far(work, transfer.id)
        back = -sum(reversed_.get(account, 0) for account in credited_to)
        if credited != row.amount or back != row.refunded:
            report.differences.append(
                Difference(
                    "payment_vs_ledger",
                    subject,
                    f"credited {row.amount}, refunded {row.refunded}",
                    f"credited {credited}, refunded {back}",
                )
            )
    # Any month's success may be the payment of a top-up posted this month.
    known = set(
        work.conn.execute(
            select(payments.c.transfer_id).where(payments.c.status == "succeeded")
        ).scalars()
    )
    which = ledger.TransferFilter(posted_from=start, posted_to=end, kinds=(TransferKind.TOP_UP,))
    for page in ledger.transfer_pages(work, which):
        for transfer in page:
            reference = transfer.reference or ""
            if reference.split(":", 1)[0] in ("stripe", "alipay"):
                report.checks += 1
                if transfer.id not in known:
                    report.differences.append(
                        Difference(
                            "ledger_vs_payment",
                            f"top-up {transfer.id} ({reference})",
                            "a payment that succeeded",
                            "none",
                        )
                    )
    return report
