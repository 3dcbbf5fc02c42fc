"""Postpaid users owe each invoice until money for it arrives; credit never pays one.

The cycle on SQLite and PostgreSQL: usage, finalization (open, with what it asks for),
payments by each route (cash from the wallet on request or by choice, an operator's
bank transfer, partial and full), the credit limit reached by unbilled usage and open
invoices together, overdue invoices into the graded arrears, and the repair of invoices
that older versions paid from the credit line. `verify` and `reconcile` pass throughout.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import update

from billfold import arrears, catalog, ledger, metering, parties, prepaid, subscriptions
from billfold.authorizations import authorize, entitlements
from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.core.directory import BalanceView
from billfold.domain.errors import Conflict, InsufficientFunds, InvalidRequest, NotFound
from billfold.domain.ledger import AccountKind, OwnerType, Posting, TransferKind, TransferSpec
from billfold.domain.money import currency, to_units
from billfold.invoicing import aging, billing, invoices, reopen_paid_from_credit
from billfold.ledger.verify import verify
from billfold.parties.profile import get_profile, set_profile
from billfold.settlement import commission_report, reconcile, statements
from billfold.store.tables import invoices as invoice_rows

DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)
DUE = to_units(Decimal(35), currency("USD"))  # November's invoice, in ledger units.


def _platform(ctx: Context, *, free: str = "1000", fee: str = "30") -> Principal:
    provider = ctx.run(
        parties.create_provider, SYSTEM, name="Maps Inc", email="p@p.io", commission_rate="0.2"
    )
    me = Principal("k", Role.PROVIDER, provider_id=provider.id)
    ctx.run(catalog.create_service, me, code="maps", name="Maps")
    ctx.run(catalog.create_metric, me, "maps", code="calls", name="API calls", aggregation="count")
    ctx.run(
        catalog.create_plan,
        me,
        {
            "code": "monthly",
            "name": "Monthly",
            "service": "maps",
            "currency": "USD",
            "interval": "month",
            "interval_count": 1,
            "fixed_fee": fee,
            "fee_timing": "advance",
            "charges": [
                {"metric": "calls", "model": "per_unit", "unit_price": "0.002", "free_units": free}
            ],
        },
    )
    return me


def _postpaid(ctx: Context, credit_limit: str = "500") -> str:
    user = ctx.run(
        parties.create_user,
        SYSTEM,
        name="Ada",
        email="ada@example.com",
        currency_code="USD",
        billing_mode="postpaid",
        credit_limit=credit_limit,
    )
    ctx.run(subscriptions.create, SYSTEM, user_ref=user.id, plan_code="monthly")
    return user.id


def _use(ctx: Context, me: Principal, user: str, calls: int, tag: str) -> None:
    event = {"id": tag, "user": user, "service": "maps", "metric": "calls", "value": str(calls)}
    assert metering.ingest(ctx, me, [event]).accepted == 1


def _november(ctx: Context, user: str) -> invoices.InvoiceView:
    found = ctx.run(invoices.list_for, SYSTEM, user=user, limit=10)[0]
    return min(found, key=lambda v: v.period_start)


def _balance(ctx: Context, user: str) -> BalanceView:
    return ctx.run(parties.get_balance, SYSTEM, user)


def _sound(ctx: Context) -> None:
    assert ctx.run(verify, SYSTEM).ok
    report = ctx.run(reconcile, "2026-11")
    assert report.ok, report.differences


def test_a_finalized_postpaid_invoice_is_open_until_money_arrives(
    ctx: Context, clock: TestClock
) -> None:
    me = _platform(ctx)
    user = _postpaid(ctx)
    _use(ctx, me, user, 3500, "e1")  # 1,000 free, then 2,500 at 0.002 = 5.00.
    clock.set(DEC_1)
    billing.bill_run(ctx)
    inv = _november(ctx, user)
    assert (inv.status, inv.total, inv.amount_paid, inv.amount_due) == (
        "open",
        Decimal("35.00"),
        Decimal(0),
        Decimal("35.00"),
    )
    # Nothing was drawn on the credit line: the wallet holds no cash and is not below
    # zero; the receivable says what is owed (November, and December's fee in advance).
    balance = _balance(ctx, user)
    assert balance.posted == 0 and balance.receivable == Decimal(65)
    assert balance.available == Decimal(500 - 65)
    _sound(ctx)

    # Paying from a wallet with no cash is refused and changes nothing.
    with pytest.raises(InsufficientFunds):
        ctx.run(invoices.pay, SYSTEM, inv.id)
    assert ctx.run(invoices.get, SYSTEM, inv.id).status == "open"

    # An operator records a bank transfer: part of it, then more than is left (refused).
    part = ctx.run(
        invoices.record_payment,
        SYSTEM,
        inv.id,
        amount="10.00",
        method="bank_transfer",
        reference="BANK-REF-1",
        transfer_id="tr_bank_1",
    )
    assert (part.invoice_status, part.amount_due) == ("open", Decimal(25))
    again = ctx.run(
        invoices.record_payment,
        SYSTEM,
        inv.id,
        amount="10.00",
        method="bank_transfer",
        reference="BANK-REF-1",
        transfer_id="tr_bank_1",
    )
    assert again.id == part.id  # A retried request records nothing twice.
    with pytest.raises(Conflict):
        ctx.run(
            invoices.record_payment,
            SYSTEM,
            inv.id,
            amount="11.00",
            method="cheque",
            reference="BANK-REF-1",
            transfer_id="tr_bank_1",
        )
    with pytest.raises(InvalidRequest) as too_much:
        ctx.run(
            invoices.record_payment, SYSTEM, inv.id, amount="25.01", method="cheque",
            reference="CHQ-9",
        )  # fmt: skip
    assert too_much.value.code == "payment_exceeds_amount_due"
    for bad in (
        {"amount": "0", "method": "cheque", "reference": "x"},
        {"amount": "-5", "method": "cheque", "reference": "x"},
        {"amount": "1.001", "method": "cheque", "reference": "x"},
        {"amount": "1", "method": "cash_in_a_bag", "reference": "x"},
        {"amount": "1", "method": "cheque", "reference": "  "},
        {"amount": "1", "method": "cheque", "reference": "a\x00b"},
    ):
        with pytest.raises(InvalidRequest):
            ctx.run(invoices.record_payment, SYSTEM, inv.id, **bad)
    assert ctx.run(invoices.get, SYSTEM, inv.id).amount_due == Decimal(25)
    assert _balance(ctx, user).receivable == Decimal(55)

    # Cash from the wallet: not enough yet, then enough on request.
    ctx.run(parties.top_up, SYSTEM, user, amount="20")
    with pytest.raises(InsufficientFunds):
        ctx.run(invoices.pay, SYSTEM, inv.id)
    ctx.run(parties.top_up, SYSTEM, user, amount="10")
    assert ctx.run(invoices.get, SYSTEM, inv.id).status == "open"  # Not chosen: it waits.
    paid = ctx.run(invoices.pay, SYSTEM, inv.id)
    assert (paid.status, paid.amount_paid, paid.amount_due) == (
        "paid",
        Decimal(35),
        Decimal(0),
    )
    balance = _balance(ctx, user)
    assert (balance.posted, balance.receivable) == (Decimal(5), Decimal(30))
    listed = ctx.run(invoices.payments_of, SYSTEM, inv.id)
    assert [(p.method, p.amount) for p in listed] == [("bank_transfer", Decimal(10))]
    with pytest.raises(Conflict):  # A paid invoice takes no more payments.
        ctx.run(invoices.record_payment, SYSTEM, inv.id, amount="1", method="other", reference="r")
    _sound(ctx)


def test_autopay_pays_open_invoices_from_cash_oldest_first(ctx: Context, clock: TestClock) -> None:
    me = _platform(ctx)
    user = _postpaid(ctx)
    _use(ctx, me, user, 3500, "e1")
    clock.set(DEC_1)
    billing.bill_run(ctx)
    inv = _november(ctx, user)
    profile = ctx.run(set_profile, Principal("u", Role.USER, user_id=user), user, {
        "autopay_invoices": True, "company": "Ada Ltd", "tax_number": "GB123",
    })  # fmt: skip
    assert profile.autopay_invoices and profile.get("company") == "Ada Ltd"
    assert ctx.run(invoices.get, SYSTEM, inv.id).status == "open"  # No cash yet.
    ctx.run(parties.top_up, SYSTEM, user, amount="20")  # Less than the invoice: it waits.
    assert ctx.run(invoices.get, SYSTEM, inv.id).amount_due == Decimal(35)
    ctx.run(parties.top_up, SYSTEM, user, amount="15")
    assert ctx.run(invoices.get, SYSTEM, inv.id).status == "paid"
    assert _balance(ctx, user).posted == 0
    # The profile is encrypted at rest, shown to the user and an admin, never a provider.
    assert ctx.run(get_profile, SYSTEM, user).get("tax_number") == "GB123"
    with pytest.raises(NotFound):
        ctx.run(get_profile, me, user)
    with pytest.raises(NotFound):
        ctx.run(set_profile, me, user, {"autopay_invoices": False})
    other = ctx.run(
        parties.create_user, SYSTEM, name="Bo", email="bo@example.com", currency_code="USD"
    )
    with pytest.raises(Exception) as refused:
        ctx.run(get_profile, Principal("o", Role.USER, user_id=other.id), user)
    assert getattr(refused.value, "status", 404) in (403, 404)
    with pytest.raises(InvalidRequest):
        ctx.run(set_profile, SYSTEM, user, {"fapiao_tax_number": "not-a-tax-id"})
    _sound(ctx)


def test_the_credit_limit_bounds_unbilled_usage_and_open_invoices(
    ctx: Context, clock: TestClock
) -> None:
    me = _platform(ctx, free="0")
    user = _postpaid(ctx, credit_limit="40")  # The advance fee, 30, is owed at once.

    def auth(amount: str) -> str:
        return ctx.run(authorize, me, user_ref=user, amount=amount).status

    assert auth("15") == "declined"  # 30 owed + 15 > 40.
    assert auth("10") == "approved"  # Held on the receivable: 30 + 10 = 40.
    with pytest.raises(InsufficientFunds):  # A one-off charge decided now is refused.
        ctx.run(parties.charge, me, user_ref=user, amount="0.01", description="setup")
    assert _balance(ctx, user).available == 0
    seen = ctx.run(entitlements, me, user, "maps")
    assert (seen.has_access, seen.reason) == (False, "insufficient_funds")
    # Usage that already happened is a fact: charged past the limit, never dropped.
    _use(ctx, me, user, 5000, "late")  # 10.00
    assert _balance(ctx, user).receivable == Decimal(40)
    clock.set(DEC_1)
    billing.bill_run(ctx)
    inv = _november(ctx, user)
    assert (inv.status, inv.amount_due) == ("open", Decimal(40))
    # Money arriving for the open invoice gives the headroom back.
    ctx.run(
        invoices.record_payment, SYSTEM, inv.id, amount="40", method="bank_transfer",
        reference="REF-40",
    )  # fmt: skip
    assert ctx.run(invoices.get, SYSTEM, inv.id).status == "paid"
    assert _balance(ctx, user).available == Decimal(40 - 30)  # December's fee is owed.
    assert auth("10") == "approved"
    _sound(ctx)


def test_an_overdue_postpaid_invoice_walks_the_arrears_until_paid(
    ctx: Context, clock: TestClock
) -> None:
    ctx.settings.arrears_grace_hours = 48
    me = _platform(ctx)
    user = _postpaid(ctx)
    _use(ctx, me, user, 3500, "e1")
    clock.set(DEC_1)
    billing.bill_run(ctx)
    inv = _november(ctx, user)
    assert inv.due_at is not None and inv.due_at > DEC_1
    assert arrears.review(ctx)["grace"] == 0  # Open but not due: not in arrears.
    assert ctx.run(entitlements, me, user, "maps").has_access
    # Owing unbilled usage and an invoice not yet due is no debt: a package may be bought.
    package = ctx.run(prepaid.create_package, me, code="calls-1k", name="1,000 calls",
                      service="maps", currency_code="USD", price="1",
                      quantities={"calls": "1000"}, validity_days=30, reset="none")  # fmt: skip
    ctx.run(prepaid.buy_package, SYSTEM, user, package.id)
    rows = ctx.run(aging, by="user")
    assert [(r.party, r.buckets["current"]) for r in rows] == [(user, DUE)]
    clock.set(inv.due_at + timedelta(hours=1))
    assert arrears.review(ctx)["grace"] == 1
    seen = ctx.run(entitlements, me, user, "maps")
    assert (seen.has_access, seen.reason) == (True, "arrears_grace")
    rows = ctx.run(aging, by="user")
    assert rows[0].buckets["1_30"] == DUE
    by_provider = ctx.run(aging, by="provider")
    assert [(r.party, r.total) for r in by_provider] == [(me.provider_id, DUE)]
    # Statements and the commission report tell invoiced from paid.
    (statement,) = ctx.run(statements, SYSTEM, me.provider_id, "2026-11")
    assert (statement.receivable, statement.overdue) == (DUE, DUE)
    (row,) = ctx.run(commission_report, SYSTEM, "2026-11")
    assert row.receivable == DUE
    clock.set(inv.due_at + timedelta(hours=49))
    assert arrears.review(ctx)["suspended"] == 1
    assert ctx.run(entitlements, me, user, "maps").reason == "suspended"
    assert ctx.run(authorize, me, user_ref=user, amount="1").reason == "suspended"
    with pytest.raises(InvalidRequest) as refused:  # Overdue past grace: it is.
        ctx.run(prepaid.buy_package, SYSTEM, user, package.id)
    assert refused.value.code == "account_suspended"
    clock.set(inv.due_at + timedelta(days=45))
    assert ctx.run(aging, by="user")[0].buckets["31_60"] == DUE
    ctx.run(
        invoices.record_payment, SYSTEM, inv.id, amount="35", method="bank_transfer",
        reference="LATE-1",
    )  # fmt: skip
    assert ctx.run(entitlements, me, user, "maps").has_access
    assert arrears.review(ctx)["cleared"] == 1
    assert ctx.run(aging, by="user") == []
    _sound(ctx)


def _pay_from_credit_the_old_way(ctx: Context, user: str, invoice_id: str, cash: int) -> None:
    """What versions before 0015 did at finalization: the wallet (floor -credit_limit)
    paid the whole invoice, cash or not, and the invoice was marked paid."""
    with ctx.work() as work:
        now = work.clock.now()
        wallet = ledger.ensure_account(
            work, OwnerType.USER, user, AccountKind.WALLET, "USD", now=now
        )
        receivable = ledger.ensure_account(
            work, OwnerType.USER, user, AccountKind.RECEIVABLE, "USD", now=now
        )
        ledger.set_floor(work, wallet, -100 * DUE)
        ledger.post(
            work,
            TransferSpec(
                id=f"tr_old_{invoice_id}",
                kind=TransferKind.INVOICE_PAYMENT,
                postings=(Posting(wallet, "USD", -DUE), Posting(receivable, "USD", DUE)),
                user_id=user,
                description="Payment of invoice (old)",
                reference=invoice_id,
            ),
            now=now,
        )
        work.conn.execute(
            update(invoice_rows)
            .where(invoice_rows.c.id == invoice_id)
            .values(status="paid", amount_paid=DUE, paid_at=now)
        )
        work.commit()
    del cash


@pytest.mark.parametrize("cash", ["0", "10"])
def test_invoices_paid_from_credit_are_reopened(ctx: Context, clock: TestClock, cash: str) -> None:
    me = _platform(ctx)
    user = _postpaid(ctx)
    _use(ctx, me, user, 3500, "e1")
    clock.set(DEC_1)
    billing.bill_run(ctx)
    inv = _november(ctx, user)
    if cash != "0":
        ctx.run(parties.top_up, SYSTEM, user, amount=cash)
    _pay_from_credit_the_old_way(ctx, user, inv.id, int(cash))
    assert ctx.run(invoices.get, SYSTEM, inv.id).status == "paid"
    assert _balance(ctx, user).posted == Decimal(cash) - 35
    owed_before = _balance(ctx, user).receivable

    done = reopen_paid_from_credit(ctx)
    assert done["invoices_reopened"] == 1
    fixed = ctx.run(invoices.get, SYSTEM, inv.id)
    # What the cash paid stays paid; what credit "paid" is owed again.
    assert (fixed.status, fixed.amount_paid, fixed.amount_due) == (
        "open",
        Decimal(cash),
        Decimal(35) - Decimal(cash),
    )
    balance = _balance(ctx, user)
    assert balance.posted == 0
    assert balance.receivable == owed_before + 35 - Decimal(cash)
    assert reopen_paid_from_credit(ctx) == {}  # Safe to repeat.
    _sound(ctx)
    # The wallet now holds cash only: paying again from it is refused.
    with pytest.raises(InsufficientFunds):
        ctx.run(invoices.pay, SYSTEM, inv.id)


def test_many_concurrent_authorizations_and_payments_on_postgres(
    pg_ctx: Context, clock: TestClock
) -> None:
    """32 authorizations race for a postpaid user's credit; 8 operators record payments
    of one invoice at once: the credit limit and the amount due both hold."""
    ctx = pg_ctx
    me = _platform(ctx, free="0", fee="30")
    user = _postpaid(ctx, credit_limit="100")  # 30 owed: 70 of headroom.
    start = threading.Barrier(32)

    def one(i: int) -> str:
        start.wait()
        return ctx.run(authorize, me, user_ref=user, amount="10").status

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    assert results.count("approved") == 7
    balance = _balance(ctx, user)
    assert balance.available == 0
    assert ctx.run(verify, SYSTEM).ok

    clock.set(DEC_1)
    billing.bill_run(ctx)
    inv = _november(ctx, user)
    assert inv.amount_due == Decimal(30)
    gate = threading.Barrier(8)

    def pay(i: int) -> str:
        gate.wait()
        try:
            ctx.run(
                invoices.record_payment, SYSTEM, inv.id, amount="10", method="bank_transfer",
                reference=f"R{i}",
            )  # fmt: skip
        except InvalidRequest:
            return "refused"
        except Conflict:
            return "paid already"
        return "recorded"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(pay, range(8)))
    assert outcomes.count("recorded") == 3
    final = ctx.run(invoices.get, SYSTEM, inv.id)
    assert (final.status, final.amount_paid) == ("paid", Decimal(30))
    assert len(ctx.run(invoices.payments_of, SYSTEM, inv.id)) == 3
    assert ctx.run(verify, SYSTEM).ok


def test_reconcile_finds_money_taken_without_its_invoice_knowing(
    ctx: Context, clock: TestClock
) -> None:
    me = _platform(ctx)
    user = _postpaid(ctx)
    _use(ctx, me, user, 3500, "e1")
    clock.set(DEC_1)
    billing.bill_run(ctx)
    inv = _november(ctx, user)
    _pay_from_credit_the_old_way(ctx, user, inv.id, 0)
    _pay_from_credit_the_old_way(ctx, user, f"{inv.id}-twice", 0)  # The receivable is up 70.
    with ctx.work() as work:
        work.conn.execute(
            update(invoice_rows)
            .where(invoice_rows.c.id == inv.id)
            .values(status="open", amount_paid=0, paid_at=None)
        )
        work.commit()
    # The receivable now owes 30 (December's fee) + 35 - 70 < the 35 the invoice asks for.
    report = ctx.run(reconcile, "2026-11")
    assert [d.check for d in report.differences] == ["receivable_vs_open_invoices"]
