"""The ledger engine on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update

from billfold import ledger
from billfold.clock import TestClock
from billfold.core.context import Context
from billfold.domain.errors import Conflict, InsufficientFunds, InvalidRequest, NotFound
from billfold.domain.ledger import TransferKind
from billfold.ledger.verify import verify_in
from billfold.store.ledger_tables import (
    account_parts,
    accounts,
    ledger_chains,
    postings,
    transfers,
)
from tests.integration.helpers import Books, charge_spec, open_books, top_up_spec


def _post(ctx: Context, spec):  # type: ignore[no-untyped-def]
    with ctx.db.unit_of_work() as uow:
        result = ledger.post(uow, spec, now=ctx.clock.now())
        uow.commit()
    return result


def _balance(ctx: Context, account_id: int):  # type: ignore[no-untyped-def]
    with ctx.db.unit_of_work(read_only=True) as uow:
        return ledger.balance(uow, account_id)


def _verify(ctx: Context):  # type: ignore[no-untyped-def]
    with ctx.db.unit_of_work(read_only=True) as uow:
        return verify_in(uow)


def _broken(ctx: Context) -> set[str]:
    return {check.name for check in _verify(ctx).checks if not check.ok}


def test_charge_moves_money_and_splits_it(ctx: Context) -> None:
    books = open_books(ctx)
    _post(ctx, top_up_spec(books, 1000))
    posted = _post(ctx, charge_spec(books, 600))
    assert posted.amount_on(books.wallet) == -600
    assert _balance(ctx, books.wallet).posted == 400
    assert _balance(ctx, books.provider).posted == 480
    assert _balance(ctx, books.revenue).posted == 120
    assert _balance(ctx, books.cash).posted == -1000
    assert [p.balance_after for p in posted.postings if p.account_id == books.wallet] == [400]
    assert _verify(ctx).ok


def test_same_id_same_content_replays_and_different_content_conflicts(ctx: Context) -> None:
    books = open_books(ctx)
    first = _post(ctx, top_up_spec(books, 1000, "tu-1"))
    again = _post(ctx, top_up_spec(books, 1000, "tu-1"))
    assert again.replayed and again.seq == first.seq and not first.replayed
    assert _balance(ctx, books.wallet).posted == 1000
    with pytest.raises(Conflict):
        _post(ctx, top_up_spec(books, 999, "tu-1"))
    assert _balance(ctx, books.wallet).posted == 1000


def test_wallet_never_goes_below_its_floor(ctx: Context) -> None:
    books = open_books(ctx, floor=-500)
    _post(ctx, top_up_spec(books, 1000))
    _post(ctx, charge_spec(books, 1500))
    with pytest.raises(InsufficientFunds):
        _post(ctx, charge_spec(books, 1))
    assert _balance(ctx, books.wallet).posted == -500
    assert _verify(ctx).ok


def test_post_many_settles_each_transfer_on_its_own(ctx: Context) -> None:
    books = open_books(ctx)
    with ctx.db.unit_of_work() as uow:
        results = ledger.post_many(
            uow,
            [
                top_up_spec(books, 100, "a"),
                charge_spec(books, 60, "b"),
                charge_spec(books, 60, "c"),  # Refused: only 40 left.
                charge_spec(books, 40, "d"),
                top_up_spec(books, 100, "a"),  # The same transfer again in the batch: replay.
                top_up_spec(books, 5, "a"),  # The same id with other content: conflict.
            ],
            now=ctx.clock.now(),
        )
        uow.commit()
    kinds = [type(r).__name__ for r in results]
    assert kinds == [
        "PostedTransfer",
        "PostedTransfer",
        "InsufficientFunds",
        "PostedTransfer",
        "PostedTransfer",
        "Conflict",
    ]
    assert results[4].replayed  # type: ignore[union-attr]
    assert _balance(ctx, books.wallet).posted == 0
    assert _verify(ctx).ok


def test_holds_capture_void_and_expire(ctx: Context, clock: TestClock) -> None:
    books = open_books(ctx)
    _post(ctx, top_up_spec(books, 1000))
    now = clock.now()
    with ctx.db.unit_of_work() as uow:
        ledger.create_hold(
            uow,
            hold_id="h1",
            account_id=books.wallet,
            amount=700,
            expires_at=now + timedelta(minutes=5),
            now=now,
        )
        with pytest.raises(InsufficientFunds):
            ledger.create_hold(
                uow,
                hold_id="h2",
                account_id=books.wallet,
                amount=301,
                expires_at=now + timedelta(minutes=5),
                now=now,
            )
        uow.commit()
    wallet = _balance(ctx, books.wallet)
    assert (wallet.posted, wallet.held, wallet.available) == (1000, 700, 300)
    with pytest.raises(InsufficientFunds):
        _post(ctx, charge_spec(books, 301))
    # A partial capture charges 500 and releases all 700.
    captured = _post(ctx, charge_spec(books, 500, "cap-1", hold_id="h1"))
    assert captured.kind == TransferKind.CAPTURE
    wallet = _balance(ctx, books.wallet)
    assert (wallet.posted, wallet.held) == (500, 0)
    with pytest.raises(Conflict):
        _post(ctx, charge_spec(books, 10, "cap-2", hold_id="h1"))
    with ctx.db.unit_of_work() as uow:
        ledger.create_hold(
            uow,
            hold_id="h3",
            account_id=books.wallet,
            amount=200,
            expires_at=now + timedelta(minutes=5),
            now=now,
        )
        ledger.create_hold(
            uow,
            hold_id="h4",
            account_id=books.wallet,
            amount=100,
            expires_at=now + timedelta(minutes=1),
            now=now,
        )
        uow.commit()
    with pytest.raises(InvalidRequest):
        _post(ctx, charge_spec(books, 201, hold_id="h3"))  # More than the hold.
    with ctx.db.unit_of_work() as uow:
        assert ledger.void_hold(uow, "h3", now=now).status == "voided"
        assert ledger.void_hold(uow, "h3", now=now).status == "voided"  # Idempotent.
        uow.commit()
    clock.advance(minutes=2)
    with pytest.raises(Conflict, match="expired"):
        _post(ctx, charge_spec(books, 50, hold_id="h4"))
    with ctx.db.unit_of_work() as uow:
        assert ledger.expire_holds(uow, now=clock.now()) == 1
        assert ledger.get_hold(uow, "h4").status == "expired"
        uow.commit()
    assert _balance(ctx, books.wallet).held == 0
    assert _verify(ctx).ok


def test_new_hold_sweeps_the_accounts_lapsed_holds_first(ctx: Context, clock: TestClock) -> None:
    books = open_books(ctx)
    _post(ctx, top_up_spec(books, 100))
    now = clock.now()
    with ctx.db.unit_of_work() as uow:
        ledger.create_hold(
            uow,
            hold_id="old",
            account_id=books.wallet,
            amount=100,
            expires_at=now + timedelta(seconds=30),
            now=now,
        )
        uow.commit()
    later = clock.advance(minutes=1)
    with ctx.db.unit_of_work() as uow:
        hold = ledger.create_hold(
            uow,
            hold_id="new",
            account_id=books.wallet,
            amount=100,
            expires_at=later + timedelta(minutes=1),
            now=later,
        )
        uow.commit()
    assert hold.status == "pending"
    assert _verify(ctx).ok


def test_refunds_partial_then_the_rest_never_more(ctx: Context) -> None:
    books = open_books(ctx)
    _post(ctx, top_up_spec(books, 1000))
    charge = _post(ctx, charge_spec(books, 999, "ch", commission=333))
    with ctx.db.unit_of_work() as uow:
        for index, amount in enumerate([100, 100, 100]):
            spec = ledger.reversal_spec(
                uow,
                original=charge,
                transfer_id=f"rf{index}",
                anchor_account_id=books.wallet,
                anchor_amount=amount,
                kind=TransferKind.REFUND,
                description="refund",
            )
            ledger.post(uow, spec, now=ctx.clock.now())
        with pytest.raises(InvalidRequest):
            ledger.reversal_spec(
                uow,
                original=charge,
                transfer_id="too-much",
                anchor_account_id=books.wallet,
                anchor_amount=700,
                kind=TransferKind.REFUND,
                description=None,
            )
        rest = ledger.reversal_spec(
            uow,
            original=charge,
            transfer_id="rest",
            anchor_account_id=books.wallet,
            anchor_amount=699,
            kind=TransferKind.REFUND,
            description=None,
        )
        ledger.post(uow, rest, now=ctx.clock.now())
        uow.commit()
    # Fully refunded: everyone is back where they were before the charge.
    assert _balance(ctx, books.wallet).posted == 1000
    assert _balance(ctx, books.provider).posted == 0
    assert _balance(ctx, books.revenue).posted == 0
    assert _verify(ctx).ok


def test_reversing_a_spent_top_up_is_refused(ctx: Context) -> None:
    books = open_books(ctx)
    top_up = _post(ctx, top_up_spec(books, 100))
    _post(ctx, charge_spec(books, 100))
    with ctx.db.unit_of_work() as uow:
        spec = ledger.reversal_spec(
            uow,
            original=top_up,
            transfer_id="rev",
            anchor_account_id=books.wallet,
            anchor_amount=100,
            kind=TransferKind.REVERSAL,
            description="chargeback",
        )
        with pytest.raises(InsufficientFunds):
            ledger.post(uow, spec, now=ctx.clock.now())


def test_balance_as_of_a_past_instant(ctx: Context, clock: TestClock) -> None:
    books = open_books(ctx)
    t0 = clock.now()
    _post(ctx, top_up_spec(books, 1000))
    clock.advance(hours=1)
    t1 = clock.now()
    _post(ctx, charge_spec(books, 300))
    clock.advance(hours=1)
    with ctx.db.unit_of_work(read_only=True) as uow:
        assert ledger.balance(uow, books.wallet, as_of=t0 - timedelta(seconds=1)).posted == 0
        assert ledger.balance(uow, books.wallet, as_of=t0).posted == 1000
        assert ledger.balance(uow, books.wallet, as_of=t1 + timedelta(minutes=1)).posted == 700
        assert ledger.balance(uow, books.wallet).posted == 700


def test_unknown_accounts_and_holds_are_not_found(ctx: Context) -> None:
    books = open_books(ctx)
    with pytest.raises(NotFound):
        _post(ctx, charge_spec(Books(999, books.cash, books.provider, books.revenue), 1))
    with pytest.raises(NotFound):
        _post(ctx, charge_spec(books, 1, hold_id="nope"))


# --- tampering ------------------------------------------------------------------------


def _seeded(ctx: Context) -> Books:
    books = open_books(ctx)
    _post(ctx, top_up_spec(books, 1000, "t1"))
    _post(ctx, charge_spec(books, 100, "t2"))
    _post(ctx, charge_spec(books, 200, "t3"))
    assert _verify(ctx).ok
    return books


def _move_cache(ctx: Context, account_id: int, delta: int):  # type: ignore[no-untyped-def]
    """An edit of an account's cached balance: its row, or a parted account's one part
    (the seeded transfers are all of one user, so one chain)."""
    with ctx.db.unit_of_work(read_only=True) as uow:
        parted = uow.conn.execute(
            select(accounts.c.parted).where(accounts.c.id == account_id)
        ).scalar_one()
    if parted:
        return (
            update(account_parts)
            .where(account_parts.c.account_id == account_id)
            .values(posted=account_parts.c.posted + delta)
        )
    return (
        update(accounts).where(accounts.c.id == account_id).values(posted=accounts.c.posted + delta)
    )


def _tamper(ctx: Context, statement) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.unit_of_work() as uow:
        uow.conn.execute(statement)
        uow.commit()


def test_editing_a_posting_breaks_verify(ctx: Context) -> None:
    books = _seeded(ctx)
    _tamper(
        ctx,
        update(postings)
        .where(postings.c.account_id == books.provider, postings.c.amount == 80)
        .values(amount=90),
    )
    assert {"hash_chain", "transfers_balance", "cached_balances"} <= _broken(ctx)


def test_editing_a_balanced_pair_of_postings_still_breaks_the_chain(ctx: Context) -> None:
    books = _seeded(ctx)
    # A careful forger keeps the transfer balanced and the cache in step: the hash shows it.
    seq = select(transfers.c.seq).where(transfers.c.id == "t2").scalar_subquery()
    _tamper(
        ctx,
        update(postings)
        .where(postings.c.transfer_seq == seq, postings.c.account_id == books.provider)
        .values(amount=postings.c.amount - 10),
    )
    _tamper(
        ctx,
        update(postings)
        .where(postings.c.transfer_seq == seq, postings.c.account_id == books.revenue)
        .values(amount=postings.c.amount + 10),
    )
    _tamper(ctx, _move_cache(ctx, books.provider, -10))
    _tamper(ctx, _move_cache(ctx, books.revenue, 10))
    assert "hash_chain" in _broken(ctx)


def test_editing_a_description_breaks_the_chain(ctx: Context) -> None:
    _seeded(ctx)
    _tamper(ctx, update(transfers).where(transfers.c.id == "t2").values(description="edited"))
    assert _broken(ctx) == {"hash_chain"}


def test_deleting_a_transfer_breaks_verify(ctx: Context) -> None:
    _seeded(ctx)
    seq = select(transfers.c.seq).where(transfers.c.id == "t2").scalar_subquery()
    _tamper(ctx, delete(postings).where(postings.c.transfer_seq == seq))
    _tamper(ctx, delete(transfers).where(transfers.c.id == "t2"))
    assert "hash_chain" in _broken(ctx)


def test_deleting_the_last_transfer_and_rewinding_the_cache_breaks_verify(ctx: Context) -> None:
    books = _seeded(ctx)
    seq = select(transfers.c.seq).where(transfers.c.id == "t3").scalar_subquery()
    _tamper(ctx, delete(postings).where(postings.c.transfer_seq == seq))
    _tamper(ctx, delete(transfers).where(transfers.c.id == "t3"))
    for account_id, delta in ((books.wallet, 200), (books.provider, -160), (books.revenue, -40)):
        _tamper(ctx, _move_cache(ctx, account_id, delta))
    assert _broken(ctx) == {"hash_chain"}


def test_editing_a_cached_balance_breaks_verify(ctx: Context) -> None:
    books = _seeded(ctx)
    _tamper(ctx, update(accounts).where(accounts.c.id == books.wallet).values(posted=10**9))
    assert "cached_balances" in _broken(ctx)
    _tamper(ctx, update(ledger_chains).values(seq=99))
    assert "hash_chain" in _broken(ctx)


def test_an_account_created_in_a_rolled_back_transaction_is_not_remembered(ctx: Context) -> None:
    from billfold.domain.ledger import AccountKind, OwnerType

    now = ctx.clock.now()
    with ctx.db.unit_of_work() as uow:
        ledger.ensure_account(
            uow, OwnerType.PROVIDER, "ghost", AccountKind.PROVIDER_EARNINGS, "USD", now=now
        )
        # Rolled back on exit: the row was never committed.
    with ctx.db.unit_of_work() as uow:
        account_id = ledger.ensure_account(
            uow, OwnerType.PROVIDER, "ghost", AccountKind.PROVIDER_EARNINGS, "USD", now=now
        )
        assert (
            ledger.find_account(
                uow, OwnerType.PROVIDER, "ghost", AccountKind.PROVIDER_EARNINGS, "USD"
            )
            == account_id
        )
        uow.commit()
