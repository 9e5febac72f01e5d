"""Governance ledger: an append-only, hash-chained record of every governed event.

Each record carries the hash of the record before it, so editing or deleting any row breaks the
chain at that point and `verify()` names it. Appends are serialised per database (a lock on a
single head row) so concurrent tasks cannot fork the chain. Event ids are deterministic: a retried
task that records the same event again is a no-op, never a duplicate.

Tamper stops the pipelines: every append first checks the records written since the last verified
point (usually none: the previous append verified its own), and a chain that fails any check blocks
every later append - so every run - until an operator has restored it and `llmops ledger-verify
--unblock` finds the whole chain sound again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from llmops.errors import PermanentError

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


FOLLOWS_HEAD = -1


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
        payload = json.loads(_canonical(payload))
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
                problem = _check_since(conn, head.seq, head.record_hash, head)
            else:
                problem = _check_since(conn, head.verified_seq, head.verified_hash, head)
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
                return self._insert(conn, head, entry)
        self.block(problem)
        raise LedgerBlocked(_blocked_message(problem, None))

    @staticmethod
    def _insert(conn: Any, head: Any, entry: dict[str, Any]) -> LedgerRecord:
        """Chain `entry` after the head, move the head and the verified point to it."""
        prev_hash = head.record_hash
        fields = {
            "seq": head.seq + 1,
            "event_id": entry["event_id"],
            "recorded_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            **{k: entry[k] for k in ("pipeline", "event_type", "subject", "run_id", "actor", "payload")},
        }
        record_hash = _record_hash(prev_hash, fields)
        conn.execute(
            ledger_events.insert().values(
                **{**fields, "payload": _canonical(fields["payload"])},
                prev_hash=prev_hash,
                record_hash=record_hash,
            )
        )
        conn.execute(
            ledger_head.update()
            .where(ledger_head.c.id == 1)
            .values(seq=fields["seq"], record_hash=record_hash)
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
        return LedgerRecord(**fields, prev_hash=prev_hash, record_hash=record_hash)

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
        """Lift a block once the whole chain verifies again (an operator restored it)."""
        result = self.verify(block_on_failure=False)
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

    def verify(self, *, block_on_failure: bool = True) -> VerifyResult:
        """Recompute the whole chain; the first broken link is reported by sequence number, and
        (unless told otherwise) blocks appends. A malformed row is a finding, never a crash."""
        prev_hash = GENESIS
        count = 0
        problem = None
        with self.engine.connect() as conn:
            head = conn.execute(sa.select(ledger_head).where(ledger_head.c.id == 1)).first()
            for row in conn.execute(sa.select(ledger_events).order_by(ledger_events.c.seq)):
                problem = _link_problem(row, count + 1, prev_hash)
                if problem:
                    break
                prev_hash = row.record_hash
                count += 1
        if problem is None and head is not None and (head.seq != count or head.record_hash != prev_hash):
            problem = f"head points at seq {head.seq} but the chain ends at seq {count}"
        if problem is None:
            return VerifyResult(True, count, prev_hash)
        if block_on_failure:
            self.block(problem)
        return VerifyResult(False, count, prev_hash, problem)


_HASHED_FIELDS = ("seq", "event_id", "recorded_at", "pipeline", "event_type", "subject", "run_id", "actor")


def _link_problem(row: Any, expected_seq: int, prev_hash: str) -> str | None:
    """What is wrong with one stored row as the successor of `prev_hash`, or None."""
    seq = getattr(row, "seq", None)
    if seq != expected_seq:
        return f"record seq {expected_seq} is missing (found seq {seq})"
    if row.prev_hash != prev_hash:
        return f"record seq {seq}: chain link broken"
    try:
        payload = json.loads(row.payload)
    except (TypeError, ValueError):
        return f"record seq {seq}: payload is not valid JSON"
    fields = {k: getattr(row, k) for k in _HASHED_FIELDS}
    if _record_hash(prev_hash, {**fields, "payload": payload}) != row.record_hash:
        return f"record seq {seq}: content was altered"
    return None


def _check_since(conn: Any, verified_seq: int, verified_hash: str, head: Any) -> str | None:
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
            or _link_problem(last, verified_seq, last.prev_hash)
        ):
            return f"record seq {verified_seq} (the last verified) was altered or removed"
        prev_hash, expected, rows = verified_hash, verified_seq + 1, rows[1:]
    for row in rows:
        problem = _link_problem(row, expected, prev_hash)
        if problem:
            return problem
        prev_hash, expected = row.record_hash, expected + 1
    if head.seq != expected - 1 or head.record_hash != prev_hash:
        return f"head points at seq {head.seq} but the chain ends at seq {expected - 1}"
    return None


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
