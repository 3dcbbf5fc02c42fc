"""Reversals: giving back all or part of a transfer in proportion to its postings."""

from __future__ import annotations

from sqlalchemy import func, select

from billfold.domain.errors import (
    InvalidRequest,
)
from billfold.domain.ledger import (
    Posting,
    TransferKind,
    TransferSpec,
    refund_postings,
    reversal_postings,
)
from billfold.ledger._records import PostedTransfer
from billfold.store.db import UnitOfWork
from billfold.store.ledger_tables import postings, transfers

# --- reversals ------------------------------------------------------------------------


def reversed_so_far(uow: UnitOfWork, original_id: str) -> dict[int, int]:
    """Per account, the sum of the postings of every reversal of `original_id`."""
    rows = uow.conn.execute(
        select(postings.c.account_id, func.sum(postings.c.amount))
        .select_from(postings.join(transfers, postings.c.transfer_seq == transfers.c.seq))
        .where(transfers.c.reverses == original_id)
        .group_by(postings.c.account_id)
    ).all()
    return {int(account_id): int(total) for account_id, total in rows}


def reversal_spec(
    uow: UnitOfWork,
    *,
    original: PostedTransfer,
    transfer_id: str,
    anchor_account_id: int,
    anchor_amount: int,
    kind: TransferKind,
    description: str | None,
    reference: str | None = None,
) -> TransferSpec:
    """A transfer that gives back `anchor_amount` on the anchor account, the rest in proportion.

    The anchor is the posting being refunded (a user's wallet for a charge). Every other
    posting of the original is reversed in the same proportion, rounded half-up; the
    reversal that completes the original gives back exactly what is left per account,
    so repeated partial refunds never give back more than the original moved.
    """
    original_anchor = original.amount_on(anchor_account_id)
    assert original_anchor != 0
    done = reversed_so_far(uow, original.id)
    left_on_anchor = -original_anchor - done.get(anchor_account_id, 0)
    if anchor_amount <= 0:
        raise InvalidRequest("the amount must be greater than zero", param="amount")
    if abs(anchor_amount) > abs(left_on_anchor):
        raise InvalidRequest(
            "the amount is more than is left to refund on this transfer",
            code="refund_exceeds_original",
            param="amount",
        )
    sign = 1 if left_on_anchor > 0 else -1
    originals = [Posting(p.account_id, p.currency, p.amount) for p in original.postings]
    if anchor_amount == abs(left_on_anchor):
        result = tuple(
            Posting(p.account_id, p.currency, -p.amount - done.get(p.account_id, 0))
            for p in originals
        )
    else:
        result = reversal_postings(originals, anchor_account_id, sign * anchor_amount)
    return TransferSpec(
        id=transfer_id,
        kind=kind,
        postings=result,
        user_id=original.user_id,
        provider_id=original.provider_id,
        service=original.service,
        metric=original.metric,
        description=description,
        reference=reference,
        reverses=original.id,
    )


def refund_spec(
    uow: UnitOfWork,
    *,
    original: PostedTransfer,
    transfer_id: str,
    payers: frozenset[int],
    amount: int,
    description: str | None,
    reference: str | None = None,
) -> TransferSpec:
    """A refund of `amount` to the accounts that paid a charge (`payers`: the wallet, the
    receivable, the vouchers and credit it was drawn from), each in proportion to what it
    still has to get back; the provider, the platform and a discount's funder give back in
    the same proportion. Refunding all that is left gives back exactly what is left."""
    if amount <= 0:
        raise InvalidRequest("the amount must be greater than zero", param="amount")
    done = reversed_so_far(uow, original.id)
    left = {p.account_id: p.amount + done.get(p.account_id, 0) for p in original.postings}
    total = -sum(left[a] for a in payers)
    if amount > total:
        raise InvalidRequest(
            "the amount is more than is left to refund on this transfer",
            code="refund_exceeds_original",
            param="amount",
        )
    originals = [Posting(p.account_id, p.currency, p.amount) for p in original.postings]
    return TransferSpec(
        id=transfer_id,
        kind=TransferKind.REFUND,
        postings=refund_postings(originals, left, payers, amount),
        user_id=original.user_id,
        provider_id=original.provider_id,
        service=original.service,
        metric=original.metric,
        description=description,
        reference=reference,
        reverses=original.id,
    )
