"""Erased subjects stay erased: a per-pipeline suppression list, applied at ingest.

Erasure removes a subject from the lake, but a full-refresh source still holds them and the next
ingest would bring them back. So an erasure request adds keyed hashes of what identifies the
subject to this list: the subject value (normalised as erasure normalises it) and every record key
erasure found. Ingest drops each row whose subject or key hashes to an entry while it extracts, so
the rows are never written: not to the staged parts, not to the raw snapshot of that run, not to
the validated, quarantine or curated snapshots. The raw snapshot is still the source's copy as
extracted, minus the suppressed rows; its manifest counts them (`source.rows_suppressed`).
Validation applies the list once more to what it reads (an erasure may complete while a run is in
flight) and records the total in the validated snapshot's manifest and the ledger.

Where it lives: a table in the ledger's database (beside the ledger and the watermarks), not a
file in the lake. The list must outlive every snapshot (retention deletes lake folders, this must
never go with them); adds from parallel erasure tasks need a transaction and a unique key, which
object storage cannot give a read-modify-write file; and the database is backed up with the
ledger it answers to. It holds no plain value: each entry is HMAC-SHA256 under the pipeline's
pseudonymisation key (which is not in that database), over a label, the kind and the value, so a
hash cannot be reversed by hashing guesses, and equal strings of different kinds differ.

Each entry carries the id of the key it was made with (itself an HMAC, so it reveals nothing of
the key). After a rotation of the pseudonymisation key the old entries can no longer match, so
ingest refuses to run (naming the erasure requests to run again) rather than let the subjects back
in silence.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from llmops.errors import PermanentError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import pyarrow as pa

    from llmops.specs import PipelineSpec

Kind = Literal["subject", "key"]
SUBJECT: Kind = "subject"
KEY: Kind = "key"
_LABEL = b"llmops.erasure.suppression"
ROWS_SUPPRESSED = "rows_suppressed"  # manifest key: rows left out for erased subjects

metadata = sa.MetaData()

suppression_entries = sa.Table(
    "llmops_erasure_suppression",
    metadata,
    sa.Column("pipeline", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("added_at", sa.String(32), nullable=False),
)

_READY: set[str] = set()


class SuppressionKeyChanged(PermanentError, RuntimeError):
    """Entries of the list were made with another pseudonymisation key: they cannot match now."""


def normalise_value(spec: PipelineSpec, column: str, value: str) -> str:
    """`value` of `column` as validation normalises it (the spec's NFC, trim and lowercase rules)."""
    rules = spec.dataset.normalization
    if rules.unicode_nfc:
        value = unicodedata.normalize("NFC", value)
    if rules.trim:
        value = value.strip()
    if column in rules.lowercase_columns:
        value = value.lower()
    return value


class Hasher:
    """Keyed hashes of subject values and record keys; `key_id` names the key, publicly."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError(f"pseudonymisation key is too short: {len(key)} bytes, need at least 16")
        self._mac = hmac.new(bytes(key), _LABEL, hashlib.sha256)
        self.key_id = hmac.new(bytes(key), _LABEL + b"\x1fkey-id", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Hasher(key_id={self.key_id})"

    def digest(self, kind: Kind, value: str) -> str:
        mac = self._mac.copy()
        mac.update(b"\x1f" + kind.encode() + b"\x1f" + value.encode("utf-8"))
        return mac.hexdigest()


def hasher_for(spec: PipelineSpec) -> Hasher:
    from llmops.privacy.keys import get_pseudonymisation_key

    return Hasher(get_pseudonymisation_key(spec.privacy.pseudonymisation_conn_id))


def _engine() -> sa.Engine:
    from llmops.ledger import get_ledger

    engine = get_ledger().engine
    if engine.url.render_as_string() not in _READY:
        metadata.create_all(engine, checkfirst=True)
        _READY.add(engine.url.render_as_string())
    return engine


def add_entries(pipeline: str, request_id: str, key_id: str, entries: Iterable[tuple[Kind, str]]) -> int:
    """Add (kind, digest) entries; those already listed are left as they are. Returns how many were
    new, so a retried erasure adds (and counts) nothing twice."""
    wanted = set(entries)
    if not wanted:
        return 0
    for attempt in (1, 2):  # a parallel add of the same entry may win between the read and the insert
        try:
            with _engine().begin() as conn:
                listed = {
                    (row.kind, row.digest)
                    for row in conn.execute(
                        sa.select(suppression_entries.c.kind, suppression_entries.c.digest).where(
                            suppression_entries.c.pipeline == pipeline,
                            suppression_entries.c.digest.in_(sorted(d for _, d in wanted)),
                        )
                    )
                }
                new = sorted(wanted - listed)
                now = datetime.now(UTC).isoformat(timespec="seconds")
                if new:
                    conn.execute(
                        suppression_entries.insert(),
                        [
                            {
                                "pipeline": pipeline,
                                "kind": kind,
                                "digest": digest,
                                "key_id": key_id,
                                "request_id": request_id,
                                "added_at": now,
                            }
                            for kind, digest in new
                        ],
                    )
                return len(new)
        except sa.exc.IntegrityError:
            if attempt == 2:
                raise
    return 0  # not reached


def add_erased(
    spec: PipelineSpec, request_id: str, subject: str | None, keys: Iterable[str]
) -> dict[str, Any]:
    """List an erased subject (value already normalised) and record keys; counts only."""
    hasher = hasher_for(spec)
    entries: set[tuple[Kind, str]] = {(KEY, hasher.digest(KEY, k)) for k in keys}
    if subject is not None:
        entries.add((SUBJECT, hasher.digest(SUBJECT, subject)))
    added = add_entries(spec.name, request_id, hasher.key_id, entries)
    return {"entries": len(entries), "added": added, "key_id": hasher.key_id}


def listed(pipeline: str) -> list[dict[str, Any]]:
    """Every entry of a pipeline's list (hashes, key ids, request ids: no personal data)."""
    with _engine().connect() as conn:
        rows = conn.execute(
            sa.select(suppression_entries)
            .where(suppression_entries.c.pipeline == pipeline)
            .order_by(suppression_entries.c.kind, suppression_entries.c.digest)
        )
        return [dict(row._mapping) for row in rows]


class Suppression:
    """A pipeline's list, loaded for one ingest step: which rows to drop, and how many were."""

    def __init__(self, spec: PipelineSpec, hasher: Hasher, digests: dict[Kind, set[str]]) -> None:
        self.spec, self.hasher, self.digests = spec, hasher, digests
        self.rows_suppressed = 0
        self.keys_dropped: set[str] = set()  # in memory only: to drop these rows' notes from a manifest

    @classmethod
    def load(cls, spec: PipelineSpec) -> Suppression | None:
        """The list of `spec`'s pipeline, or None when it is empty. Raises when entries were made
        with another key than the pipeline's pseudonymisation key now."""
        entries = listed(spec.name)
        if not entries:
            return None
        hasher = hasher_for(spec)
        stale = [e for e in entries if e["key_id"] != hasher.key_id]
        if stale:
            requests = sorted({e["request_id"] for e in stale})
            raise SuppressionKeyChanged(
                f"pipeline '{spec.name}': {len(stale)} suppression entries of erasure request(s) "
                f"{', '.join(requests)} were made with pseudonymisation key {stale[0]['key_id']}, "
                f"the pipeline now uses key {hasher.key_id}, so they cannot match and the subjects "
                "would be ingested again. Run those erasure requests again (they list the subjects "
                f"under the new key), then delete the rows of table {suppression_entries.name} with "
                f"pipeline '{spec.name}' and a key_id other than {hasher.key_id}"
            )
        digests: dict[Kind, set[str]] = {SUBJECT: set(), KEY: set()}
        for entry in entries:
            digests[entry["kind"]].add(entry["digest"])
        return cls(spec, hasher, digests)

    def _key_listed(self, value: Any) -> bool:
        if value is None or value != value:  # None, NaN
            return False
        raw = str(value)
        if self.hasher.digest(KEY, raw) in self.digests[KEY]:
            return True
        normalised = normalise_value(self.spec, self.spec.dataset.key, raw)
        return normalised != raw and self.hasher.digest(KEY, normalised) in self.digests[KEY]

    def _subject_listed(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        column = self.spec.dataset.subject_column or ""
        return self.hasher.digest(SUBJECT, normalise_value(self.spec, column, value)) in self.digests[SUBJECT]

    def hits(self, columns: dict[str, list[Any]], rows: int) -> list[bool]:
        """Per row: whether its subject or its record key is listed. `columns` holds the values of
        the subject and key columns, where the data has them."""
        subjects = columns.get(self.spec.dataset.subject_column or "")
        keys = columns.get(self.spec.dataset.key)
        out = [False] * rows
        if subjects is not None and self.digests[SUBJECT]:
            out = [self._subject_listed(v) for v in subjects]
        if keys is not None and self.digests[KEY]:
            out = [hit or self._key_listed(k) for hit, k in zip(out, keys, strict=True)]
        return out

    def _wanted(self, names: Iterable[str]) -> list[str]:
        return [c for c in (self.spec.dataset.subject_column, self.spec.dataset.key) if c and c in names]

    def _note(self, hit: list[bool], keys: list[Any] | None) -> None:
        self.rows_suppressed += sum(hit)
        if keys is not None:
            self.keys_dropped |= {str(k) for k, h in zip(keys, hit, strict=True) if h and k is not None}

    def stream(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The batches without the listed rows (streaming: one batch in memory at a time)."""
        import pyarrow as pa

        for batch in batches:
            columns = {c: batch.column(c).to_pylist() for c in self._wanted(batch.schema.names)}
            hit = self.hits(columns, batch.num_rows)
            if any(hit):
                self._note(hit, columns.get(self.spec.dataset.key))
                batch = batch.filter(pa.array([not h for h in hit], pa.bool_()))
            yield batch

    def drop_from(self, frame: Any) -> Any:
        """A pandas frame without the listed rows (index kept)."""
        columns = {c: frame[c].tolist() for c in self._wanted(frame.columns)}
        hit = self.hits(columns, len(frame))
        if not any(hit):
            return frame
        self._note(hit, columns.get(self.spec.dataset.key))
        return frame[[not h for h in hit]]
