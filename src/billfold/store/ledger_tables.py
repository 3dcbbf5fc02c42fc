"""The ledger's tables: accounts and their parts, the journal's chains, transfers,
postings and holds.

They are apart from the rest of the schema so that an import contract can keep them the
ledger's own: only `billfold.ledger` (and the store itself, for migrations) imports
this module; every other feature reads the ledger through its functions.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from billfold.store.tables import ID, TRANSFER_ID, metadata
from billfold.store.types import UTCDateTime

# --- the ledger -----------------------------------------------------------------------

accounts = Table(
    "accounts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("owner_type", String(16), nullable=False),
    Column("owner_id", String(ID), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    # Cached balances: always equal to the sum of postings and the open holds, which
    # `billfold verify` checks. `floor` is the lowest posted - held may go (NULL: none).
    Column("posted", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    Column("floor", BigInteger, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # 1: a hot account shared by every user (the platform's, a provider's earnings). Its
    # balance lives in `account_parts`, one row per journal chain, so that chains never
    # wait for one row; `posted` and `held` here stay 0 (docs/DECISIONS.md, 114).
    Column("parted", Integer, nullable=False, server_default="0"),
    UniqueConstraint("owner_type", "owner_id", "kind", "currency"),
    CheckConstraint("held >= 0", name="held_not_negative"),
)

account_parts = Table(
    "account_parts",
    metadata,
    Column("account_id", BigInteger, ForeignKey("accounts.id"), primary_key=True),
    Column("part", Integer, primary_key=True, autoincrement=False),
    # The cached sum of the account's postings made in this chain.
    Column("posted", BigInteger, nullable=False),
)

ledger_chains = Table(
    "ledger_chains",
    metadata,
    # Each chain is a hash chain of its own transfers, in the order they committed.
    Column("chain", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

transfers = Table(
    "transfers",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("id", String(TRANSFER_ID), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("posted_at", UTCDateTime, nullable=False),
    Column("user_id", String(ID), nullable=True),
    Column("provider_id", String(ID), nullable=True),
    Column("service", String(100), nullable=True),
    Column("metric", String(100), nullable=True),
    Column("quantity", String(64), nullable=True),
    Column("description", String(500), nullable=True),
    Column("reference", String(255), nullable=True),
    Column("reverses", String(TRANSFER_ID), nullable=True, index=True),
    Column("hold_id", String(ID), nullable=True),
    Column("digest", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # Its chain and place in it: within a chain, places follow the commit order (the
    # chain's head is locked from numbering to commit); `seq` numbers all chains.
    Column("chain", Integer, nullable=False, server_default="0"),
    Column("chain_seq", BigInteger, nullable=False),
    Index("uq_transfers_chain_chain_seq", "chain", "chain_seq", unique=True),
    Index("ix_transfers_user_id_seq", "user_id", "seq"),
    Index("ix_transfers_provider_id_seq", "provider_id", "seq"),
    Index("ix_transfers_posted_at", "posted_at"),
)

postings = Table(
    "postings",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("transfer_seq", BigInteger, ForeignKey("transfers.seq"), nullable=False),
    Column("account_id", BigInteger, ForeignKey("accounts.id"), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    # The account's (or, for a parted account, the part's) balance after this posting.
    Column("balance_after", BigInteger, nullable=False),
    Column("part", Integer, nullable=False, server_default="0"),
    Index("ix_postings_account_id_transfer_seq", "account_id", "transfer_seq"),
    Index("ix_postings_transfer_seq", "transfer_seq"),
)

holds = Table(
    "holds",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("account_id", BigInteger, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("captured", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("capture_transfer_id", String(TRANSFER_ID), nullable=True),
    Column("user_id", String(ID), nullable=True),
    Column("provider_id", String(ID), nullable=True),
    Column("description", String(500), nullable=True),
    # For an authorization of usage: what it was for, so a capture can record the usage.
    Column("service", String(64), nullable=True),
    Column("metric", String(64), nullable=True),
    Column("quantity", String(64), nullable=True),
    Index("ix_holds_status_expires_at", "status", "expires_at"),
    Index("ix_holds_account_id_status", "account_id", "status"),
    CheckConstraint("amount >= 0", name="amount_not_negative"),
    CheckConstraint("captured >= 0 AND captured <= amount", name="captured_within_amount"),
)
