"""Random sequences of top-ups, credit grants, voucher redemptions, package purchases,
usage, charges, refunds and expiries keep every invariant, and verify agrees.

A Hypothesis state machine drives the service functions against a real database and
keeps a plain model: what the user's money is worth in total (cash + vouchers + credit -
debt), and what each package has left. After every step: no part of the balance is
negative, no package cycle used more than it holds, the total is the model's, and the
full `verify` report passes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from billfold import catalog, ledger, metering, parties, prepaid, subscriptions
from billfold.clock import TestClock
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.domain.errors import InsufficientFunds, InvalidRequest
from billfold.domain.ledger import TransferKind
from billfold.ledger.verify import verify_in
from tests.conftest import START, make_context
from tests.integration.helpers import run_machine

CENT = Decimal("0.01")
cents = st.integers(min_value=1, max_value=2_000).map(lambda n: n * CENT)


@dataclass
class Held:
    expires_at: datetime
    remaining: int


class PrepaidMachine(RuleBasedStateMachine):
    database_url: str
    home: Path

    def __init__(self) -> None:
        super().__init__()
        self.clock = TestClock(START)
        self.ctx: Context = make_context(self.database_url, self.home, self.clock)
        # Not id(self): examples share the database, and a later machine can be given an
        # earlier one's id (and with it that machine's codes and addresses).
        self.tag = uuid.uuid4().hex[:12]
        self.counter = 0
        self.total = Decimal(0)
        self.packages: list[Held] = []
        self.fees: dict[str, Decimal] = {}

    def _n(self) -> int:
        self.counter += 1
        return self.counter

    @initialize()
    def setup(self) -> None:
        tag = f"{self.tag}{self._n()}"
        provider = self.ctx.run(
            parties.create_provider, SYSTEM, name="P", email=f"p{tag}@p.io", commission_rate="0.3"
        )
        self.me = Principal("k", Role.PROVIDER, provider_id=provider.id)
        self.service = f"s{tag}"
        self.ctx.run(catalog.create_service, self.me, code=self.service, name="S")
        self.ctx.run(
            catalog.create_metric,
            self.me,
            self.service,
            code="calls",
            name="C",
            aggregation="count",
        )
        self.ctx.run(catalog.create_plan, self.me, {
            "code": f"plan{tag}", "service": self.service, "currency": "USD", "interval": "none",
            "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.01"}],
        })  # fmt: skip
        self.package = self.ctx.run(
            prepaid.create_package, self.me, code="p50", name="50 calls", service=self.service,
            currency_code="USD", price="2", quantities={"calls": "50"}, validity_days=5,
        ).id  # fmt: skip
        user = self.ctx.run(
            parties.create_user, SYSTEM, name="U", email=f"u{tag}@u.io", currency_code="USD"
        )
        self.user = user.id
        self.ctx.run(
            subscriptions.create, SYSTEM, user_ref=self.user, plan_code=None,
            service_code=self.service, start=None,
        )  # fmt: skip

    @rule(amount=cents)
    def top_up(self, amount: Decimal) -> None:
        self.ctx.run(parties.top_up, SYSTEM, self.user, amount=str(amount))
        self.total += amount

    @rule(amount=cents, days=st.none() | st.integers(min_value=1, max_value=8))
    def grant_credit(self, amount: Decimal, days: int | None) -> None:
        expires = None if days is None else self.clock.now() + timedelta(days=days)
        self.ctx.run(
            prepaid.grant_credit, SYSTEM, self.user, amount=str(amount), expires_at=expires,
            reason="promo",
        )  # fmt: skip
        self.total += amount

    @rule(amount=cents, days=st.none() | st.integers(min_value=1, max_value=8), own=st.booleans())
    def redeem_voucher(self, amount: Decimal, days: int | None, own: bool) -> None:
        code = f"V{self.tag}X{self._n()}"
        expires = None if days is None else self.clock.now() + timedelta(days=days)
        self.ctx.run(
            prepaid.create_coupon, self.me if own else SYSTEM, code=code, kind="amount",
            currency_code="USD", amount=str(amount), expires_at=expires,
        )  # fmt: skip
        self.ctx.run(prepaid.redeem, SYSTEM, self.user, code)
        self.total += amount

    @rule()
    def buy_package(self) -> None:
        try:
            holding = self.ctx.run(prepaid.buy_package, SYSTEM, self.user, self.package)
        except InsufficientFunds:
            assert self._available() < 2
            return
        except InvalidRequest as refused:  # In arrears (no grace by default): suspended.
            assert refused.code == "account_suspended"
            assert self.ctx.run(parties.get_balance, SYSTEM, self.user).receivable > 0
            return
        self.total -= 2
        self.packages.append(Held(holding.expires_at, 50))

    @rule(calls=st.integers(min_value=1, max_value=120))
    def use(self, calls: int) -> None:
        now = self.clock.now()
        n = self._n()
        result = metering.ingest(self.ctx, self.me, [
            {"id": f"e{n}-{i}", "user": self.user, "service": self.service, "metric": "calls",
             "timestamp": now.isoformat(), "value": "1"}
            for i in range(calls)
        ])  # fmt: skip
        assert result.accepted == calls, result.rejected
        left = calls
        for held in sorted(self.packages, key=lambda h: h.expires_at):
            if held.expires_at > now and left:
                take = min(held.remaining, left)
                held.remaining -= take
                left -= take
        self.total -= left * CENT

    @rule(amount=cents)
    def fee(self, amount: Decimal) -> None:
        try:
            done = self.ctx.run(
                parties.charge, self.me, user_ref=self.user, amount=str(amount),
                description="fee", service=self.service,
            )  # fmt: skip
        except InsufficientFunds:
            assert self._available() < amount
            return
        self.fees[done.transfer.id] = amount
        self.total -= amount

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        open_fees = sorted(f for f, left in self.fees.items() if left > 0)
        if not open_fees:
            return
        fee = data.draw(st.sampled_from(open_fees))
        part = data.draw(st.integers(min_value=1, max_value=int(self.fees[fee] / CENT))) * CENT
        before = self._expired()
        self.ctx.run(parties.refund, self.me, fee, amount=str(part))
        self.fees[fee] -= part
        # What goes back to a grant that has expired since goes on to its funder.
        self.total += part - (self._expired() - before)

    @rule(days=st.integers(min_value=0, max_value=4), hours=st.integers(min_value=0, max_value=23))
    def time_passes(self, days: int, hours: int) -> None:
        now = self.clock.advance(days=days, hours=hours)
        before = self._expired()
        self.ctx.run(lambda w: prepaid.expire_due(w, now=now))
        self.total -= self._expired() - before

    def _expired(self) -> Decimal:
        """What expiry transfers took from the user's grants, in dollars."""

        def read(work: object) -> int:
            kinds = prepaid.grant_accounts(work, self.user)  # type: ignore[arg-type]
            return -sum(
                p.amount
                for t in ledger.load_transfers(work, _expiry_transfer_ids(work, self.user))  # type: ignore[arg-type]
                for p in t.postings
                if p.account_id in kinds
            )

        return Decimal(self.ctx.read(read)) / 10**8

    def _available(self) -> Decimal:
        return self.ctx.run(parties.get_balance, SYSTEM, self.user).available

    @invariant()
    def books_hold(self) -> None:
        if not hasattr(self, "user"):
            return
        balance = self.ctx.run(parties.get_balance, SYSTEM, self.user)
        assert balance.vouchers >= 0 and balance.credits >= 0
        assert balance.posted - balance.held >= -balance.credit_limit
        worth = balance.cash + balance.vouchers + balance.credits - balance.receivable
        assert worth == self.total
        grants = self.ctx.run(prepaid.list_grants, SYSTEM, self.user, include_ended=True)
        assert all(g.remaining is None or g.remaining >= 0 for g in grants)
        for held in self.ctx.run(prepaid.list_holdings, SYSTEM, self.user):
            assert all(0 <= q <= 50 for q in held.used.values())
        report = self.ctx.read(verify_in)
        assert report.ok, [(c.name, c.problems) for c in report.checks if not c.ok]

    def teardown(self) -> None:
        self.ctx.db.dispose()


def _expiry_transfer_ids(work: object, user_id: str) -> set[str]:
    from sqlalchemy import select

    from billfold.store.ledger_tables import transfers

    return set(
        work.conn.execute(  # type: ignore[attr-defined]
            select(transfers.c.id).where(
                transfers.c.kind == str(TransferKind.EXPIRY), transfers.c.user_id == user_id
            )
        ).scalars()
    )


def _run(url: str, home: Path, examples: int) -> None:
    run_machine(PrepaidMachine, url, home, examples=examples, steps=20)


def test_random_prepaid_operations_keep_every_invariant(
    database_url: str, tmp_path: Path, backend: str
) -> None:
    _run(database_url, tmp_path, examples=20 if backend == "sqlite" else 8)
