"""The ledger's pure rules: balance, floors, splits, reversals, the hash chain."""

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billfold.domain.errors import InsufficientFunds, InvalidRequest
from billfold.domain.ledger import (
    GENESIS_HASH,
    Balance,
    Posting,
    apply_postings,
    chain_hash,
    check_hold,
    divide_half_up,
    reversal_postings,
    split_charge,
    validate_postings,
)


def test_postings_are_merged_per_account_and_zeros_dropped() -> None:
    result = validate_postings(
        [Posting(1, "USD", -5), Posting(1, "USD", -5), Posting(2, "USD", 10), Posting(3, "USD", 0)]
    )
    assert result == (Posting(1, "USD", -10), Posting(2, "USD", 10))


def test_a_transfer_needs_two_sides() -> None:
    with pytest.raises(InvalidRequest):
        validate_postings([Posting(1, "USD", 0), Posting(2, "USD", 0)])


def test_an_unbalanced_transfer_is_a_bug() -> None:
    with pytest.raises(AssertionError):
        validate_postings([Posting(1, "USD", -5), Posting(2, "USD", 4)])
    with pytest.raises(AssertionError):
        validate_postings([Posting(1, "USD", -5), Posting(2, "EUR", 5)])


def test_floor_is_enforced_on_debits_only() -> None:
    balances = {1: Balance(posted=100, held=30, floor=-10), 2: Balance(0, 0, None)}
    after = apply_postings(balances, [Posting(1, "USD", -80), Posting(2, "USD", 80)])
    assert after[1].posted == 20 and after[1].available == 0
    with pytest.raises(InsufficientFunds):
        apply_postings(balances, [Posting(1, "USD", -81), Posting(2, "USD", 81)])
    # An unbounded posting (debt collection) may pass the floor.
    after = apply_postings(
        balances, [Posting(1, "USD", -200), Posting(2, "USD", 200)], unbounded=frozenset({1})
    )
    assert after[1].posted == -100


def test_holds_reserve_available_funds() -> None:
    assert check_hold(Balance(100, 0, 0), 100).held == 100
    with pytest.raises(InsufficientFunds):
        check_hold(Balance(100, 50, 0), 51)


@given(st.integers(min_value=1, max_value=10**15), st.decimals(min_value=0, max_value=1, places=4))
def test_split_shares_always_add_up(amount: int, rate: Decimal) -> None:
    provider, platform = split_charge(amount, rate)
    assert provider + platform == amount
    assert 0 <= platform <= amount
    assert abs(Decimal(platform) - Decimal(amount) * rate) <= Decimal("0.5")


def test_split_of_ten_at_twenty_percent() -> None:
    assert split_charge(1_000_000_000, Decimal("0.20")) == (800_000_000, 200_000_000)


@given(
    st.integers(min_value=-(10**12), max_value=10**12), st.integers(min_value=1, max_value=10**9)
)
def test_divide_half_up_matches_decimal(numerator: int, denominator: int) -> None:
    expected = (Decimal(numerator) / Decimal(denominator)).quantize(Decimal(1), ROUND_HALF_UP)
    assert divide_half_up(numerator, denominator) == int(expected)


@given(
    st.integers(min_value=1, max_value=10**12),
    st.decimals(min_value=0, max_value=1, places=3),
    st.data(),
)
def test_partial_reversals_balance_and_give_back_the_anchor_exactly(
    amount: int, rate: Decimal, data: st.DataObject
) -> None:
    provider, platform = split_charge(amount, rate)
    original = validate_postings(
        [Posting(1, "USD", -amount), Posting(2, "USD", provider), Posting(3, "USD", platform)]
    )
    refund = data.draw(st.integers(min_value=1, max_value=amount))
    result = reversal_postings(original, 1, refund)
    assert sum(p.amount for p in result) == 0
    assert next(p.amount for p in result if p.account_id == 1) == refund
    for posting in result:
        if posting.account_id != 1:
            assert posting.amount <= 0


def test_chain_hash_depends_on_everything() -> None:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    base = {
        "prev_hash": GENESIS_HASH,
        "seq": 1,
        "transfer_id": "t",
        "kind": "charge",
        "posted_at": at,
        "digest": "d",
        "postings": [(1, "USD", -5), (2, "USD", 5)],
    }
    first = chain_hash(**base)  # type: ignore[arg-type]
    assert first == chain_hash(**base)  # type: ignore[arg-type]
    for change in (
        {"seq": 2},
        {"prev_hash": "1" * 64},
        {"digest": "e"},
        {"postings": [(1, "USD", -6), (2, "USD", 6)]},
    ):
        assert chain_hash(**{**base, **change}) != first  # type: ignore[arg-type]
