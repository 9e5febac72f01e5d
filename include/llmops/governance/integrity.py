"""A snapshot is read only if its content is what the ledger recorded when it was made.

Each snapshot's manifest holds the hashes of its files, which proves the files match the manifest,
not that the manifest is the one the pipeline wrote: whoever can edit a Parquet file can recompute
its manifest too. The ledger recorded every snapshot's content hash when it was created (and again
when an erasure rewrote it); the steps that read a snapshot compare the two and refuse a mismatch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmops import snapshots
from llmops.errors import PermanentError
from llmops.ledger import get_ledger
from llmops.ledger.events import (
    ErasureSnapshotRewritten,
    FinalDatasetCreated,
    PiiHandled,
    RawSnapshotCreated,
    StageDatasetCreated,
)

if TYPE_CHECKING:
    from llmops.snapshots import SnapshotRef
    from llmops.specs import PipelineSpec


class SnapshotTampered(PermanentError):
    """A snapshot's content differs from what the ledger recorded when it was made, or the ledger
    has no record of it at all."""


def _creation_subject(ref: SnapshotRef) -> str:
    if ref.zone == "raw":
        return f"raw/{ref.dataset}/{ref.snapshot_id}"
    if ref.zone == "curated":
        return f"curated/{ref.snapshot_id}"
    return f"sft/{ref.snapshot_id}"


_CREATION_EVENTS = {
    RawSnapshotCreated.name: "sha256",
    PiiHandled.name: "sha256",
    StageDatasetCreated.name: "sha256",
    FinalDatasetCreated.name: "sha256",
}


def recorded_sha256(spec: PipelineSpec, ref: SnapshotRef, manifest: dict[str, Any]) -> str | None:
    """The content hash the ledger holds for this snapshot: from its creation, or from the erasure
    that wrote it (the manifest's identity names the snapshot it replaced). None: no record."""
    ledger = get_ledger()
    for row in ledger.records(pipeline=spec.name, subject=_creation_subject(ref)):
        if row.event_type in _CREATION_EVENTS and row.payload.get("sha256"):
            return row.payload["sha256"]
    replaced = (manifest.get("identity") or {}).get("erasure_of")
    if replaced:
        subject = f"{ref.zone}/{ref.dataset}/{replaced}"
        for row in ledger.records(
            pipeline=spec.name, event_type=ErasureSnapshotRewritten.name, subject=subject
        ):
            if row.payload.get("new_snapshot_id") == ref.snapshot_id:
                return row.payload.get("new_sha256") or manifest["content_sha256"]  # before it was recorded
    return None


def recorded_split_sha256(spec: PipelineSpec, ref: SnapshotRef) -> dict[str, str] | None:
    """The hashes of a training snapshot's train.jsonl/eval.jsonl as the ledger recorded them
    (None for a dataset recorded before they were)."""
    ledger = get_ledger()
    for row in ledger.records(pipeline=spec.name, subject=_creation_subject(ref)):
        if row.event_type in (StageDatasetCreated.name, FinalDatasetCreated.name):
            return row.payload.get("split_sha256")
    replaced = (snapshots.read_manifest(ref).get("identity") or {}).get("erasure_of")
    if replaced:
        subject = f"{ref.zone}/{ref.dataset}/{replaced}"
        for row in ledger.records(
            pipeline=spec.name, event_type=ErasureSnapshotRewritten.name, subject=subject
        ):
            if row.payload.get("new_snapshot_id") == ref.snapshot_id:
                return row.payload.get("new_split_sha256")
    return None


def check_snapshot(spec: PipelineSpec, ref: SnapshotRef) -> dict[str, Any]:
    """The snapshot's manifest, once its content hash matches the ledger's record of it."""
    manifest = snapshots.read_manifest(ref)
    recorded = recorded_sha256(spec, ref, manifest)
    where = f"{ref.zone}/{ref.dataset}/{ref.snapshot_id}"
    if recorded is None:
        raise SnapshotTampered(
            f"snapshot {where} ({ref.uri}) has no creation record in the governance ledger: it was not "
            "written by this pipeline; it is not read"
        )
    if recorded != manifest.get("content_sha256"):
        raise SnapshotTampered(
            f"snapshot {where} ({ref.uri}) was altered after it was made: its content hash is "
            f"{str(manifest.get('content_sha256'))[:12]}..., the ledger recorded {recorded[:12]}...; it is not read"
        )
    return manifest


def read_checked(spec: PipelineSpec, ref: SnapshotRef, kek: Any = None) -> Any:
    """The snapshot as a table, after :func:`check_snapshot` (every part is verified against the
    manifest while it is read)."""
    check_snapshot(spec, ref)
    return snapshots.read_snapshot(ref, kek)
