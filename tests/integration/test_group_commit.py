"""The group commit of money writes: requests that queue while a group is written are
written together, in one transaction, each still all or nothing with its own answer."""

from __future__ import annotations

import inspect
import re
import threading
from decimal import Decimal
from typing import Any

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from billfold import parties
from billfold.api.app import create_app
from billfold.core import audit
from billfold.core.access import SYSTEM
from billfold.core.context import Context, Work
from billfold.core.group_commit import SEPARATELY, GroupCommitter
from billfold.core.http import GROUPED_WRITES, write_unit
from billfold.domain.errors import InsufficientFunds, NotFound
from billfold.ledger.verify import verify
from billfold.store.ledger_tables import transfers
from billfold.store.tables import audit_log
from tests.integration.helpers import funded_user, metered_catalog

PAYG = {
    "code": "payg",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.1"}],
}


def _count(ctx: Context, table: Any) -> int:
    with ctx.work(read_only=True) as work:
        return int(work.conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_group_answers_each_request_alone(ctx: Context) -> None:
    """While the leader writes a first request, three more queue: they are written as
    one group in which one is refused, one fails unexpectedly and one succeeds."""
    user = funded_user(ctx, 0, "10")
    committer = GroupCommitter(ctx)
    entered, release = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def top_up(amount: str) -> Any:
        def run(work: Work) -> Any:
            return parties.top_up(work, SYSTEM, user, amount=amount)

        return run

    def slow_first(work: Work) -> Any:
        entered.set()
        release.wait(10)
        return parties.top_up(work, SYSTEM, user, amount="1")

    def refused(work: Work) -> Any:
        # It writes (an audit entry, a transfer) before it is refused: none of it stays.
        parties.top_up(work, SYSTEM, user, amount="100")
        raise InsufficientFunds("refused after writing")

    calls = {"broken": 0}

    def broken_once(work: Work) -> Any:
        calls["broken"] += 1
        parties.top_up(work, SYSTEM, user, amount="1000")
        if calls["broken"] == 1:
            raise RuntimeError("a deadlock, say")  # Run again alone: then it succeeds.
        return "second try"

    def submit(name: str, run: Any) -> None:
        try:
            results[name] = committer.submit(run)
        except Exception as error:
            results[name] = error

    audits, moves = _count(ctx, audit_log), _count(ctx, transfers)
    first = threading.Thread(target=submit, args=("first", slow_first))
    first.start()
    assert entered.wait(10)
    others = [
        threading.Thread(target=submit, args=(name, run))
        for name, run in (("ok", top_up("5")), ("refused", refused), ("broken", broken_once))
    ]
    for thread in others:
        thread.start()
    deadline = threading.Event()
    while len(committer._pending) < 3 and not deadline.wait(0.01):
        pass
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert isinstance(results["refused"], InsufficientFunds)
    assert results["broken"] == "second try" and calls["broken"] == 2
    assert results["ok"].amount == 5 and results["first"].amount == 1
    assert committer.groups == 1  # The three that queued went together (the first alone).
    # first, ok and broken (on its second try) wrote a transfer and an audit entry each;
    # the refused one's writes and entry were undone with its savepoint.
    assert _count(ctx, transfers) - moves == 3
    assert _count(ctx, audit_log) - audits == 3
    assert ctx.read(parties.get_balance, SYSTEM, user).posted == 10 + 1 + 5 + 1000
    assert ctx.read(verify, SYSTEM).ok
    assert not ctx.read(audit.broken_links)


def test_a_group_whose_commit_fails_is_written_again_one_by_one(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = funded_user(ctx, 0, "1")
    committer = GroupCommitter(ctx)
    entered, release = threading.Event(), threading.Event()
    results: list[Any] = []
    failures = {"left": 1}
    original = Work.commit

    def failing_commit(self: Work) -> None:
        if failures["left"] and len(committer._pending) == 0 and self.ctx is ctx:
            failures["left"] -= 1
            raise RuntimeError("the disk is full")
        original(self)

    def slow(work: Work) -> Any:
        entered.set()
        release.wait(10)
        return parties.top_up(work, SYSTEM, user, amount="1")

    def quick(work: Work) -> Any:
        return parties.top_up(work, SYSTEM, user, amount="2")

    threads = [threading.Thread(target=lambda: results.append(committer.submit(slow)))]
    threads[0].start()
    assert entered.wait(10)
    threads += [threading.Thread(target=lambda: results.append(committer.submit(quick)))
                for _ in range(3)]  # fmt: skip
    for thread in threads[1:]:
        thread.start()
    while len(committer._pending) < 3:
        threading.Event().wait(0.01)
    monkeypatch.setattr(Work, "commit", failing_commit)
    release.set()
    for thread in threads:
        thread.join(10)
    assert failures["left"] == 0  # The group's commit failed once ...
    assert sorted(r.amount for r in results) == [1, 2, 2, 2]  # ... and nobody noticed.
    assert ctx.read(parties.get_balance, SYSTEM, user).posted == 1 + 7
    assert ctx.read(verify, SYSTEM).ok


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):  # An included router.
            found += _api_routes(route.original_router.routes)
    return found


def test_the_grouped_writes_are_exactly_the_routes_that_group(ctx: Context) -> None:
    """The middleware leaves the Idempotency-Key of GROUPED_WRITES to the group: a route
    listed there must group its work (money writes) or claim the key with it (usage),
    and one that does must be listed."""
    app = create_app(ctx)
    grouped = set()
    for route in _api_routes(app.routes):
        if "POST" not in route.methods:
            continue
        sample = re.sub(r"\{[^}]+\}", "x1", route.path)
        source = inspect.getsource(route.endpoint)
        calls = any(
            f"{name}(" in source for name in ("grouped", "grouped_together", "pending_claim")
        )
        takes_write = any(d.call is write_unit for d in route.dependant.dependencies)
        assert bool(GROUPED_WRITES.match(sample)) == calls, route.path
        if calls:
            assert not takes_write, route.path
            grouped.add(route.path)
    assert grouped == {
        "/v1/authorizations",
        "/v1/authorizations/{auth_id}/capture",
        "/v1/authorizations/{auth_id}/void",
        "/v1/charges",
        "/v1/charges/{charge_id}/refunds",
        "/v1/events",
        "/v1/users/{user_id}/top-ups",
    }


class _TopUps:
    """A kind of job done together: top-ups of one user, with a switch that breaks them."""

    def __init__(self, user: str) -> None:
        self.user, self.calls, self.broken, self.apart = user, [], False, set()

    def many(self, work: Work, amounts: list[str]) -> list[Any]:
        self.calls.append(list(amounts))
        answers: list[Any] = []
        for amount in amounts:
            if amount in self.apart:
                answers.append(SEPARATELY)
            elif amount == "0":
                answers.append(InsufficientFunds("refused"))
            else:
                answers.append(parties.top_up(work, SYSTEM, self.user, amount=amount))
        if self.broken:
            raise RuntimeError("a deadlock, say")  # After writing: none of it may stay.
        return answers


def _group_of(
    ctx: Context, kind: _TopUps, amounts: list[str], *, groups: int = 1, plain: str = ""
) -> dict[str, Any]:
    """Each amount's result (or error), the jobs queued behind a slow one as one group;
    with `plain`, a job of no kind tops that amount up in the same group."""
    committer = GroupCommitter(ctx)
    entered, release = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def slow(work: Work) -> None:
        entered.set()
        release.wait(10)

    def alone(amount: str) -> Any:
        def run(work: Work) -> Any:
            if amount == "0":
                raise InsufficientFunds("refused")
            return ("alone", parties.top_up(work, SYSTEM, kind.user, amount=amount))

        return run

    def submit(amount: str) -> None:
        together = None if amount == plain else (kind, amount)
        try:
            results[amount] = committer.submit(alone(amount), together=together)
        except Exception as error:
            results[amount] = error

    first = threading.Thread(target=committer.submit, args=(slow,))
    first.start()
    assert entered.wait(10)
    asked = [*amounts, plain] if plain else amounts
    others = [threading.Thread(target=submit, args=(a,)) for a in asked]
    for thread in others:
        thread.start()
    while len(committer._pending) < len(asked):
        threading.Event().wait(0.01)
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert committer.groups == groups
    return results


def test_jobs_of_one_kind_are_done_together_each_with_its_own_answer(ctx: Context) -> None:
    user = funded_user(ctx, 0, "10")
    kind = _TopUps(user)
    kind.apart = {"3"}
    results = _group_of(ctx, kind, ["1", "0", "2", "3"])
    assert len(kind.calls) == 1 and sorted(kind.calls[0]) == ["0", "1", "2", "3"]
    assert results["1"].amount == 1 and results["2"].amount == 2
    assert isinstance(results["0"], InsufficientFunds)
    assert results["3"][0] == "alone"  # Left to run on its own, in the same group.
    assert ctx.read(parties.get_balance, SYSTEM, user).posted == 10 + 1 + 2 + 3
    assert ctx.read(verify, SYSTEM).ok


@pytest.mark.parametrize("plain", ["", "5"])
def test_jobs_done_together_that_fail_are_done_one_by_one(ctx: Context, plain: str) -> None:
    """The kind fails after writing: nothing it wrote stands, and each job runs its own
    way, with its own answer: in the same group when the group holds other jobs (the
    kind had a savepoint of its own), else each in a transaction of its own."""
    user = funded_user(ctx, 0, "10")
    kind = _TopUps(user)
    kind.broken = True
    audits = _count(ctx, audit_log)
    results = _group_of(ctx, kind, ["1", "0", "2"], plain=plain, groups=1 if plain else 0)
    assert len(kind.calls) == 1
    assert results["1"] == ("alone", results["1"][1]) and results["1"][1].amount == 1
    assert results["2"][0] == "alone" and isinstance(results["0"], InsufficientFunds)
    extra = 5 if plain else 0
    assert ctx.read(parties.get_balance, SYSTEM, user).posted == 10 + 1 + 2 + extra
    assert _count(ctx, audit_log) - audits == 2 + (1 if plain else 0)
    assert ctx.read(verify, SYSTEM).ok
    assert not ctx.read(audit.broken_links)


def test_charges_done_together_are_checked_each_against_what_the_others_left(
    ctx: Context,
) -> None:
    """Three charges of one wallet at once: each is checked against the balance the ones
    before it left, so the one that no longer fits is refused and writes nothing, and
    the third, which still fits, is charged; a stranger's charge is refused on its own."""
    me = metered_catalog(ctx, PAYG)
    user = funded_user(ctx, 0, "10")
    stranger = funded_user(ctx, 1, "10", customer_of=None)

    def asked(amount: str, who: str = user) -> parties.ChargeRequest:
        return parties.ChargeRequest(me, who, amount, "x", service="maps")

    audits = _count(ctx, audit_log)
    with ctx.work() as work:
        results = parties.charge_many(
            work, [asked("6"), asked("5"), asked("1", stranger), asked("4")]
        )
        work.commit()
    first, second, third, fourth = results
    assert not isinstance(first, Exception) and first.balance_after is None  # A provider's view.
    assert isinstance(second, InsufficientFunds)
    assert isinstance(third, NotFound) and third.code == "user_not_found"
    assert not isinstance(fourth, Exception) and fourth.amount == Decimal("-4")
    assert ctx.read(parties.get_balance, SYSTEM, user).posted == 0
    assert ctx.read(parties.get_balance, SYSTEM, stranger).posted == 10
    assert _count(ctx, audit_log) - audits == 2
    assert ctx.read(verify, SYSTEM).ok
