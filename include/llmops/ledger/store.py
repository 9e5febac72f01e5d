"""Governance ledger: an append-only, hash-chained record of every governed event.

Each record carries the hash of the record before it, so editing or deleting any row breaks the
chain at that point and `verify()` names it. Appends are serialised per database (a lock on a
single head row) so concurrent tasks cannot fork the chain. Event ids are deterministic: a retried
task that records the same event again is a no-op, never a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

GENESIS = "0" * 64

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
)

ledger_head = sa.Table(
    "llmops_ledger_head",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("record_hash", sa.String(64), nullable=False),
)


class LedgerIntegrityError(RuntimeError):
    """The chain does not verify: a record was edited, removed or inserted out of band."""


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
        }


def _canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def _record_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + _canonical(fields)).encode()).hexdigest()


def event_id_for(pipeline: str, event_type: str, subject: str, run_id: str | None) -> str:
    return hashlib.sha256(_canonical([pipeline, event_type, subject, run_id]).encode()).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    head_hash: str
    problem: str | None = None


class Ledger:
    def __init__(self, url: str):
        self.url = url
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"timeout": 60}
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True, connect_args=connect_args)
        if self.engine.dialect.name == "sqlite":
            self._make_sqlite_transactions_immediate()
        metadata.create_all(self.engine, checkfirst=True)
        self._ensure_head()

    def _ensure_head(self) -> None:
        """Create the head row up front, so every append locks an existing row."""
        try:
            with self.engine.begin() as conn:
                if conn.execute(sa.select(ledger_head.c.id).where(ledger_head.c.id == 1)).first() is None:
                    conn.execute(ledger_head.insert().values(id=1, seq=0, record_hash=GENESIS))
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
        payload = json.loads(_canonical(payload))
        with self.engine.begin() as conn:
            head = conn.execute(
                sa.select(ledger_head.c.seq, ledger_head.c.record_hash)
                .where(ledger_head.c.id == 1)
                .with_for_update()
            ).first()
            existing = conn.execute(
                sa.select(ledger_events).where(ledger_events.c.event_id == event_id)
            ).first()
            if existing is not None:
                return _row_to_record(existing)
            prev_seq, prev_hash = head.seq, head.record_hash
            fields = {
                "seq": prev_seq + 1,
                "event_id": event_id,
                "recorded_at": datetime.now(UTC).isoformat(timespec="microseconds"),
                "pipeline": pipeline,
                "event_type": event_type,
                "subject": subject,
                "run_id": run_id,
                "actor": actor,
                "payload": payload,
            }
            record_hash = _record_hash(prev_hash, fields)
            conn.execute(
                ledger_events.insert().values(
                    **{**fields, "payload": _canonical(payload)}, prev_hash=prev_hash, record_hash=record_hash
                )
            )
            conn.execute(
                ledger_head.update()
                .where(ledger_head.c.id == 1)
                .values(seq=fields["seq"], record_hash=record_hash)
            )
        log.info("ledger: %s %s (%s) seq=%s", event_type, subject, pipeline, fields["seq"])
        return LedgerRecord(**fields, prev_hash=prev_hash, record_hash=record_hash)

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

    def verify(self) -> VerifyResult:
        """Recompute the whole chain; the first broken link is reported by sequence number."""
        prev_hash = GENESIS
        expected_seq = 1
        count = 0
        with self.engine.connect() as conn:
            head = conn.execute(sa.select(ledger_head).where(ledger_head.c.id == 1)).first()
            for row in conn.execute(sa.select(ledger_events).order_by(ledger_events.c.seq)):
                record = _row_to_record(row)
                if record.seq != expected_seq:
                    return VerifyResult(False, count, prev_hash, f"record seq {expected_seq} is missing")
                if record.prev_hash != prev_hash:
                    return VerifyResult(
                        False, count, prev_hash, f"record seq {record.seq}: chain link broken"
                    )
                fields = {
                    k: getattr(record, k)
                    for k in (
                        "seq",
                        "event_id",
                        "recorded_at",
                        "pipeline",
                        "event_type",
                        "subject",
                        "run_id",
                        "actor",
                        "payload",
                    )
                }
                if _record_hash(prev_hash, fields) != record.record_hash:
                    return VerifyResult(
                        False, count, prev_hash, f"record seq {record.seq}: content was altered"
                    )
                prev_hash = record.record_hash
                expected_seq += 1
                count += 1
        if head is not None and (head.seq != count or head.record_hash != prev_hash):
            return VerifyResult(
                False, count, prev_hash, f"head points at seq {head.seq} but the chain ends at seq {count}"
            )
        return VerifyResult(True, count, prev_hash)


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
