"""the journal as one hash chain per shard of users; hot accounts parted by chain

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 07:40:00.000000

The one journal head becomes chain 0 of CHAINS: every transfer so far stays where it is,
chain 0 at its own seq, so every hash verifies unchanged. The platform's and providers'
accounts keep their balance in part 0 of `account_parts` (docs/DECISIONS.md, 114).
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHAINS = 16
"""As many as the stream's default shards (BILLFOLD_STREAM_SHARDS), so each is one chain."""


def _genesis(chain: int) -> str:
    # billfold.domain.ledger.chain_genesis, as it was written when this ran.
    if chain == 0:
        return "0" * 64
    return hashlib.sha256(f"billfold journal chain {chain}".encode()).hexdigest()


def upgrade() -> None:
    bind = op.get_bind()
    chains = op.create_table(
        "ledger_chains",
        sa.Column("chain", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_ledger_chains")),
    )
    head = bind.execute(sa.text("SELECT seq, hash FROM ledger_head WHERE id = 1")).one()
    op.bulk_insert(
        chains,
        [{"chain": 0, "seq": head.seq, "hash": head.hash}]
        + [{"chain": n, "seq": 0, "hash": _genesis(n)} for n in range(1, CHAINS)],
    )
    op.drop_table("ledger_head")

    op.add_column("transfers", sa.Column("chain", sa.Integer(), nullable=False, server_default="0"))
    op.add_column(
        "transfers", sa.Column("chain_seq", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.execute("UPDATE transfers SET chain_seq = seq")
    op.create_index(
        "uq_transfers_chain_chain_seq", "transfers", ["chain", "chain_seq"], unique=True
    )
    op.add_column("postings", sa.Column("part", sa.Integer(), nullable=False, server_default="0"))

    op.add_column("accounts", sa.Column("parted", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE accounts SET parted = 1 WHERE owner_type IN ('platform', 'provider')")
    op.create_table(
        "account_parts",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("part", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("posted", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_parts_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "part", name=op.f("pk_account_parts")),
    )
    op.execute(
        "INSERT INTO account_parts (account_id, part, posted) "
        "SELECT id, 0, posted FROM accounts WHERE parted = 1"
    )
    op.execute("UPDATE accounts SET posted = 0 WHERE parted = 1")

    # The revenue folder keeps a mark per chain; its one mark so far is chain 0's.
    op.execute(
        "INSERT INTO analytics_state (name, value) "
        "SELECT 'revenue_chain.0', value FROM analytics_state WHERE name = 'revenue_seq'"
    )

    if bind.dialect.name == "postgresql":
        # Transfers are numbered as they are inserted, after every lock is held.
        op.execute("CREATE SEQUENCE transfer_seq")
        op.execute("SELECT setval('transfer_seq', COALESCE(MAX(seq), 0) + 1, false) FROM transfers")


def downgrade() -> None:
    """Back to one chain: every transfer chained again in journal order (the old hash,
    over `seq`), and each hot account's running balances summed over its parts again."""
    bind = op.get_bind()
    _one_chain(bind)
    if bind.dialect.name == "postgresql":
        op.execute("DROP SEQUENCE transfer_seq")
    op.execute(
        "UPDATE analytics_state SET value = COALESCE((SELECT s.value FROM analytics_state s "
        "WHERE s.name = 'revenue_chain.0'), value) WHERE name = 'revenue_seq'"
    )
    op.execute("DELETE FROM analytics_state WHERE name LIKE 'revenue_chain.%'")
    op.execute(
        "UPDATE accounts SET posted = posted + COALESCE((SELECT SUM(p.posted) "
        "FROM account_parts p WHERE p.account_id = accounts.id), 0)"
    )
    op.drop_table("account_parts")
    op.drop_column("accounts", "parted")
    op.drop_column("postings", "part")
    op.drop_index("uq_transfers_chain_chain_seq", table_name="transfers")
    op.drop_column("transfers", "chain_seq")
    op.drop_column("transfers", "chain")
    head = bind.execute(sa.text("SELECT COALESCE(MAX(seq), 0) AS seq FROM transfers")).one()
    last = bind.execute(
        sa.text("SELECT hash FROM transfers WHERE seq = :seq"), {"seq": head.seq}
    ).scalar()
    table = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_head")),
    )
    op.bulk_insert(table, [{"id": 1, "seq": head.seq, "hash": last or "0" * 64}])
    op.drop_table("ledger_chains")


def _one_chain(bind: sa.Connection) -> None:
    # The ledger's own code, for the hash and the stored dates as it reads them.
    from billfold.domain.ledger import GENESIS_HASH, chain_hash
    from billfold.store.ledger_tables import accounts, postings, transfers

    rows = bind.execute(
        sa.select(
            transfers.c.seq,
            transfers.c.id,
            transfers.c.kind,
            transfers.c.posted_at,
            transfers.c.digest,
        ).order_by(transfers.c.seq)
    ).all()
    if any(row.seq != n for n, row in enumerate(rows, 1)):
        raise RuntimeError(
            "the journal's numbers have gaps (transfers rolled back on PostgreSQL); "
            "one chain before 0018 cannot hold them"
        )
    legs: dict[int, list[tuple[int, str, int]]] = {}
    for leg in bind.execute(
        sa.select(
            postings.c.transfer_seq, postings.c.account_id, postings.c.currency, postings.c.amount
        )
    ):
        legs.setdefault(leg.transfer_seq, []).append((leg.account_id, leg.currency, leg.amount))
    chained, prev = [], GENESIS_HASH
    for row in rows:
        hash_ = chain_hash(
            prev_hash=prev,
            seq=row.seq,
            transfer_id=row.id,
            kind=row.kind,
            posted_at=row.posted_at,
            digest=row.digest,
            postings=legs.get(row.seq, []),
        )
        chained.append({"b_seq": row.seq, "b_prev": prev, "b_hash": hash_})
        prev = hash_
    if chained:
        bind.execute(
            sa.update(transfers)
            .where(transfers.c.seq == sa.bindparam("b_seq"))
            .values(prev_hash=sa.bindparam("b_prev"), hash=sa.bindparam("b_hash")),
            chained,
        )
    running: dict[int, int] = {}
    after = []
    for leg in bind.execute(
        sa.select(postings.c.id, postings.c.account_id, postings.c.amount)
        .join(accounts, accounts.c.id == postings.c.account_id)
        .where(accounts.c.parted != 0)
        .order_by(postings.c.account_id, postings.c.transfer_seq)
    ):
        running[leg.account_id] = running.get(leg.account_id, 0) + leg.amount
        after.append({"b_id": leg.id, "b_after": running[leg.account_id]})
    if after:
        bind.execute(
            sa.update(postings)
            .where(postings.c.id == sa.bindparam("b_id"))
            .values(balance_after=sa.bindparam("b_after")),
            after,
        )
