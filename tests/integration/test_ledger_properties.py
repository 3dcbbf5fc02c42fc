"""Random sequences of ledger operations keep every invariant, and verify agrees.

A Hypothesis state machine drives top-ups, charges, holds, captures, voids, expiries and
refunds against a real database, keeping a plain model of what each balance must be.
After every step it checks the cached balances against the model and the floor, and
runs the full `verify` report.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from billfold import ledger
from billfold.clock import TestClock
from billfold.core.context import Context
from billfold.domain.errors import BillfoldError, Conflict, InsufficientFunds, NotFound
from billfold.domain.ledger import TransferKind
from billfold.ledger.verify import verify_in
from tests.conftest import START, make_context
from tests.integration.helpers import Books, charge_spec, open_books, run_machine, top_up_spec

FLOOR = -50
amounts = st.integers(min_value=1, max_value=400)


class LedgerMachine(RuleBasedStateMachine):
    database_url: str
    home: Path

    def __init__(self) -> None:
        super().__init__()
        self.clock = TestClock(START)
        self.ctx: Context = make_context(self.database_url, self.home, self.clock)
        # Not id(self): examples share the database, and a later machine can be given an
        # earlier one's id, and with it that machine's wallet and transfer ids.
        self.tag = uuid.uuid4().hex[:12]
        self.counter = 0
        self.model_posted = 0
        self.model_holds: dict[str, tuple[int, object]] = {}  # id -> (amount, expires_at)
        self.charges: dict[str, int] = {}  # id -> amount still refundable

    holds = Bundle("holds")

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.tag}-{self.counter}"

    @initialize()
    def open(self) -> None:
        self.books: Books = open_books(self.ctx, owner=f"u-{self.tag}", floor=FLOOR)

    def _post(self, spec):  # type: ignore[no-untyped-def]
        with self.ctx.db.unit_of_work() as uow:
            result = ledger.post(uow, spec, now=self.clock.now())
            uow.commit()
        return result

    def _available(self) -> int:
        now = self.clock.now()
        held = sum(a for a, exp in self.model_holds.values() if exp > now)  # type: ignore[operator]
        return self.model_posted - held - FLOOR

    @rule(amount=amounts)
    def top_up(self, amount: int) -> None:
        self._post(top_up_spec(self.books, amount, self._id("tu")))
        self.model_posted += amount

    @rule(amount=amounts)
    def charge(self, amount: int) -> None:
        spec = charge_spec(self.books, amount, self._id("ch"))
        self._lapse_model_holds()
        try:
            self._post(spec)
        except InsufficientFunds:
            assert amount > self._available()
            return
        assert amount <= self._available()
        self.model_posted -= amount
        self.charges[spec.id] = amount

    @rule(target=holds, amount=amounts, ttl=st.integers(min_value=1, max_value=120))
    def hold(self, amount: int, ttl: int) -> str:
        hold_id = self._id("h")
        now = self.clock.now()
        self._lapse_model_holds()
        available = self._available()
        with self.ctx.db.unit_of_work() as uow:
            try:
                ledger.create_hold(
                    uow,
                    hold_id=hold_id,
                    account_id=self.books.wallet,
                    amount=amount,
                    expires_at=now + timedelta(seconds=ttl),
                    now=now,
                )
                uow.commit()
            except InsufficientFunds:
                assert amount > available
                return hold_id
        assert amount <= available
        self.model_holds[hold_id] = (amount, now + timedelta(seconds=ttl))
        return hold_id

    @rule(hold_id=holds, fraction=st.integers(min_value=0, max_value=100))
    def capture(self, hold_id: str, fraction: int) -> None:
        pending = self.model_holds.get(hold_id)
        amount = max(1, (pending[0] if pending else 10) * fraction // 100)
        spec = charge_spec(self.books, amount, self._id("cap"), hold_id=hold_id)
        try:
            self._post(spec)
        except (Conflict, NotFound) as error:
            # Refused only when the hold is not pending: never made, spent, voided or lapsed.
            expired = pending is not None and pending[1] <= self.clock.now()  # type: ignore[operator]
            assert pending is None or expired, error
            return
        assert pending is not None and pending[1] > self.clock.now()  # type: ignore[operator]
        del self.model_holds[hold_id]
        self.model_posted -= amount
        self.charges[spec.id] = amount

    @rule(hold_id=holds)
    def void(self, hold_id: str) -> None:
        with self.ctx.db.unit_of_work() as uow:
            try:
                ledger.void_hold(uow, hold_id, now=self.clock.now())
                uow.commit()
            except BillfoldError:
                return
        self.model_holds.pop(hold_id, None)

    @rule(seconds=st.integers(min_value=1, max_value=90))
    def time_passes_and_holds_expire(self, seconds: int) -> None:
        now = self.clock.advance(seconds=seconds)
        with self.ctx.db.unit_of_work() as uow:
            ledger.expire_holds(uow, now=now)
            uow.commit()
        self._lapse_model_holds()

    def _lapse_model_holds(self) -> None:
        now = self.clock.now()
        for hold_id, (_, expires_at) in list(self.model_holds.items()):
            if expires_at <= now:  # type: ignore[operator]
                del self.model_holds[hold_id]

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        open_charges = sorted(cid for cid, left in self.charges.items() if left > 0)
        if not open_charges:
            return
        charge_id = data.draw(st.sampled_from(open_charges))
        amount = data.draw(st.integers(min_value=1, max_value=self.charges[charge_id]))
        with self.ctx.db.unit_of_work() as uow:
            original = ledger.get_transfer(uow, charge_id)
            spec = ledger.reversal_spec(
                uow,
                original=original,
                transfer_id=self._id("rf"),
                anchor_account_id=self.books.wallet,
                anchor_amount=amount,
                kind=TransferKind.REFUND,
                description="refund",
            )
            ledger.post(uow, spec, now=self.clock.now())
            uow.commit()
        self.charges[charge_id] -= amount
        self.model_posted += amount

    @invariant()
    def books_hold(self) -> None:
        if not hasattr(self, "books"):
            return
        with self.ctx.db.unit_of_work(read_only=True) as uow:
            wallet = ledger.balance(uow, self.books.wallet)
            report = verify_in(uow)
        assert wallet.posted == self.model_posted
        assert wallet.posted - wallet.held >= FLOOR
        assert report.ok, [(c.name, c.problems) for c in report.checks if not c.ok]

    def teardown(self) -> None:
        self.ctx.db.dispose()


def _run(url: str, home: Path, examples: int) -> None:
    run_machine(LedgerMachine, url, home, examples=examples, steps=25)


@pytest.fixture
def fresh_url(database_url: str) -> Iterator[str]:
    yield database_url


def test_random_operations_keep_every_invariant(
    fresh_url: str, tmp_path: Path, backend: str
) -> None:
    _run(fresh_url, tmp_path, examples=30 if backend == "sqlite" else 12)
