"""Governance ledger: an append-only, hash-chained record of every governed event.

Each record carries the hash of the record before it, so editing or deleting any row breaks the
chain at that point and `verify()` names it. Appends are serialised per database (a lock on a
single head row) so concurrent tasks cannot fork the chain. Event ids are deterministic: a retried
task that records the same event again is a no-op, never a duplicate.

Tamper stops the pipelines: every append first checks the records written since the last verified
point (usually none: the previous append verified its own), and a chain that fails any check blocks
every later append - so every run - until an operator has restored it and `llmops ledger-verify
--unblock` finds the whole chain sound again.

Keyed and anchored: record hashes are HMACs under the ledger key (:mod:`llmops.ledger.chain`,
:mod:`llmops.ledger.keys`), and `verify()` writes a signed anchor of the head to a store outside
the database (:mod:`llmops.ledger.anchors`), also every ``LLMOPS_LEDGER_ANCHOR_EVERY`` appends.
`verify()` checks the rows since the latest anchor and that the anchored row still matches it;
`verify(full=True)` checks the chain from genesis and every anchor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

import llmops.ledger.verification as verification
from llmops.errors import PermanentError, safe_error_text
from llmops.ledger.anchors import AnchorStore, anchor_store_for
from llmops.ledger.chain import GENESIS, canonical, record_hash
from llmops.ledger.clean import clean_payload
from llmops.ledger.keys import LedgerKeys, resolve_ledger_keys
from llmops.ledger.schema import (
    FOLLOWS_HEAD,
    ledger_events,
    ledger_head,
    ledger_state,
    metadata,
)

log = logging.getLogger(__name__)

ANCHOR_EVERY_ENV = "LLMOPS_LEDGER_ANCHOR_EVERY"
DEFAULT_ANCHOR_EVERY = 100


class LedgerIntegrityError(PermanentError, RuntimeError):
    """The chain does not verify: a record was edited, removed or inserted out of band."""


class LedgerBlocked(LedgerIntegrityError):
    """A failed verification blocks appends until an operator restores the chain and unblocks it."""


@dataclass(frozen=True)
class LedgerRecord:
    seq: int
    event_id: str
    recorded_at: str
    pipeline: str
    event_type: str
    subject: str
    run_id: str | None
    actor: str
    payload: dict[str, Any]
    prev_hash: str
    record_hash: str
    key_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "recorded_at": self.recorded_at,
            "pipeline": self.pipeline,
            "event_type": self.event_type,
            "subject": self.subject,
            "run_id": self.run_id,
            "actor": self.actor,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "record_hash": self.record_hash,
            "key_id": self.key_id,
        }


_canonical = canonical


def event_id_for(pipeline: str, event_type: str, subject: str, run_id: str | None) -> str:
    return hashlib.sha256(_canonical([pipeline, event_type, subject, run_id]).encode()).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    head_hash: str
    problem: str | None = None
    # Rows whose hash was recomputed (incremental: those since the latest anchor).
    checked: int = 0
    full: bool = False
    anchors_checked: int = 0
    anchored_seq: int | None = None


class Ledger:
    def __init__(self, url: str, *, keys: LedgerKeys | None = None, anchors: AnchorStore | None = None):
        self.url = url
        self._keys = keys
        self._anchors = anchors
        self.anchor_every = int(os.environ.get(ANCHOR_EVERY_ENV, DEFAULT_ANCHOR_EVERY))
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"timeout": 60}
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True, connect_args=connect_args)
        if self.engine.dialect.name == "sqlite":
            self._make_sqlite_transactions_immediate()
        metadata.create_all(self.engine, checkfirst=True)
        self._check_schema()
        self._ensure_head()

    @property
    def keys(self) -> LedgerKeys:
        """Resolved on first use: a reader of other tables in this database needs no key."""
        if self._keys is None:
            self._keys = resolve_ledger_keys()
        return self._keys

    @property
    def anchors(self) -> AnchorStore:
        if self._anchors is None:
            self._anchors = anchor_store_for(self.url)
        return self._anchors

    def _check_schema(self) -> None:
        columns = {c["name"] for c in sa.inspect(self.engine).get_columns(ledger_events.name)}
        if "key_id" not in columns:
            raise LedgerIntegrityError(
                f"{ledger_events.name} was created by a version without keyed hashes (no key_id "
                "column): its rows cannot be verified under a ledger key; archive it and start a new ledger"
            )

    def _ensure_head(self) -> None:
        """Create the head and state rows up front, so every append locks an existing row.

        A ledger created before the state table existed starts verified at genesis: its first
        append checks the whole chain once.
        """
        for table, row in (
            (ledger_head, {"id": 1, "seq": 0, "record_hash": GENESIS}),
            (ledger_state, {"id": 1, "verified_seq": 0, "verified_hash": GENESIS}),
        ):
            try:
                with self.engine.begin() as conn:
                    if conn.execute(sa.select(table.c.id).where(table.c.id == 1)).first() is None:
                        conn.execute(table.insert().values(**row))
            except sa.exc.IntegrityError:
                pass  # another process created it first

    def _make_sqlite_transactions_immediate(self) -> None:
        """SQLite takes its write lock lazily; take it at BEGIN so read-then-append cannot race."""

        @sa.event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(self.engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def append(
        self,
        *,
        pipeline: str,
        event_type: str,
        subject: str,
        payload: dict[str, Any],
        run_id: str | None = None,
        actor: str = "llmops",
        event_id: str | None = None,
    ) -> LedgerRecord:
        """Append one event; if the same event was already recorded, return that record unchanged."""
        event_id = event_id or event_id_for(pipeline, event_type, subject, run_id)
        payload = clean_payload(json.loads(_canonical(payload)))
        keys = self.keys
        with self.engine.begin() as conn:
            head = conn.execute(
                sa.select(
                    ledger_head.c.seq,
                    ledger_head.c.record_hash,
                    ledger_state.c.verified_seq,
                    ledger_state.c.verified_hash,
                    ledger_state.c.blocked,
                    ledger_state.c.blocked_at,
                )
                .join_from(ledger_head, ledger_state, sa.true())
                .where(ledger_head.c.id == 1, ledger_state.c.id == 1)
                .with_for_update(of=ledger_head)
            ).first()
            if head.blocked:
                raise LedgerBlocked(_blocked_message(head.blocked, head.blocked_at))
            if head.verified_seq == FOLLOWS_HEAD:
                problem = verification.since_last_verified(conn, keys, head.seq, head.record_hash, head)
            else:
                problem = verification.since_last_verified(
                    conn, keys, head.verified_seq, head.verified_hash, head
                )
            if problem is None:
                existing = conn.execute(
                    sa.select(ledger_events).where(ledger_events.c.event_id == event_id)
                ).first()
                if existing is not None:
                    return _row_to_record(existing)
                entry = {
                    "event_id": event_id,
                    "pipeline": pipeline,
                    "event_type": event_type,
                    "subject": subject,
                    "run_id": run_id,
                    "actor": actor,
                    "payload": payload,
                }
                record = self._insert(conn, head, entry, keys)
        if problem is None:
            if self.anchor_every > 0 and record.seq % self.anchor_every == 0:
                self._anchor_after_append()
            return record
        self.block(problem)
        raise LedgerBlocked(_blocked_message(problem, None))

    @staticmethod
    def _insert(conn: Any, head: Any, entry: dict[str, Any], keys: LedgerKeys) -> LedgerRecord:
        """Chain `entry` after the head, move the head and the verified point to it."""
        prev_hash = head.record_hash
        fields = {
            "seq": head.seq + 1,
            "event_id": entry["event_id"],
            "recorded_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            **{k: entry[k] for k in ("pipeline", "event_type", "subject", "run_id", "actor", "payload")},
            "key_id": keys.primary_id,
        }
        hashed = record_hash(keys.primary, prev_hash, fields)
        conn.execute(
            ledger_events.insert().values(
                **{**fields, "payload": _canonical(fields["payload"])},
                prev_hash=prev_hash,
                record_hash=hashed,
            )
        )
        conn.execute(
            ledger_head.update().where(ledger_head.c.id == 1).values(seq=fields["seq"], record_hash=hashed)
        )
        if head.verified_seq != FOLLOWS_HEAD:  # the first append after a catch-up check
            conn.execute(
                ledger_state.update().where(ledger_state.c.id == 1).values(verified_seq=FOLLOWS_HEAD)
            )
        log.info(
            "ledger: %s %s (%s) seq=%s",
            fields["event_type"],
            fields["subject"],
            fields["pipeline"],
            fields["seq"],
        )
        return LedgerRecord(**fields, prev_hash=prev_hash, record_hash=hashed)

    def _anchor_after_append(self) -> None:
        """The periodic anchor: a finding blocks; an unreachable store only waits for the next one."""
        try:
            self.verify()
        except Exception as exc:
            log.warning("ledger: could not write the periodic anchor: %s", safe_error_text(exc))

    def block(self, problem: str) -> None:
        """Refuse every later append until :meth:`unblock` (the first problem found is kept)."""
        with self.engine.begin() as conn:
            conn.execute(
                ledger_state.update()
                .where(ledger_state.c.id == 1, ledger_state.c.blocked.is_(None))
                .values(blocked=problem, blocked_at=datetime.now(UTC).isoformat(timespec="seconds"))
            )
        log.error("ledger: appends blocked: %s", problem)

    def blocked(self) -> str | None:
        with self.engine.connect() as conn:
            state = conn.execute(sa.select(ledger_state).where(ledger_state.c.id == 1)).first()
        return _blocked_message(state.blocked, state.blocked_at) if state.blocked else None

    def unblock(self) -> VerifyResult:
        """Lift a block once the whole chain and every anchor verify again (an operator restored them)."""
        result = self.verify(full=True, block_on_failure=False)
        if result.ok:
            with self.engine.begin() as conn:
                conn.execute(
                    ledger_state.update()
                    .where(ledger_state.c.id == 1)
                    .values(
                        blocked=None,
                        blocked_at=None,
                        verified_seq=FOLLOWS_HEAD,
                        verified_hash=result.head_hash,
                    )
                )
            log.warning("ledger: block lifted; the chain verifies over %s records", result.records)
        return result

    def records(
        self,
        *,
        pipeline: str | None = None,
        event_type: str | None = None,
        subject: str | None = None,
        run_id: str | None = None,
    ) -> list[LedgerRecord]:
        query = sa.select(ledger_events).order_by(ledger_events.c.seq)
        if pipeline is not None:
            query = query.where(ledger_events.c.pipeline == pipeline)
        if event_type is not None:
            query = query.where(ledger_events.c.event_type == event_type)
        if subject is not None:
            query = query.where(ledger_events.c.subject == subject)
        if run_id is not None:
            query = query.where(ledger_events.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [_row_to_record(row) for row in conn.execute(query)]

    def verify(self, *, full: bool = False, block_on_failure: bool = True) -> VerifyResult:
        """Check the chain and anchor its head; the first broken record or anchor is reported and
        (unless told otherwise) blocks appends. A malformed row is a finding, never a crash.

        Incremental (default): the latest anchor and the records after it. ``full``: every record
        from genesis and every anchor (what ``llmops ledger-verify --full`` and unblocking run).
        """
        keys, store = self.keys, self.anchors
        outcome, anchor = None, None
        if full:
            with self.engine.connect() as conn:
                head = conn.execute(sa.select(ledger_head).where(ledger_head.c.id == 1)).first()
                outcome = verification.full(conn, keys, store, head.seq, head.record_hash)
        if outcome is None or outcome.problem is None:
            # Under the head lock: appends wait, so the anchored head is the verified one.
            with self.engine.begin() as conn:
                head = conn.execute(
                    sa.select(ledger_head).where(ledger_head.c.id == 1).with_for_update()
                ).first()
                since = verification.since_anchor(conn, keys, store, head.seq, head.record_hash)
                if since.problem is None:
                    anchor = verification.write_anchor(
                        conn, keys, store, head.seq, head.record_hash, since.latest
                    )
            outcome = outcome if outcome is not None and since.problem is None else since
        result = VerifyResult(
            ok=outcome.problem is None,
            records=outcome.records,
            head_hash=outcome.head_hash,
            problem=outcome.problem,
            checked=outcome.checked,
            full=full,
            anchors_checked=outcome.anchors_checked,
            anchored_seq=anchor.seq if anchor is not None else None,
        )
        if not result.ok and block_on_failure:
            self.block(result.problem or "verification failed")
        return result

    def anchor(self) -> VerifyResult:
        """Verify since the latest anchor and anchor the head (what reports call before they cite it)."""
        return self.verify()


def _blocked_message(problem: str, since: str | None) -> str:
    return (
        f"the governance ledger is blocked{f' since {since}' if since else ''}: {problem}. Nothing can be "
        "recorded, so no pipeline step runs; restore the ledger database, then run "
        "`llmops ledger-verify --unblock`"
    )


def _row_to_record(row: Any) -> LedgerRecord:
    return LedgerRecord(
        seq=row.seq,
        event_id=row.event_id,
        recorded_at=row.recorded_at,
        pipeline=row.pipeline,
        event_type=row.event_type,
        subject=row.subject,
        run_id=row.run_id,
        actor=row.actor,
        payload=json.loads(row.payload),
        prev_hash=row.prev_hash,
        record_hash=row.record_hash,
        key_id=row.key_id,
    )


_LEDGERS: dict[str, Ledger] = {}


def get_ledger(url: str | None = None) -> Ledger:
    """A process-wide ledger per URL (engines are pooled, tables created once)."""
    if url is None:
        from llmops.settings import get_settings

        url = get_settings().ledger_url
    if url not in _LEDGERS:
        _LEDGERS[url] = Ledger(url)
    return _LEDGERS[url]
