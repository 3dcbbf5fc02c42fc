"""The ledger engine: posts transfers, keeps cached balances, manages holds.

Every function here works inside the caller's unit of work and never commits.

Concurrency. The journal is one hash chain per shard of users (`_order`). Every writer
of the ledger, holds included, first locks the heads of the chains it appends to, lowest
first, then the accounts it touches by id, then the holds. A chain's head orders its
transfers (its hash chain needs a total order anyway), which makes the duplicate-id
check race-free (a transfer's chain follows from its content) and rules out deadlocks
between writers. The platform's and providers' accounts, which every user's charges
move, are parted by chain, so writers of different chains share no lock. On SQLite BEGIN
IMMEDIATE already serialises writers; on PostgreSQL the locks are `SELECT ... FOR
UPDATE`. Throughput comes from batching (many transfers share one lock and one commit,
`post_many`) and, past one process, from chains that commit side by side."""

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
from billfold.ledger._order import chain_count, chain_heads
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
    "chain_count",
    "chain_heads",
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
