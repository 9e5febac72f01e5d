"""Immutable, content-addressed dataset snapshots in the lake.

A snapshot is a folder ``<lake>/<zone>/<pipeline>/<dataset>/<snapshot_id>/`` holding one Parquet
file (encrypted for zones that may hold raw PII) and ``manifest.json``. The id is derived from the
data itself, so the same input always yields the same snapshot and a retried task finds its own
earlier work instead of writing a duplicate. The manifest is written last: a folder without one
is an interrupted write and is never read.

Zones: ``raw`` (as extracted, encrypted), ``quarantine`` (rows that failed validation, encrypted),
``curated`` (validated, PII handled), ``sft`` (prompt/completion splits for training).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from llmops import storage

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

Zone = Literal["raw", "quarantine", "curated", "sft"]
ENCRYPTED_ZONES: frozenset[str] = frozenset({"raw", "quarantine"})
MANIFEST = "manifest.json"
LATEST = "LATEST.json"


class SnapshotError(RuntimeError):
    """A snapshot is missing, incomplete or does not match its manifest."""


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


def parquet_bytes(table: pa.Table) -> bytes:
    """Serialise deterministically: same rows and schema give the same bytes (and so the same id)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=True, use_dictionary=True)
    return buf.getvalue()


def _schema_of(table: pa.Table) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in table.schema]


def write_snapshot(
    *,
    lake_root: str,
    zone: Zone,
    pipeline: str,
    dataset: str,
    table: pa.Table,
    metadata: dict[str, Any],
    kek: bytes | None = None,
    run_id: str | None = None,
    identity: dict[str, Any] | None = None,
) -> tuple[SnapshotRef, dict[str, Any]]:
    """Write a snapshot unless an identical one exists; return its reference and manifest.

    ``identity`` adds what, beyond the data, makes two snapshots different (e.g. the split seed);
    ``metadata`` is recorded but does not change the id.
    """
    data = parquet_bytes(table)
    data_sha = hashlib.sha256(data).hexdigest()
    identity_blob = repr(sorted((identity or {}).items())).encode()
    snapshot_id = hashlib.sha256(data_sha.encode() + b"|" + identity_blob).hexdigest()[:20]
    folder = storage.join(dataset_uri(lake_root, zone, pipeline, dataset), snapshot_id)
    manifest_uri = storage.join(folder, MANIFEST)
    ref = SnapshotRef(zone, pipeline, dataset, snapshot_id, folder)
    if storage.exists(manifest_uri):
        log.info("snapshot %s/%s/%s already committed; reusing it", zone, dataset, snapshot_id)
        return ref, storage.read_json(manifest_uri)

    encrypted = zone in ENCRYPTED_ZONES
    file_entry: dict[str, Any] = {"sha256": data_sha, "bytes": len(data)}
    encryption: dict[str, Any] | None = None
    if encrypted:
        if kek is None:
            raise SnapshotError(f"zone '{zone}' holds raw data and must be encrypted: no key given")
        from llmops.privacy.crypto import encrypt_bytes

        ciphertext, wrapped = encrypt_bytes(data, kek)
        file_entry.update(name="data.parquet.enc", ciphertext_sha256=hashlib.sha256(ciphertext).hexdigest())
        storage.write_bytes(storage.join(folder, "data.parquet.enc"), ciphertext)
        storage.write_json(storage.join(folder, "data.key.json"), wrapped.to_dict())
        encryption = {"algorithm": wrapped.algorithm, "kek_id": wrapped.kek_id, "key_file": "data.key.json"}
    else:
        file_entry["name"] = "data.parquet"
        storage.write_bytes(storage.join(folder, "data.parquet"), data)

    manifest = {
        "snapshot_id": snapshot_id,
        "zone": zone,
        "pipeline": pipeline,
        "dataset": dataset,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "created_by_run": run_id,
        "row_count": table.num_rows,
        "schema": _schema_of(table),
        "files": [file_entry],
        "encryption": encryption,
        "identity": identity or {},
        **metadata,
    }
    storage.write_json(manifest_uri, manifest)  # commit point
    log.info("snapshot %s/%s/%s committed: %d rows", zone, dataset, snapshot_id, table.num_rows)
    return ref, manifest


def read_manifest(ref_or_uri: SnapshotRef | str) -> dict[str, Any]:
    folder = ref_or_uri.uri if isinstance(ref_or_uri, SnapshotRef) else ref_or_uri
    manifest_uri = storage.join(folder, MANIFEST)
    if not storage.exists(manifest_uri):
        raise SnapshotError(f"no committed snapshot at {folder} (manifest.json missing)")
    return storage.read_json(manifest_uri)


def read_snapshot(ref_or_uri: SnapshotRef | str, kek: bytes | None = None) -> pa.Table:
    """Read a snapshot's rows, checking them against the manifest's hash."""
    import pyarrow.parquet as pq

    folder = ref_or_uri.uri if isinstance(ref_or_uri, SnapshotRef) else ref_or_uri
    manifest = read_manifest(folder)
    entry = manifest["files"][0]
    blob = storage.read_bytes(storage.join(folder, entry["name"]))
    if manifest.get("encryption"):
        if kek is None:
            raise SnapshotError(
                f"snapshot {manifest['snapshot_id']} is encrypted: a key is needed to read it"
            )
        from llmops.privacy.crypto import WrappedKey, decrypt_bytes

        wrapped = WrappedKey.from_dict(
            storage.read_json(storage.join(folder, manifest["encryption"]["key_file"]))
        )
        blob = decrypt_bytes(blob, wrapped, kek)
    if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        raise SnapshotError(f"snapshot {manifest['snapshot_id']}: data does not match the manifest's sha256")
    return pq.read_table(io.BytesIO(blob))


def ref_from_manifest(lake_root: str, manifest: dict[str, Any]) -> SnapshotRef:
    folder = storage.join(
        dataset_uri(lake_root, manifest["zone"], manifest["pipeline"], manifest["dataset"]),
        manifest["snapshot_id"],
    )
    return SnapshotRef(
        manifest["zone"], manifest["pipeline"], manifest["dataset"], manifest["snapshot_id"], folder
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
