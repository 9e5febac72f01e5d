"""How a chain is checked: since the last verified record (appends), since the latest anchor
(`verify()`), or from genesis with every anchor (`verify(full=True)`).

Each check returns a finding (a sentence naming the first broken record or anchor) or None; the
caller decides whether it blocks. Nothing here writes, except :func:`write_anchor`, which the
caller runs under the head lock.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from llmops.ledger.anchors import Anchor, AnchorStoreError, signature_problem
from llmops.ledger.anchors import sign as sign_anchor
from llmops.ledger.chain import GENESIS, link_problem
from llmops.ledger.schema import ledger_anchor_state, ledger_events

if TYPE_CHECKING:
    from llmops.ledger.anchors import AnchorStore
    from llmops.ledger.keys import LedgerKeys


@dataclass(frozen=True)
class Outcome:
    problem: str | None
    records: int  # records known to chain correctly from genesis (or from the anchor)
    head_hash: str
    checked: int = 0
    anchors_checked: int = 0
    latest: Anchor | None = None


def recorded_anchor(conn: Any) -> int:
    """The number of the last anchor this database wrote (0: none)."""
    row = conn.execute(sa.select(ledger_anchor_state.c.n).where(ledger_anchor_state.c.id == 1)).first()
    return 0 if row is None else int(row.n)


def _lost(store: AnchorStore, recorded: int, found: int) -> str:
    return (
        f"the anchor store {store.location} lost anchors: this ledger wrote anchor {recorded}, "
        f"the store's latest is {found or 'none'}"
    )


def _chain(rows: Any, keys: LedgerKeys, prev_hash: str, expected: int) -> tuple[str | None, str, int, int]:
    """Walk rows from `expected` on: (problem, last good hash, next expected seq, rows checked)."""
    checked = 0
    for row in rows:
        problem = link_problem(row, expected, prev_hash, keys)
        if problem:
            return problem, prev_hash, expected, checked
        prev_hash, expected, checked = row.record_hash, expected + 1, checked + 1
    return None, prev_hash, expected, checked


def _head_problem(head_seq: int, head_hash: str, last_seq: int, last_hash: str) -> str | None:
    if head_seq != last_seq or head_hash != last_hash:
        return f"head points at seq {head_seq} but the chain ends at seq {last_seq}"
    return None


def since_last_verified(
    conn: Any, keys: LedgerKeys, verified_seq: int, verified_hash: str, head: Any
) -> str | None:
    """The cheap check before an append: the last verified record is unchanged, and every record
    after it chains from it up to the head."""
    rows = conn.execute(
        sa.select(ledger_events).where(ledger_events.c.seq >= verified_seq).order_by(ledger_events.c.seq)
    ).all()
    prev_hash, expected = GENESIS, 1
    if verified_seq:
        last = rows[0] if rows and rows[0].seq == verified_seq else None
        if (
            last is None
            or last.record_hash != verified_hash
            or link_problem(last, verified_seq, last.prev_hash, keys)
        ):
            return f"record seq {verified_seq} (the last verified) was altered or removed"
        prev_hash, expected, rows = verified_hash, verified_seq + 1, rows[1:]
    problem, prev_hash, expected, _ = _chain(rows, keys, prev_hash, expected)
    return problem or _head_problem(head.seq, head.record_hash, expected - 1, prev_hash)


def since_anchor(conn: Any, keys: LedgerKeys, store: AnchorStore, head_seq: int, head_hash: str) -> Outcome:
    """The latest anchor is intact and signed, its record still has the anchored hash, and the
    records after it chain up to the head: O(records since the anchor)."""
    recorded = recorded_anchor(conn)
    try:
        latest = store.latest()
    except AnchorStoreError as exc:
        return Outcome(f"anchor store {store.location}: {exc}", 0, GENESIS)
    prev_hash, expected = GENESIS, 1
    if latest is None and recorded:
        return Outcome(_lost(store, recorded, 0), 0, GENESIS)
    if latest is not None:
        problem = signature_problem(latest, keys)
        if problem is None and latest.n < recorded:
            problem = _lost(store, recorded, latest.n)
        if problem is None and latest.seq > head_seq:
            problem = f"anchor {latest.n} names seq {latest.seq} but the chain ends at seq {head_seq}"
        if problem is None:
            row = conn.execute(sa.select(ledger_events).where(ledger_events.c.seq == latest.seq)).first()
            if row is None or not hmac.compare_digest(str(row.record_hash), latest.record_hash):
                problem = (
                    f"record seq {latest.seq} no longer matches anchor {latest.n} (the chain was rewritten)"
                )
            else:
                problem = link_problem(row, latest.seq, row.prev_hash, keys)
        if problem:
            return Outcome(problem, 0, GENESIS, latest=latest)
        prev_hash, expected = latest.record_hash, latest.seq + 1
    rows = conn.execute(
        sa.select(ledger_events).where(ledger_events.c.seq >= expected).order_by(ledger_events.c.seq)
    )
    problem, prev_hash, expected, checked = _chain(rows, keys, prev_hash, expected)
    problem = problem or _head_problem(head_seq, head_hash, expected - 1, prev_hash)
    return Outcome(
        problem, expected - 1, prev_hash, checked=checked, anchors_checked=int(bool(latest)), latest=latest
    )


def full(conn: Any, keys: LedgerKeys, store: AnchorStore, head_seq: int, head_hash: str) -> Outcome:
    """Every record from genesis, then every anchor: numbered without gaps, chained, signed, and
    naming a record that still has the anchored hash."""
    try:
        anchors = store.all()
    except AnchorStoreError as exc:
        return Outcome(f"anchor store {store.location}: {exc}", 0, GENESIS)
    wanted = {a.seq for a in anchors}
    hashes: dict[int, str] = {}

    def rows() -> Any:
        for row in conn.execute(sa.select(ledger_events).order_by(ledger_events.c.seq)):
            if row.seq in wanted:
                hashes[row.seq] = row.record_hash
            yield row

    problem, prev_hash, expected, checked = _chain(rows(), keys, GENESIS, 1)
    count = expected - 1
    problem = problem or _head_problem(head_seq, head_hash, count, prev_hash)
    if problem is None:
        problem = _anchors_problem(anchors, keys, hashes, count) or (
            _lost(store, recorded_anchor(conn), len(anchors))
            if len(anchors) < recorded_anchor(conn)
            else None
        )
    latest = anchors[-1] if anchors else None
    return Outcome(problem, count, prev_hash, checked=checked, anchors_checked=len(anchors), latest=latest)


def _anchors_problem(
    anchors: list[Anchor], keys: LedgerKeys, hashes: dict[int, str], count: int
) -> str | None:
    prev_signature, prev_seq = "", 0
    for i, anchor in enumerate(anchors, 1):
        if anchor.n != i:
            return f"anchor {i} is missing from the store (found anchor {anchor.n} in its place)"
        problem = signature_problem(anchor, keys)
        if problem:
            return problem
        if anchor.prev_signature != prev_signature or anchor.seq < prev_seq:
            return f"anchor {anchor.n}: does not follow anchor {anchor.n - 1}"
        if anchor.seq > count:
            return f"anchor {anchor.n} names seq {anchor.seq} but the chain ends at seq {count}"
        if not hmac.compare_digest(hashes.get(anchor.seq, ""), anchor.record_hash):
            return f"record seq {anchor.seq} no longer matches anchor {anchor.n} (the chain was rewritten)"
        prev_signature, prev_seq = anchor.signature, anchor.seq
    return None


def write_anchor(
    conn: Any, keys: LedgerKeys, store: AnchorStore, head_seq: int, head_hash: str, latest: Anchor | None
) -> Anchor | None:
    """Anchor the head (already verified, under the head lock) unless the latest anchor names it."""
    if head_seq == 0 or (latest is not None and latest.seq == head_seq):
        return latest
    anchor = sign_anchor(
        keys,
        n=latest.n + 1 if latest else 1,
        seq=head_seq,
        record_hash=head_hash,
        prev_signature=latest.signature if latest else "",
    )
    store.append(anchor)
    values = {"n": anchor.n, "seq": anchor.seq, "signature": anchor.signature}
    updated = conn.execute(ledger_anchor_state.update().where(ledger_anchor_state.c.id == 1).values(**values))
    if not updated.rowcount:
        conn.execute(ledger_anchor_state.insert().values(id=1, **values))
    return anchor
