"""Double-entry ledger rules, as pure functions over immutable values.

A transfer moves money between accounts with two or more postings whose integer amounts
(ledger units, see `billfold.domain.money`) sum to zero per currency. Postings are never
changed; a mistake is corrected by a reversal, a new transfer with the opposite postings.

Sign convention: a posting adds its amount to the account's balance. A user's wallet
balance is what the platform owes the user, so a top-up is +amount on the wallet and
-amount on external cash; a charge is -amount on the wallet, + on provider earnings
and platform revenue.

Every committed transfer carries a SHA-256 hash over its content and the hash of the
transfer before it, so the journal is a chain: editing or deleting a row breaks it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Final

from billfold.domain.errors import InsufficientFunds, InvalidRequest
from billfold.domain.money import MAX_UNITS, MONEY_CONTEXT

GENESIS_HASH: Final = "0" * 64
MAX_POSTINGS: Final = 64


class AccountKind(StrEnum):
    WALLET = "wallet"
    RECEIVABLE = "receivable"
    PROVIDER_EARNINGS = "provider_earnings"
    PLATFORM_REVENUE = "platform_revenue"
    EXTERNAL_CASH = "external_cash"
    PROMOTIONAL_CREDITS = "promotional_credits"
    """A grant of promotional credit (owner: the grant), or the platform's cost of them."""
    VOUCHER = "voucher"
    """A redeemed voucher's sum (owner: the grant)."""
    TAXES = "taxes"


class OwnerType(StrEnum):
    USER = "user"
    PROVIDER = "provider"
    PLATFORM = "platform"
    GRANT = "grant"
    """A voucher or a promotional credit held by a user: one account per grant, so that
    each keeps its own scope and expiry."""


PLATFORM_OWNER_ID: Final = "platform"


class TransferKind(StrEnum):
    TOP_UP = "top_up"
    CHARGE = "charge"
    CAPTURE = "capture"
    REFUND = "refund"
    REVERSAL = "reversal"
    PAYOUT = "payout"
    INVOICE_PAYMENT = "invoice_payment"
    ADJUSTMENT = "adjustment"
    GRANT = "grant"
    """Promotional credit granted or a voucher redeemed: from its funder to the grant."""
    EXPIRY = "expiry"
    """What an expired grant had left, back to its funder."""


class HoldStatus(StrEnum):
    PENDING = "pending"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Posting:
    """One side of a transfer: `amount` ledger units added to an account's balance."""

    account_id: int
    currency: str
    amount: int


@dataclass(frozen=True, slots=True)
class TransferSpec:
    """A transfer as asked for: what moves where, and what it was for."""

    id: str
    kind: TransferKind
    postings: tuple[Posting, ...]
    user_id: str | None = None
    provider_id: str | None = None
    service: str | None = None
    metric: str | None = None
    quantity: str | None = None
    description: str | None = None
    reference: str | None = None
    reverses: str | None = None
    hold_id: str | None = None
    # Postings on these accounts may take them past their floor. Only debt collection
    # uses it (usage that already happened is a fact and is never dropped); nothing else may.
    unbounded_accounts: frozenset[int] = field(default_factory=frozenset)
    # Where the part of a debit that its account cannot cover goes (a user's receivable),
    # instead of the transfer being refused. Only usage that already happened uses it.
    overflow_account: int | None = None
    # Accounts this transfer may not take below zero, whatever their floor (a payout may
    # pay out only what a provider has earned, though refunds may later take it lower).
    covered_accounts: frozenset[int] = field(default_factory=frozenset)
    # Floors of this transfer's own, (account, floor): a postpaid user's receivable has
    # no floor (usage that happened is owed, however much), but a charge decided now may
    # not take what the user owes past the credit limit.
    limits: tuple[tuple[int, int], ...] = ()
    # Accounts that pay the payer's debit before the payer does, in order, each as far as
    # it can (a user's vouchers in scope, then its promotional credits). How much each
    # pays is decided under the ledger's locks; the posted transfer names the parts.
    sources: tuple[int, ...] = ()
    payer: int | None = None

    def content(self) -> tuple[object, ...]:
        """The fields that make two requests for the same transfer id the same transfer."""
        return (
            self.id,
            str(self.kind),
            tuple(sorted((p.account_id, p.currency, p.amount) for p in self.postings)),
            self.user_id,
            self.provider_id,
            self.service,
            self.metric,
            self.quantity,
            self.description,
            self.reference,
            self.reverses,
            self.hold_id,
        )

    def digest(self) -> str:
        return _sha256(_canonical(self.content()))


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's cached balance: posted money, money held for open holds, and its floor."""

    posted: int
    held: int
    floor: int | None

    @property
    def available(self) -> int | None:
        """What may still be spent or held; None where the account has no floor."""
        if self.floor is None:
            return None
        return self.posted - self.held - self.floor


def validate_postings(postings: Sequence[Posting]) -> tuple[Posting, ...]:
    """Merges postings per account, drops zeros, and checks the double-entry rules."""
    merged: dict[tuple[int, str], int] = defaultdict(int)
    for posting in postings:
        merged[(posting.account_id, posting.currency)] += posting.amount
    result = tuple(
        Posting(account_id, cur, amount)
        for (account_id, cur), amount in sorted(merged.items())
        if amount != 0
    )
    if len(result) < 2:
        raise InvalidRequest(
            "a transfer needs at least two non-zero postings", code="empty_transfer"
        )
    if len(result) > MAX_POSTINGS:
        raise InvalidRequest(f"a transfer may have at most {MAX_POSTINGS} postings")
    totals: dict[str, int] = defaultdict(int)
    for posting in result:
        if abs(posting.amount) >= MAX_UNITS:
            raise InvalidRequest("a posting amount is too large", code="amount_too_large")
        totals[posting.currency] += posting.amount
    unbalanced = {cur: total for cur, total in totals.items() if total != 0}
    # Callers build postings in code, so an unbalanced transfer is a bug, not bad input.
    assert not unbalanced, f"postings do not sum to zero: {unbalanced}"
    return result


def apply_postings(
    balances: Mapping[int, Balance],
    postings: Iterable[Posting],
    *,
    unbounded: frozenset[int] = frozenset(),
    covered: frozenset[int] = frozenset(),
    limits: Mapping[int, int] | None = None,
) -> dict[int, Balance]:
    """The new balances of the accounts the postings touch; refuses any that would take an
    account past its floor. Accounts not touched are left out, so the cost does not grow
    with the number of accounts in `balances`."""
    after: dict[int, Balance] = {}
    for posting in postings:
        before = after.get(posting.account_id) or balances[posting.account_id]
        new = Balance(before.posted + posting.amount, before.held, before.floor)
        if abs(new.posted) >= MAX_UNITS:
            raise InvalidRequest("the balance would be too large", code="amount_too_large")
        if (
            posting.amount < 0
            and new.floor is not None
            and posting.account_id not in unbounded
            and new.posted - new.held < new.floor
        ):
            raise InsufficientFunds(
                "the balance cannot cover this amount", code="insufficient_funds"
            )
        if posting.amount < 0 and posting.account_id in covered and new.posted - new.held < 0:
            raise InsufficientFunds(
                "the balance cannot cover this amount", code="insufficient_funds"
            )
        if (
            limits
            and posting.amount < 0
            and posting.account_id in limits
            and new.posted - new.held < limits[posting.account_id]
        ):
            raise InsufficientFunds(
                "the charge would take what is owed past the credit limit",
                code="insufficient_funds",
            )
        after[posting.account_id] = new
    return after


def check_hold(balance: Balance, amount: int, *, limit: int | None = None) -> Balance:
    """The balance with `amount` more held; refuses a hold that the balance cannot cover
    (down to its floor, or to `limit` where one is given: a postpaid user's receivable)."""
    assert amount >= 0
    new = Balance(balance.posted, balance.held + amount, balance.floor)
    floor = new.floor if limit is None else limit
    if floor is not None and new.posted - new.held < floor:
        raise InsufficientFunds("the balance cannot cover this hold", code="insufficient_funds")
    return new


def split_charge(amount: int, commission_rate: Decimal) -> tuple[int, int]:
    """Splits a charge into (provider share, platform commission), in ledger units.

    The commission is rounded half-up to a whole ledger unit and the provider gets the
    rest, so the two shares always add up to the charge exactly.
    """
    assert Decimal(0) <= commission_rate <= Decimal(1)
    commission = int(
        (Decimal(amount) * commission_rate).to_integral_value(ROUND_HALF_UP, MONEY_CONTEXT)
    )
    return amount - commission, commission


def commission_in_force(plan_rate: Decimal | None, provider_rate: Decimal) -> Decimal:
    """The platform's share of a charge: the plan's commission rate where the plan sets
    one, else the provider's."""
    return provider_rate if plan_rate is None else plan_rate


@dataclass(frozen=True, slots=True)
class ChargeAccounts:
    """The accounts of one charge: who pays, who earns, and where its tax goes."""

    payer: int
    revenue: int
    earnings: int | None = None
    """The provider's earnings; None for a charge of the platform's own."""
    taxes: int | None = None
    overflow: int | None = None
    """Where the part the payer cannot cover goes (a prepaid user's receivable), for
    usage that already happened; None: a charge the payer cannot cover is refused."""
    sources: tuple[int, ...] = ()
    """Accounts that pay before the payer, in order (vouchers in scope, then credits)."""
    happened: bool = False
    """Usage that already happened, paid by a payer with no floor (a postpaid user's
    receivable): charged in full, past any hold that was made for it."""
    payer_limit: int | None = None
    """How low this charge may take the payer (a postpaid user's receivable: minus the
    credit limit); None: the payer's own floor, if any."""


def charge_transfer(
    accounts: ChargeAccounts,
    *,
    transfer_id: str,
    kind: TransferKind,
    currency: str,
    amount: int,
    commission_rate: Decimal,
    tax: int = 0,
    user_id: str | None = None,
    provider_id: str | None = None,
    service: str | None = None,
    metric: str | None = None,
    quantity: str | None = None,
    description: str | None = None,
    reference: str | None = None,
    hold_id: str | None = None,
    discount: tuple[int, int] | None = None,
) -> TransferSpec:
    """Every charge's transfer: the payer pays `amount + tax`; the provider's share and
    the platform's commission split `amount` (split_charge), and the tax goes to taxes.

    A negative amount (a correction, a credit) gives back in the same proportions. Usage,
    captures, subscription fees, invoice settlement and one-off charges all use this.

    `discount` is (the account that funds it, units): a coupon's discount, paid by the
    platform's promotions or by the provider's earnings, so that the payer pays that
    much less while the provider's share and the commission stay those of `amount`.
    What the payer still owes is drawn first from `accounts.sources`, under the locks.
    """
    assert tax == 0 or accounts.taxes is not None, "a taxed charge needs a taxes account"
    off = 0
    postings = []
    if discount is not None and amount > 0:
        funder, off = discount
        assert 0 <= off <= amount
        postings.append(Posting(funder, currency, -off))
    postings.append(Posting(accounts.payer, currency, -(amount + tax - off)))
    if accounts.earnings is not None:
        share, commission = split_charge(abs(amount), commission_rate)
        sign = 1 if amount >= 0 else -1
        postings.append(Posting(accounts.earnings, currency, sign * share))
        postings.append(Posting(accounts.revenue, currency, sign * commission))
    else:
        postings.append(Posting(accounts.revenue, currency, amount))
    if tax and accounts.taxes is not None:
        postings.append(Posting(accounts.taxes, currency, tax))
    return TransferSpec(
        id=transfer_id,
        kind=kind,
        postings=tuple(p for p in postings if p.amount),
        user_id=user_id,
        provider_id=provider_id,
        service=service,
        metric=metric,
        quantity=quantity,
        description=description,
        reference=reference,
        hold_id=hold_id,
        overflow_account=accounts.overflow,
        unbounded_accounts=frozenset({accounts.payer}) if accounts.happened else frozenset(),
        limits=() if accounts.payer_limit is None else ((accounts.payer, accounts.payer_limit),),
        sources=accounts.sources if amount + tax - off > 0 else (),
        payer=accounts.payer,
    )


def spec_amount(spec: TransferSpec, account_id: int | None) -> int:
    """What a transfer as asked for moves on one account (0 for None or an untouched one)."""
    return sum(p.amount for p in spec.postings if p.account_id == account_id)


def divide_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half away from zero, exactly, in integers."""
    assert denominator != 0
    sign = -1 if (numerator < 0) != (denominator < 0) else 1
    quotient, remainder = divmod(abs(numerator), abs(denominator))
    if remainder * 2 >= abs(denominator):
        quotient += 1
    return sign * quotient


def reversal_postings(
    original: Sequence[Posting], anchor_account_id: int, anchor_amount: int
) -> tuple[Posting, ...]:
    """Opposite postings that move `anchor_amount` on the anchor account, the rest in proportion.

    A full reversal (anchor_amount equal and opposite to the original anchor posting)
    negates every posting exactly. A partial one scales the other postings by the same
    fraction, rounded half-up, and the largest of them absorbs the rounding remainder so
    the reversal still sums to zero per currency.
    """
    original_anchor = sum(p.amount for p in original if p.account_id == anchor_account_id)
    assert original_anchor != 0 and abs(anchor_amount) <= abs(original_anchor)
    assert (anchor_amount < 0) != (original_anchor < 0), "a reversal moves money back"
    result = [
        Posting(
            p.account_id,
            p.currency,
            anchor_amount
            if p.account_id == anchor_account_id
            else divide_half_up(p.amount * anchor_amount, original_anchor),
        )
        for p in original
    ]
    totals: dict[str, int] = defaultdict(int)
    for posting in result:
        totals[posting.currency] += posting.amount
    for cur, remainder in totals.items():
        if remainder == 0:
            continue
        index = max(
            (
                i
                for i, p in enumerate(result)
                if p.currency == cur and p.account_id != anchor_account_id
            ),
            key=lambda i: abs(result[i].amount),
        )
        target = result[index]
        result[index] = Posting(target.account_id, cur, target.amount - remainder)
    return tuple(result)


def shard_of(key: str, shards: int) -> int:
    """A stable shard of a user (or provider) id: the same on every machine and in every
    process (never Python's hash()). The stream's subjects and the journal's chains both
    use it, so a worker's shard is one chain of the ledger (docs/DECISIONS.md, 114)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % shards


def chain_of(user_id: str | None, provider_id: str | None, chains: int) -> int:
    """The journal chain of a transfer (or hold): its user's shard, so that one user's
    transfers are one chain, in order; else its provider's; chain 0 for the platform's."""
    key = user_id or provider_id
    return 0 if not key else shard_of(key, chains)


def chain_genesis(chain: int) -> str:
    """What a chain's first entry chains to. Chain 0 keeps the journal's original genesis,
    so a ledger from before the chains verifies unchanged; every other chain has its own,
    so an entry moved from one chain to another does not verify."""
    if chain == 0:
        return GENESIS_HASH
    return _sha256(f"billfold journal chain {chain}".encode())


def chain_hash(
    *,
    prev_hash: str,
    seq: int,
    transfer_id: str,
    kind: str,
    posted_at: datetime,
    digest: str,
    postings: Iterable[tuple[int, str, int]],
) -> str:
    """The hash of one journal entry, chained to the entry before it."""
    body = (
        prev_hash,
        seq,
        transfer_id,
        kind,
        posted_at.isoformat(),
        digest,
        tuple(sorted(postings)),
    )
    return _sha256(_canonical(body))


def _canonical(value: tuple[object, ...]) -> bytes:
    # The repr of a tuple of str, int and None is deterministic and unambiguous (strings
    # are quoted and escaped), and several times faster than canonical JSON.
    return repr(value).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def draw_from_sources(spec: TransferSpec, balances: Mapping[int, Balance]) -> TransferSpec:
    """The transfer with its payer's debit paid first by its sources, in order, each as far
    as its available balance goes; the payer pays the rest. Called under the locks."""
    if not spec.sources or spec.payer is None:
        return spec
    debit = -spec_amount(spec, spec.payer)
    moved: list[Posting] = []
    currency = next(p.currency for p in spec.postings if p.account_id == spec.payer)
    for source in spec.sources:
        if debit <= 0:
            break
        available = balances[source].available
        take = min(debit, max(available or 0, 0))
        if take:
            moved += [Posting(source, currency, -take), Posting(spec.payer, currency, take)]
            debit -= take
    postings = validate_postings([*spec.postings, *moved]) if moved else spec.postings
    return replace(spec, postings=postings, sources=())


def refund_postings(
    original: Sequence[Posting],
    left: Mapping[int, int],
    payers: frozenset[int],
    amount: int,
) -> tuple[Posting, ...]:
    """The postings that give `amount` back to the payers of a transfer, each in proportion
    to what it still has to get back (`left`, per account, of the original's postings),
    and take it back from the other accounts in the same proportion.

    A refund of everything left gives back exactly what is left on every account. The
    parts are rounded half-up; the rounding remainder goes to the part with the most room,
    so no account ever gets back more than it paid or gives back more than it received.
    """
    total = sum(-left[p.account_id] for p in original if p.account_id in payers)
    assert 0 < amount <= total
    if amount == total:
        return tuple(
            Posting(p.account_id, p.currency, -left[p.account_id])
            for p in original
            if left[p.account_id]
        )
    parts = {p.account_id: divide_half_up(-left[p.account_id] * amount, total) for p in original}
    for group, target in ((payers, amount), (None, None)):
        ids = [
            p.account_id
            for p in original
            if (p.account_id in payers) == (group is payers) and left[p.account_id]
        ]
        want = target if target is not None else -sum(parts[i] for i in payers if i in parts)
        remainder = want - sum(parts[i] for i in ids)
        while remainder:
            step = 1 if remainder > 0 else -1
            room = [
                i
                for i in ids
                if abs(parts[i] + step) <= abs(left[i])
                and (parts[i] + step == 0 or (parts[i] + step > 0) == (-left[i] > 0))
            ]
            assert room, "a refund that cannot be split"
            best = max(room, key=lambda i: abs(left[i]) - abs(parts[i]))
            parts[best] += step
            remainder -= step
    currency = {p.account_id: p.currency for p in original}
    return tuple(Posting(i, currency[i], v) for i, v in parts.items() if v)
