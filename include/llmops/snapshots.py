"""Immutable, content-addressed dataset snapshots in the lake.

A snapshot is a folder ``<lake>/<zone>/<pipeline>/<dataset>/<snapshot_id>/`` holding one or more
Parquet part files (encrypted, each with its own wrapped data key: every zone holds record-level data)
and ``manifest.json``. The id is derived from the data itself, so the same input always yields the
same snapshot and a retried task finds its own earlier work instead of writing a duplicate.

Writing happens in two steps. Parts are *staged* (streamed through Parquet and encryption into
``<lake>/_staging/...``, so memory stays flat however large the part), then *committed*: moved
into the snapshot folder, and the manifest written last. A folder without a manifest is an
interrupted write and is never read; a retried commit finishes what a killed one started.

Zones: ``raw`` (as extracted), ``quarantine`` (rows that failed validation), ``curated``
(validated, PII handled: pseudonymised, still personal data) and ``sft`` (training splits, with the
split files the jobs read). Every one holds record-level data and is encrypted; snapshot ids come
from the plaintext, so a retried write finds its own snapshot whatever the data keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from llmops import storage
from llmops.lake import CURATED_DATASET as CURATED_DATASET
from llmops.lake import LEGACY_SPLITS, SPLIT_FILES, SPLITS, TRAINING_ZONE
from llmops.lake import QUARANTINE_REASON as QUARANTINE_REASON
from llmops.lake import SOURCE_COLUMN as SOURCE_COLUMN
from llmops.lake import SOURCE_ROW as SOURCE_ROW

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import pyarrow as pa

log = logging.getLogger(__name__)

Zone = Literal["raw", "quarantine", "curated", "sft"]
ENCRYPTED_ZONES: frozenset[str] = frozenset({"raw", "quarantine", "curated", "sft"})
MANIFEST = "manifest.json"
LATEST = "LATEST.json"
ROW_GROUP_ROWS = 100_000
COMPRESSION = "zstd"


class SnapshotError(RuntimeError):
    """A snapshot is missing, incomplete or does not match its manifest; `path`: the file, if one."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class SnapshotRef:
    zone: str
    pipeline: str
    dataset: str
    snapshot_id: str
    uri: str

    def to_dict(self) -> dict[str, str]:
        return {
            "zone": self.zone,
            "pipeline": self.pipeline,
            "dataset": self.dataset,
            "snapshot_id": self.snapshot_id,
            "uri": self.uri,
        }


def dataset_uri(lake_root: str, zone: str, pipeline: str, dataset: str) -> str:
    return storage.join(lake_root, zone, pipeline, dataset)


def _safe(segment: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", segment)


def job_uri(lake_root: str, pipeline: str, run_id: str) -> str:
    """Where a finetune run's job configs and outputs live (in the lake, so a pod can read them)."""
    return storage.join(lake_root, "jobs", pipeline, storage.safe_run_id(run_id))


def staging_uri(lake_root: str, pipeline: str, dataset: str, run_id: str | None) -> str:
    return storage.join(lake_root, "_staging", pipeline, dataset, _safe(run_id or "adhoc"))


class _HashingSink(io.RawIOBase):
    """Passes bytes through to a file while hashing them (plaintext Parquet, or ciphertext)."""

    def __init__(self, dst: BinaryIO) -> None:
        super().__init__()
        self._dst = dst
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        self._dst.write(view)
        self.sha256.update(view)
        self.bytes += len(view)
        return len(view)

    def close(self) -> None:  # the underlying file belongs to the caller
        super().close()


def _row_groups(batches: Iterable[pa.RecordBatch], schema: pa.Schema, rows: int) -> Iterator[pa.Table]:
    """Re-cut incoming batches into row groups of exactly `rows` rows (the last one shorter).

    Row-group boundaries end up in the file bytes; cutting by row count rather than by however the
    source delivered its batches keeps the bytes, and so the snapshot id, the same for the same rows.
    """
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        if batch.schema != schema:
            batch = batch.cast(schema)
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= rows:
            table = pa.Table.from_batches(pending, schema=schema)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending = rest.to_batches() if rest.num_rows else []
            pending_rows = rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending, schema=schema)


def stage_part(
    *,
    lake_root: str,
    pipeline: str,
    dataset: str,
    run_id: str | None,
    part: int,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    kek: Any,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> dict[str, Any]:
    """Stream batches into one staged Parquet part (encrypted when a key is given).

    Returns a small JSON-able description (for XCom): name, hashes, sizes, row count, schema.
    Plaintext never touches disk when a key is given: Parquet bytes go straight into the cipher.
    """
    import pyarrow.parquet as pq

    from llmops.privacy.crypto import EncryptingWriter

    name = f"part-{part:05d}.parquet" + (".enc" if kek is not None else "")
    target = storage.join(staging_uri(lake_root, pipeline, dataset, run_id), name)
    local = storage.is_local(target)
    if local:
        folder = storage.local_path(target).parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    else:
        fd, tmp_name = tempfile.mkstemp(prefix=f"llmops-{name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    rows = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            outer = _HashingSink(fh)
            plain: Any = EncryptingWriter(outer, kek) if kek is not None else _HashingSink(outer)
            writer = pq.ParquetWriter(plain, schema, compression=COMPRESSION, write_statistics=True)
            for group in _row_groups(batches, schema, row_group_rows):
                writer.write_table(group, row_group_size=row_group_rows)
                rows += group.num_rows
            writer.close()
            if kek is not None:
                wrapped = plain.finish()
                plain_sha, plain_bytes = plain.plaintext_sha256, plain.plaintext_bytes
            else:
                wrapped, plain_sha, plain_bytes = None, plain.sha256.hexdigest(), plain.bytes
            fh.flush()
            os.fsync(fh.fileno())
        if wrapped is not None:
            storage.write_json(target + ".key.json", wrapped.to_dict())
        if local:
            os.replace(tmp, storage.local_path(target))
        else:
            fs, path = storage.filesystem(target)
            fs.put_file(str(tmp), path)
    finally:
        tmp.unlink(missing_ok=True)
    info = {
        "part": part,
        "name": name,
        "staging_uri": target,
        "sha256": plain_sha,
        "bytes": plain_bytes,
        "stored_sha256": outer.sha256.hexdigest(),
        "stored_bytes": outer.bytes,
        "rows": rows,
        "schema": [{"name": f.name, "type": str(f.type)} for f in schema],
        "kek_id": wrapped.kek_id if wrapped is not None else None,
        "algorithm": wrapped.algorithm if wrapped is not None else None,
    }
    log.info("staged %s/%s part %d: %d rows, %d bytes", pipeline, dataset, part, rows, plain_bytes)
    return info


def _move(src: str, dst: str) -> None:
    fs, src_path = storage.filesystem(src)
    _, dst_path = storage.filesystem(dst)
    if storage.is_local(src):
        Path(dst_path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src_path, dst_path)
    else:
        fs.copy(src_path, dst_path)
        fs.rm(src_path)


def snapshot_id_for(parts: list[dict[str, Any]], identity: dict[str, Any] | None) -> str:
    content = json.dumps(
        {
            "parts": [[p["part"], p["sha256"]] for p in sorted(parts, key=lambda p: p["part"])],
            "identity": identity or {},
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(content.encode()).hexdigest()[:20]


def content_sha256(parts: list[dict[str, Any]]) -> str:
    """One hash for a snapshot's content: over its parts' plaintext hashes, in part order."""
    ordered = sorted(parts, key=lambda p: p["part"]) if "part" in parts[0] else parts
    return hashlib.sha256("".join(p["sha256"] for p in ordered).encode()).hexdigest()


def commit_parts(
    *,
    lake_root: str,
    zone: Zone,
    pipeline: str,
    dataset: str,
    parts: list[dict[str, Any]],
    metadata: dict[str, Any],
    run_id: str | None = None,
    identity: dict[str, Any] | None = None,
) -> tuple[SnapshotRef, dict[str, Any]]:
    """Move staged parts into their content-addressed folder and write the manifest last."""
    if not parts:
        raise SnapshotError(f"no parts to commit for {zone}/{pipeline}/{dataset}")
    encrypted = zone in ENCRYPTED_ZONES
    if encrypted and any(p["kek_id"] is None for p in parts):
        raise SnapshotError(
            f"zone '{zone}' holds record-level data and must be encrypted: a part was staged without a key"
        )
    parts = sorted(parts, key=lambda p: p["part"])
    snapshot_id = snapshot_id_for(parts, identity)
    folder = storage.join(dataset_uri(lake_root, zone, pipeline, dataset), snapshot_id)
    ref = SnapshotRef(zone, pipeline, dataset, snapshot_id, folder)
    manifest_uri = storage.join(folder, MANIFEST)
    if storage.exists(manifest_uri):
        problem = _damage(folder, parts)
        if problem is None:
            log.info("snapshot %s/%s/%s already committed; reusing it", zone, dataset, snapshot_id)
            _clear_staging(parts)
            return ref, storage.read_json(manifest_uri)
        # The same content was just staged again: write it anew rather than keep serving a damaged copy.
        log.warning("snapshot %s is damaged (%s); writing it again from this extraction", folder, problem)
        storage.delete(folder)

    files = []
    for p in parts:
        moves = [(p["staging_uri"], storage.join(folder, p["name"]))]
        if p["kek_id"] is not None:
            moves.append((p["staging_uri"] + ".key.json", storage.join(folder, p["name"] + ".key.json")))
        for src, dst in moves:
            if storage.exists(src):
                _move(src, dst)
            elif not storage.exists(dst):  # neither staged nor moved by an earlier attempt
                raise SnapshotError(f"staged part {src} is missing: re-run the extraction")
        files.append(
            {
                "name": p["name"],
                "rows": p["rows"],
                "sha256": p["sha256"],
                "bytes": p["bytes"],
                "stored_sha256": p["stored_sha256"],
                "stored_bytes": p["stored_bytes"],
                "key_file": p["name"] + ".key.json" if p["kek_id"] is not None else None,
            }
        )
    kek_ids = sorted({p["kek_id"] for p in parts if p["kek_id"]})
    manifest = {
        "snapshot_id": snapshot_id,
        "zone": zone,
        "pipeline": pipeline,
        "dataset": dataset,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "created_by_run": run_id,
        "row_count": sum(p["rows"] for p in parts),
        "content_sha256": content_sha256(parts),
        "schema": parts[0]["schema"],
        "files": files,
        "encryption": {"algorithm": parts[0]["algorithm"], "kek_ids": kek_ids} if kek_ids else None,
        "identity": identity or {},
        **metadata,
    }
    storage.write_json(manifest_uri, manifest)  # commit point
    _clear_staging(parts)
    log.info(
        "snapshot %s/%s/%s committed: %d rows in %d part(s)",
        zone,
        dataset,
        snapshot_id,
        manifest["row_count"],
        len(files),
    )
    return ref, manifest


def _damage(folder: str, parts: list[dict[str, Any]]) -> str | None:
    """What is wrong with an already committed snapshot folder, or None when every stored file is
    exactly what its manifest says and the manifest describes the parts just staged."""
    try:
        manifest = storage.read_json(storage.join(folder, MANIFEST))
        files = manifest["files"]
        if manifest.get("content_sha256") != content_sha256(parts):
            return "its manifest describes other content"
        for entry in files:
            name = storage.join(folder, entry["name"])
            if not storage.exists(name):
                return f"{name} is missing"
            if hashlib.sha256(storage.read_bytes(name)).hexdigest() != entry["stored_sha256"]:
                return f"{name} does not match the manifest"
            if entry.get("key_file") and not storage.exists(storage.join(folder, entry["key_file"])):
                return f"{entry['key_file']} is missing"
    except (ValueError, KeyError, TypeError) as exc:
        return f"its manifest cannot be read ({type(exc).__name__})"
    return None


def _clear_staging(parts: list[dict[str, Any]]) -> None:
    """Remove what is left in the parts' staging folders (e.g. temp files of a killed attempt)."""
    for folder in sorted({p["staging_uri"].rsplit("/", 1)[0] for p in parts}):
        storage.delete(folder)


def write_snapshot(
    *,
    lake_root: str,
    zone: Zone,
    pipeline: str,
    dataset: str,
    table: pa.Table,
    metadata: dict[str, Any],
    kek: Any = None,
    run_id: str | None = None,
    identity: dict[str, Any] | None = None,
) -> tuple[SnapshotRef, dict[str, Any]]:
    """Write an in-memory table as a one-part snapshot (stage + commit).

    ``identity`` adds what, beyond the data, makes two snapshots different (e.g. the split seed);
    ``metadata`` is recorded but does not change the id.
    """
    if zone in ENCRYPTED_ZONES and kek is None:
        raise SnapshotError(f"zone '{zone}' holds record-level data and must be encrypted: no key given")
    part = stage_part(
        lake_root=lake_root,
        pipeline=pipeline,
        dataset=dataset,
        run_id=run_id,
        part=0,
        batches=table.to_batches(),
        schema=table.schema,
        kek=kek,
    )
    return commit_parts(
        lake_root=lake_root,
        zone=zone,
        pipeline=pipeline,
        dataset=dataset,
        parts=[part],
        metadata=metadata,
        run_id=run_id,
        identity=identity,
    )


def read_manifest(ref_or_uri: SnapshotRef | str) -> dict[str, Any]:
    folder = ref_or_uri.uri if isinstance(ref_or_uri, SnapshotRef) else ref_or_uri
    manifest_uri = storage.join(folder, MANIFEST)
    if not storage.exists(manifest_uri):
        raise SnapshotError(f"no committed snapshot at {folder} (manifest.json missing)")
    return storage.read_json(manifest_uri)


def iter_parts(ref_or_uri: SnapshotRef | str, kek: Any = None) -> Iterator[pa.Table]:
    """Each part of a snapshot as a table, verified against the manifest's hash (one part in memory)."""
    import pyarrow.parquet as pq

    folder = ref_or_uri.uri if isinstance(ref_or_uri, SnapshotRef) else ref_or_uri
    manifest = read_manifest(folder)
    for entry in manifest["files"]:
        if entry.get("key_file") and kek is None:
            raise SnapshotError(
                f"snapshot {manifest['snapshot_id']} is encrypted: a key is needed to read it"
            )
        part = storage.join(folder, entry["name"])
        key_file = storage.join(folder, entry["key_file"]) if entry.get("key_file") else None
        try:
            blob = read_part_bytes(part, key_file, kek)
        except Exception as exc:  # same error, but say which file (a failed tag does not)
            _name_file(exc, part)
            raise
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise SnapshotError(f"{part} does not match the manifest's sha256", part)
        yield pq.read_table(io.BytesIO(blob))


def read_part_bytes(part: str, key_file: str | None, kek: Any) -> bytes:
    """A part's Parquet bytes: decrypted with its wrapped key when it has a key file."""
    blob = storage.read_bytes(part)
    if key_file is None:
        return blob
    from llmops.privacy.crypto import WrappedKey, decrypt_bytes

    return decrypt_bytes(blob, WrappedKey.from_dict(storage.read_json(key_file)), kek)


def _name_file(exc: BaseException, path: str) -> None:
    exc.add_note(f"snapshot file: {path}")
    with contextlib.suppress(AttributeError):
        exc.snapshot_file = path  # type: ignore[attr-defined]


def failed_file(exc: BaseException) -> str | None:
    """The snapshot file a read failed on, when the reader knew it."""
    return getattr(exc, "path", None) or getattr(exc, "snapshot_file", None)


def read_snapshot(ref_or_uri: SnapshotRef | str, kek: Any = None) -> pa.Table:
    """Read all of a snapshot's rows, each part checked against the manifest."""
    import pyarrow as pa

    tables = list(iter_parts(ref_or_uri, kek))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def ref_from_manifest(lake_root: str, manifest: dict[str, Any]) -> SnapshotRef:
    return snapshot_ref(
        lake_root, manifest["zone"], manifest["pipeline"], manifest["dataset"], manifest["snapshot_id"]
    )


def snapshot_ref(lake_root: str, zone: str, pipeline: str, dataset: str, snapshot_id: str) -> SnapshotRef:
    folder = storage.join(dataset_uri(lake_root, zone, pipeline, dataset), snapshot_id)
    return SnapshotRef(zone, pipeline, dataset, snapshot_id, folder)


def set_latest(ref: SnapshotRef, lake_root: str) -> None:
    """Point the dataset's LATEST marker at a committed snapshot (atomic overwrite)."""
    storage.write_json(
        storage.join(dataset_uri(lake_root, ref.zone, ref.pipeline, ref.dataset), LATEST), ref.to_dict()
    )


def get_latest(lake_root: str, zone: str, pipeline: str, dataset: str) -> SnapshotRef:
    uri = storage.join(dataset_uri(lake_root, zone, pipeline, dataset), LATEST)
    if not storage.exists(uri):
        raise SnapshotError(
            f"no {zone} snapshot of '{dataset}' for pipeline '{pipeline}' yet: run the {pipeline}__ingest DAG first"
        )
    payload = storage.read_json(uri)
    return snapshot_ref(lake_root, zone, pipeline, dataset, payload["snapshot_id"])


def list_snapshots(
    lake_root: str, zone: str, pipeline: str, unreadable: list[tuple[str, str]] | None = None
) -> list[tuple[SnapshotRef, dict[str, Any]]]:
    """Every committed snapshot of a pipeline in a zone, with its manifest (oldest dataset first).

    A manifest that exists but cannot be parsed raises, unless `unreadable` is given: then its
    (path, error) is appended there, so a sweep over the lake can do the rest and report it.
    """
    out = []
    for dataset in storage.list_dirs(storage.join(lake_root, zone, pipeline)):
        for snapshot_id in storage.list_dirs(dataset_uri(lake_root, zone, pipeline, dataset)):
            ref = snapshot_ref(lake_root, zone, pipeline, dataset, snapshot_id)
            try:
                out.append((ref, read_manifest(ref)))
            except SnapshotError:
                continue  # an interrupted write: not a snapshot
            except Exception as exc:
                if unreadable is None:
                    raise
                unreadable.append((storage.join(ref.uri, MANIFEST), type(exc).__name__))
    return out


def delete_snapshot(ref: SnapshotRef, lake_root: str) -> None:
    """Delete a snapshot (key files first: without them encrypted parts are unreadable at once),
    and drop the dataset's LATEST marker if it pointed here."""
    from llmops.encrypted_files import encrypted_name, key_uri

    manifest = read_manifest(ref)
    for entry in manifest["files"]:
        if entry.get("key_file"):
            storage.delete(storage.join(ref.uri, entry["key_file"]))
    for name in dict.fromkeys((*SPLIT_FILES, "eval.jsonl")) if ref.zone == TRAINING_ZONE else ():
        storage.delete(key_uri(storage.join(ref.uri, encrypted_name(name))))
    storage.delete(storage.join(ref.uri, MANIFEST))  # no longer a snapshot from here on
    storage.delete(ref.uri)
    latest = storage.join(dataset_uri(lake_root, ref.zone, ref.pipeline, ref.dataset), LATEST)
    if storage.exists(latest) and storage.read_json(latest).get("snapshot_id") == ref.snapshot_id:
        storage.delete(latest)


def write_split_files(
    snapshot_uri: str, rows: list[dict[str, str]], fields: tuple[str, ...] | list[str], kek: Any
) -> dict[str, str]:
    """train.jsonl, validation.jsonl and test.jsonl beside the Parquet, encrypted (``train.jsonl.enc``):
    what the training job (train, validation) and the evaluation job (test) read, after decrypting
    them into their private scratch folder. Rows of a snapshot from before the test split (split
    ``eval``) make its train.jsonl and eval.jsonl again.

    Written only when missing (a snapshot is immutable; a retry finds the same content). Returns
    each file's plaintext sha256 under its plain name: the ledger records it and the jobs check
    what they decrypted against it.
    """
    from llmops.encrypted_files import encrypted_name, plaintext_sha256, write_encrypted

    hashes = {}
    splits = LEGACY_SPLITS if any(r["split"] == "eval" for r in rows) else SPLITS
    for split in splits:
        name = f"{split}.jsonl"
        uri = storage.join(snapshot_uri, encrypted_name(name))
        lines = "".join(json.dumps({f: r[f] for f in fields}) + "\n" for r in rows if r["split"] == split)
        data = lines.encode()
        digest = hashlib.sha256(data).hexdigest()
        if plaintext_sha256(uri, kek) != digest:  # missing, or not what the rows say (a damaged copy)
            write_encrypted(uri, data, kek)
        hashes[name] = digest
    return hashes


def split_file_uris(lake_root: str, pipeline: str, dataset: str, snapshot_id: str) -> tuple[str, str, str]:
    """The lake URIs of a training snapshot's train, validation and test files: the encrypted ones,
    or the plaintext ``train.jsonl``... of a snapshot written before they were encrypted."""
    from llmops.encrypted_files import encrypted_name

    ref = snapshot_ref(lake_root, TRAINING_ZONE, pipeline, dataset, snapshot_id)
    uris = []
    for name in SPLIT_FILES:
        sealed, plain = storage.join(ref.uri, encrypted_name(name)), storage.join(ref.uri, name)
        uris.append(plain if not storage.exists(sealed) and storage.exists(plain) else sealed)
    return uris[0], uris[1], uris[2]


def read_split_file(uri: str, kek: Any) -> bytes:
    """A split file's plaintext (in memory), whichever of the two forms :func:`split_file_uris` named."""
    from llmops.encrypted_files import ENCRYPTED_SUFFIX, read_encrypted

    return read_encrypted(uri, kek) if uri.endswith(ENCRYPTED_SUFFIX) else storage.read_bytes(uri)
