"""Signed head anchors, kept outside the ledger database.

Why: whoever can write the database could rewrite the chain from genesis; with HMAC they also need
the key, and with anchors they also need a store they cannot rewrite. An anchor names the head
(seq, record hash) at a moment, is signed with a key derived from the ledger key, and chains to the
anchor before it (``prev_signature``), so a removed or forged anchor breaks that chain too.

Stores: an append-only JSON Lines file (the embedded default, next to a SQLite ledger or under
``LLMOPS_HOME``), or one S3 object per anchor (``LLMOPS_LEDGER_ANCHORS=s3://bucket/prefix``),
written with S3 Object Lock governance-mode retention when ``LLMOPS_LEDGER_ANCHOR_RETENTION_DAYS``
is set (the bucket must have Object Lock enabled).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmops.ledger.chain import canonical

if TYPE_CHECKING:
    from llmops.ledger.keys import LedgerKeys

ANCHORS_ENV = "LLMOPS_LEDGER_ANCHORS"
ANCHORS_CONN_ENV = "LLMOPS_LEDGER_ANCHORS_CONN_ID"
RETENTION_ENV = "LLMOPS_LEDGER_ANCHOR_RETENTION_DAYS"
_TAIL_BYTES = 64 * 1024


class AnchorConfigError(RuntimeError):
    """A production deployment (keys from connections only) names no anchor store."""


class AnchorStoreError(ValueError):
    """The anchor store holds something that is not an anchor (a finding, not a crash)."""


@dataclass(frozen=True)
class Anchor:
    n: int
    seq: int
    record_hash: str
    anchored_at: str
    key_id: str
    prev_signature: str
    signature: str = ""

    def signed_text(self) -> str:
        body = asdict(self)
        body.pop("signature")
        return canonical(body)

    def to_json(self) -> str:
        return canonical(asdict(self))

    @classmethod
    def parse(cls, text: str | bytes, where: str) -> Anchor:
        try:
            data = json.loads(text)
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (ValueError, TypeError, KeyError):
            raise AnchorStoreError(f"{where} is not a well-formed anchor") from None


def _signature(keys: LedgerKeys, anchor: Anchor) -> str | None:
    key = keys.anchor_key(anchor.key_id)
    if key is None:
        return None
    return hmac.new(key, anchor.signed_text().encode(), hashlib.sha256).hexdigest()


def sign(keys: LedgerKeys, *, n: int, seq: int, record_hash: str, prev_signature: str) -> Anchor:
    unsigned = Anchor(
        n=n,
        seq=seq,
        record_hash=record_hash,
        anchored_at=datetime.now(UTC).isoformat(timespec="microseconds"),
        key_id=keys.primary_id,
        prev_signature=prev_signature,
    )
    return Anchor(**{**asdict(unsigned), "signature": _signature(keys, unsigned) or ""})


def signature_problem(anchor: Anchor, keys: LedgerKeys) -> str | None:
    expected = _signature(keys, anchor)
    if expected is None:
        return f"anchor {anchor.n}: signed with an unknown ledger key id {str(anchor.key_id)[:32]!r}"
    if not hmac.compare_digest(expected, str(anchor.signature)):
        return f"anchor {anchor.n}: signature does not verify (forged or altered)"
    return None


class AnchorStore(Protocol):
    location: str

    def append(self, anchor: Anchor) -> None: ...

    def latest(self) -> Anchor | None: ...

    def all(self) -> list[Anchor]: ...


class FileAnchorStore:
    """One anchor per line, appended with O_APPEND and fsynced: a reader sees whole lines only."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = str(self.path)

    def __repr__(self) -> str:
        return f"FileAnchorStore({self.location!r})"

    def append(self, anchor: Anchor) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (anchor.to_json() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def latest(self) -> Anchor | None:
        """The last line only (reads the file's tail, not the whole file)."""
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - _TAIL_BYTES))
                tail = fh.read()
        except FileNotFoundError:
            return None
        lines = [line for line in tail.split(b"\n") if line.strip()]
        if not lines:
            return None
        return Anchor.parse(lines[-1], f"the last line of {self.path.name}")

    def all(self) -> list[Anchor]:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return [
            Anchor.parse(line, f"line {i} of {self.path.name}")
            for i, line in enumerate(text.split(b"\n"), 1)
            if line.strip()
        ]


class S3AnchorStore:
    """One object per anchor, named by its number; Object Lock retention makes it undeletable."""

    def __init__(self, prefix: str, *, conn_id: str | None = None, retention_days: int | None = None) -> None:
        self.location = prefix.rstrip("/")
        self.conn_id = conn_id
        self.retention_days = retention_days

    def __repr__(self) -> str:
        return f"S3AnchorStore({self.location!r})"

    def _key(self, n: int) -> str:
        return f"{self.location}/{n:012d}.json"

    def put_arguments(self) -> dict[str, Any]:
        """Extra PutObject arguments: governance-mode retention when configured."""
        if not self.retention_days:
            return {}
        until = datetime.now(UTC) + timedelta(days=self.retention_days)
        return {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until}

    def append(self, anchor: Anchor) -> None:
        from llmops import storage

        fs, path = storage.filesystem(self._key(anchor.n), conn_id=self.conn_id)
        fs.pipe_file(path, (anchor.to_json() + "\n").encode(), **self.put_arguments())

    def _names(self) -> list[str]:
        from llmops import storage

        return storage.list_files(self.location, "*.json", conn_id=self.conn_id)

    def _read(self, uri: str) -> Anchor:
        from llmops import storage

        return Anchor.parse(storage.read_bytes(uri, conn_id=self.conn_id), uri.rsplit("/", 1)[-1])

    def latest(self) -> Anchor | None:
        names = self._names()
        return self._read(names[-1]) if names else None

    def all(self) -> list[Anchor]:
        return [self._read(uri) for uri in self._names()]


def anchor_store_for(ledger_url: str) -> AnchorStore:
    """``LLMOPS_LEDGER_ANCHORS`` if set; else a file next to a SQLite ledger, or under LLMOPS_HOME
    named after the database (without its password), so two ledgers never share anchors. Where
    keys must come from connections (production), another database needs the setting."""
    explicit = os.environ.get(ANCHORS_ENV, "").strip()
    if explicit.startswith(("s3://", "s3a://", "s3n://")):
        days = os.environ.get(RETENTION_ENV, "").strip()
        return S3AnchorStore(
            explicit,
            conn_id=os.environ.get(ANCHORS_CONN_ENV) or None,
            retention_days=int(days) if days else None,
        )
    if explicit:
        return FileAnchorStore(explicit)
    import sqlalchemy as sa

    url = sa.make_url(ledger_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        db = Path(url.database)
        return FileAnchorStore(db.with_name(f"{db.stem}-anchors.jsonl"))
    if os.environ.get("LLMOPS_REQUIRE_KEY_CONNECTIONS", "").lower() in ("1", "true", "yes"):
        # A production deployment: a file in one pod's home is neither shared nor out of reach.
        raise AnchorConfigError(
            f"the ledger's anchor store is not configured: set {ANCHORS_ENV}=s3://bucket/prefix "
            f"(and {RETENTION_ENV} on an Object Lock bucket); docs/ledger_integrity.md"
        )
    from llmops.settings import get_settings

    name = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:12]
    return FileAnchorStore(get_settings().home / f"ledger-anchors-{name}.jsonl")
