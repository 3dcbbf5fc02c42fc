"""The ledger engine: posts transfers, keeps cached balances, manages holds.

Every function here works inside the caller's unit of work and never commits.

Concurrency. Every writer of the ledger, holds included, first locks the journal head
(one row, `_order.lock_journal`), then the accounts it touches, then the holds it
touches. The head lock orders all transfers (the hash chain needs a total order anyway),
which makes the duplicate-id check race-free and rules out deadlocks between writers,
also when one transaction of the group commit makes holds and transfers together. On
SQLite BEGIN IMMEDIATE already serialises writers; on PostgreSQL the locks are
`SELECT ... FOR UPDATE`. Throughput comes from batching: many transfers share one head
lock and one commit (`post_many`)."""

from billfold.ledger._accounts import (
    balance,
    balances,
    charge_accounts,
    ensure_account,
    find_account,
    set_floor,
)
from billfold.ledger._holds import (
    create_hold,
    expire_holds,
    get_hold,
    release_hold,
    void_hold,
)
from billfold.ledger._posting import (
    MAX_BATCH,
    POSTING_COLUMNS,
    TRANSFER_COLUMNS,
    post,
    post_many,
)
from billfold.ledger._queries import (
    EARNING_KINDS,
    AccountRef,
    Earning,
    TransferFilter,
    account_kinds,
    accounts_of,
    debtors,
    earnings,
    existing_ids,
    last_seq_on,
    postings_on,
    seq_of,
    seqs_touching,
    sum_postings,
    transfer_pages,
)
from billfold.ledger._records import (
    HoldView,
    PostedPosting,
    PostedTransfer,
    get_transfer,
    load_transfers,
    load_transfers_by_seq,
)
from billfold.ledger._reversals import (
    refund_spec,
    reversal_spec,
    reversed_so_far,
)
from billfold.ledger._standing import (
    Standing,
    user_balance,
    user_standing,
)

__all__ = [
    "EARNING_KINDS",
    "MAX_BATCH",
    "POSTING_COLUMNS",
    "TRANSFER_COLUMNS",
    "AccountRef",
    "Earning",
    "HoldView",
    "PostedPosting",
    "PostedTransfer",
    "Standing",
    "TransferFilter",
    "account_kinds",
    "accounts_of",
    "balance",
    "balances",
    "charge_accounts",
    "create_hold",
    "debtors",
    "earnings",
    "ensure_account",
    "existing_ids",
    "expire_holds",
    "find_account",
    "get_hold",
    "get_transfer",
    "last_seq_on",
    "load_transfers",
    "load_transfers_by_seq",
    "post",
    "post_many",
    "postings_on",
    "refund_spec",
    "release_hold",
    "reversal_spec",
    "reversed_so_far",
    "seq_of",
    "seqs_touching",
    "set_floor",
    "sum_postings",
    "transfer_pages",
    "user_balance",
    "user_standing",
    "void_hold",
]
