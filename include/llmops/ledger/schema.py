"""The ledger's tables (created fresh by `Ledger`; the state tables are added to older ledgers)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

ledger_events = sa.Table(
    "llmops_ledger_events",
    metadata,
    sa.Column(
        "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False
    ),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("recorded_at", sa.String(32), nullable=False),
    sa.Column("pipeline", sa.String(64), nullable=False, index=True),
    sa.Column("event_type", sa.String(64), nullable=False, index=True),
    sa.Column("subject", sa.String(255), nullable=False, index=True),
    sa.Column("run_id", sa.String(255), nullable=True, index=True),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("record_hash", sa.String(64), nullable=False),
    # The ledger key the record hash is an HMAC under (rotation: old rows keep their own).
    sa.Column("key_id", sa.String(64), nullable=False),
)

ledger_head = sa.Table(
    "llmops_ledger_head",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("record_hash", sa.String(64), nullable=False),
)


ledger_state = sa.Table(
    "llmops_ledger_state",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    # The last record known to chain correctly from genesis, and its hash; FOLLOWS_HEAD once the
    # head is that record (every append verifies before it moves the head, so no write is needed).
    sa.Column("verified_seq", sa.BigInteger(), nullable=False),
    sa.Column("verified_hash", sa.String(64), nullable=False),
    # Set when a check failed: what failed, and when; appends are refused while it is set.
    sa.Column("blocked", sa.Text(), nullable=True),
    sa.Column("blocked_at", sa.String(32), nullable=True),
)


# The last anchor this database wrote: the anchor store must hold it (or a later one), so an
# anchor removed from the store's end is found even though the anchors before it still verify.
ledger_anchor_state = sa.Table(
    "llmops_ledger_anchor_state",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("n", sa.BigInteger(), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("signature", sa.String(64), nullable=False),
)

FOLLOWS_HEAD = -1
