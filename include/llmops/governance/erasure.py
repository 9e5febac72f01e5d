"""Erasure requests (GDPR Art. 17): remove a data subject from every snapshot, flag the models.

The subject is found by the spec's `dataset.subject_column`: in raw, validated and quarantine
snapshots by its (normalised) value, in curated snapshots by its pseudonymisation token, and in
training datasets through the record keys found upstream. Each snapshot that holds the subject is
rewritten as a new version without those rows (everything else kept: the counts are checked), and
the old version is deleted, key files first. Model versions trained on an affected snapshot are
tagged for review in the registry. The ledger records all of it under a keyed token of the subject,
never the subject itself.

Copies outside the snapshots go too: staged parts of extractions not yet committed, the
record-bearing files (leakage probe prompts) of finetune runs that read a rewritten snapshot, and
the batch-inference answers for the subject's records.

Keyed hashes of the subject and of the record keys found go on the pipeline's suppression list
(`llmops.governance.suppression`), so that the next ingest from a source that still holds the
subject does not bring them back.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.errors import safe_error_text
from llmops.governance import suppression
from llmops.governance.suppression import normalise_value
from llmops.governance.sweep import SnapshotsNotDone, failure_message
from llmops.ledger import record
from llmops.ledger.events import (
    ErasureCompleted,
    ErasureFailed,
    ErasureModelFlagged,
    ErasureRequested,
    ErasureSnapshotRewritten,
    ErasureSuppressed,
)
from llmops.settings import get_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)

REVIEW_TAG = "llmops.erasure_review"
# Files in a job folder that hold records (or text cut from them), plain or encrypted with their key.
RECORD_FILE_SUFFIXES = (".jsonl", ".jsonl.enc", ".jsonl.enc.key.json")


class ErasureError(RuntimeError):
    """The erasure could not be completed; nothing already rewritten is rolled back."""


def normalise_subject(spec: PipelineSpec, value: str) -> str:
    """The subject value as the pipeline stores it after normalisation."""
    return normalise_value(spec, spec.dataset.subject_column or "", value)


def _normalised_column(spec: PipelineSpec, series: pd.Series) -> pd.Series:
    return series.map(lambda v: normalise_subject(spec, v) if isinstance(v, str) else v)


def _rewrite(
    spec: PipelineSpec,
    ref: snapshots.SnapshotRef,
    manifest: dict[str, Any],
    keep: pd.DataFrame,
    removed: int,
    request_id: str,
    kek: Any,
    run_id: str,
) -> str:
    """Write the snapshot again without the subject's rows; delete the old version."""
    import pyarrow as pa

    lake = get_settings().lake_root
    carry = {
        k: v
        for k, v in manifest.items()
        if k
        not in {
            "snapshot_id",
            "zone",
            "pipeline",
            "dataset",
            "created_at",
            "created_by_run",
            "row_count",
            "content_sha256",
            "schema",
            "files",
            "encryption",
            "identity",
        }
    }
    carry["erasure"] = {"request_id": request_id, "replaces": ref.snapshot_id, "rows_removed": removed}
    table = pa.Table.from_pandas(keep.reset_index(drop=True), preserve_index=False)
    new_ref, new_manifest = snapshots.write_snapshot(
        lake_root=lake,
        zone=ref.zone,  # type: ignore[arg-type]
        pipeline=ref.pipeline,
        dataset=ref.dataset,
        table=table,
        metadata=carry,
        kek=kek,
        run_id=run_id,
        identity={
            **manifest.get("identity", {}),
            "erasure_of": ref.snapshot_id,
            "erasure_request": request_id,
        },
    )
    if new_manifest["row_count"] != manifest["row_count"] - removed:
        raise ErasureError(
            f"{ref.zone}/{ref.dataset}/{ref.snapshot_id}: row counts do not reconcile after erasure"
        )
    split_sha256 = None
    if ref.zone == snapshots.TRAINING_ZONE:  # the trainer reads JSON Lines beside the Parquet
        fields = [c for c in keep.columns if c not in ("key", "split")]
        split_sha256 = snapshots.write_split_files(new_ref.uri, keep.to_dict(orient="records"), fields, kek)
    latest = storage.join(snapshots.dataset_uri(lake, ref.zone, ref.pipeline, ref.dataset), snapshots.LATEST)
    repoint = storage.exists(latest) and storage.read_json(latest).get("snapshot_id") == ref.snapshot_id
    snapshots.delete_snapshot(ref, lake)
    if repoint:
        snapshots.set_latest(new_ref, lake)
    record(
        spec,
        ErasureSnapshotRewritten(
            request_id=request_id,
            old_snapshot_id=ref.snapshot_id,
            new_snapshot_id=new_ref.snapshot_id,
            rows_removed=removed,
            rows_kept=new_manifest["row_count"],
            new_sha256=new_manifest["content_sha256"],
            new_split_sha256=split_sha256,
        ),
        f"{ref.zone}/{ref.dataset}/{ref.snapshot_id}",
        run_id,
    )
    return new_ref.snapshot_id


class _Erasure:
    """One subject's erasure from one pipeline's lake: rewrites snapshots, collects keys and counts.

    A snapshot that cannot be read or rewritten is noted in `failures` (file: error) and passed
    over, so one bad file does not leave the subject in every other snapshot."""

    def __init__(self, spec: PipelineSpec, request_id: str, run_id: str, kek: Any, lake: str) -> None:
        self.spec, self.request_id, self.run_id, self.kek, self.lake = spec, request_id, run_id, kek, lake
        self.key = spec.dataset.key
        self.affected_keys: set[str] = set()
        self.replaced: dict[str, str] = {}
        self.rows_removed = 0
        self.failures: dict[str, str] = {}
        self.staging_removed = 0
        self.job_files_removed = 0

    def _each(self, zone: str, visit: Callable[[Any, dict[str, Any]], None]) -> None:
        unreadable: list[tuple[str, str]] = []
        for ref, manifest in snapshots.list_snapshots(self.lake, zone, self.spec.name, unreadable):
            try:
                visit(ref, manifest)
            except (snapshots.SnapshotError, ErasureError) as exc:  # messages name files, not data
                self.failures[snapshots.failed_file(exc) or ref.uri] = safe_error_text(exc)
            except Exception as exc:  # a library's message may quote data: its type only
                self.failures[snapshots.failed_file(exc) or ref.uri] = type(exc).__name__
        self.failures.update(unreadable)

    def _drop(self, ref: Any, manifest: dict[str, Any], df: Any, hit: Any) -> None:
        self.replaced[ref.snapshot_id] = _rewrite(
            self.spec, ref, manifest, df[~hit], int(hit.sum()), self.request_id, self.kek, self.run_id
        )
        self.rows_removed += int(hit.sum())

    def raw_zones(self, column: str, value: str) -> None:
        """Raw and quarantine: rows whose subject column holds the value (after normalisation)."""

        def visit(ref: Any, manifest: dict[str, Any]) -> None:
            df = snapshots.read_snapshot(ref, self.kek).to_pandas()
            if column not in df.columns:
                return
            hit = _normalised_column(self.spec, df[column]) == value
            if hit.any():
                self.affected_keys |= {str(k) for k in df.loc[hit, self.key] if k is not None}
                self._drop(ref, manifest, df, hit)

        for zone in ("raw", "quarantine"):
            self._each(zone, visit)

    def curated(self, column: str, value: str, pseudonymiser: Any) -> None:
        """Curated: by pseudonymisation token (or plain value when the column is kept), and by key."""
        key = self.key

        def visit(ref: Any, manifest: dict[str, Any]) -> None:
            df = snapshots.read_snapshot(ref, self.kek).to_pandas()
            hit = df[key].astype(str).isin(self.affected_keys) if key in df.columns else None
            if column in df.columns:
                column_type = (manifest.get("privacy") or {}).get("column_types", {}).get(column) or "value"
                by_subject = df[column].isin({pseudonymiser.token(value, column_type), value})
                hit = by_subject if hit is None else (hit | by_subject)
                if key in df.columns:
                    self.affected_keys |= {str(k) for k in df.loc[by_subject, key]}
            if hit is not None and hit.any():
                self._drop(ref, manifest, df, hit)

        self._each("curated", visit)

    def staging(self, column: str, value: str) -> None:
        """Staged parts not yet committed (an extraction that failed, or one running now): a staging
        folder that holds the subject, or that cannot be read, is removed whole. An extraction still
        running then fails its commit (a staged part is missing) and its retry extracts again, with
        the suppression list in force."""
        root = storage.join(self.lake, "_staging", self.spec.name)
        doomed: set[str] = set()
        for uri in storage.list_files(root, "**/*"):
            folder = uri.rsplit("/", 1)[0]
            if folder in doomed or uri.endswith(".key.json"):
                continue
            try:
                table = _read_staged_part(uri, self.kek)
            except Exception:  # half-written or damaged: it cannot be shown to be free of the subject
                doomed.add(folder)
                continue
            if column not in table.column_names:
                continue
            values = table.column(column).to_pandas()
            hit = _normalised_column(self.spec, values) == value
            if hit.any():
                if self.key in table.column_names:
                    keys = table.column(self.key).to_pandas()[hit]
                    self.affected_keys |= {str(k) for k in keys if k is not None}
                doomed.add(folder)
        for folder in sorted(doomed):
            storage.delete(folder)
        self.staging_removed += len(doomed)

    def job_files(self) -> None:
        """Record-bearing files in the job folders of finetune runs that read a rewritten snapshot
        (the leakage probe's prompts, cut from training records): deleted. Weights, configs and
        metrics stay; the model versions are flagged for retraining instead."""
        for run_id in sorted(_runs_that_read(self.spec, _rewritten_by(self.spec, self.request_id))):
            for uri in storage.list_files(snapshots.job_uri(self.lake, self.spec.name, run_id), "**/*"):
                if uri.endswith(RECORD_FILE_SUFFIXES):
                    storage.delete(uri)
                    self.job_files_removed += 1

    def training_sets(self) -> None:
        """Training datasets: by record key."""

        def visit(ref: Any, manifest: dict[str, Any]) -> None:
            df = snapshots.read_snapshot(ref, self.kek).to_pandas()
            hit = df["key"].astype(str).isin(self.affected_keys)
            if hit.any():
                self._drop(ref, manifest, df, hit)

        self._each(snapshots.TRAINING_ZONE, visit)


def _read_staged_part(uri: str, kek: Any) -> Any:
    """One staged Parquet part as a table (decrypted with its key sidecar when it has one)."""
    import io

    import pyarrow.parquet as pq

    key_file = uri + ".key.json" if storage.exists(uri + ".key.json") else None
    return pq.read_table(io.BytesIO(snapshots.read_part_bytes(uri, key_file, kek)))


def _rewritten_by(spec: PipelineSpec, request_id: str) -> set[str]:
    """Snapshots this request rewrote, in this attempt or an earlier one (from the ledger)."""
    from llmops.ledger import get_ledger

    return {
        ErasureSnapshotRewritten.read(r).old_snapshot_id
        for r in get_ledger().records(pipeline=spec.name, event_type=ErasureSnapshotRewritten.name)
        if r.payload.get("request_id") == request_id
    }


def _runs_that_read(spec: PipelineSpec, snapshot_ids: set[str]) -> set[str]:
    """Finetune runs whose ledger records name one of these snapshots as their data."""
    from llmops.ledger import get_ledger
    from llmops.ledger.events import FinalDatasetCreated, FinetuneStarted, ModelTrained, StageDatasetCreated

    if not snapshot_ids:
        return set()
    fields = ("curated_snapshot_id", "sft_snapshot_id", "snapshot_id")
    runs: set[str] = set()
    for event in (FinetuneStarted, StageDatasetCreated, FinalDatasetCreated, ModelTrained):
        for r in get_ledger().records(pipeline=spec.name, event_type=event.name):
            if r.run_id and any(r.payload.get(f) in snapshot_ids for f in fields):
                runs.add(r.run_id)
    return runs


def _keys_uri(lake: str, pipeline: str, request_id: str) -> str:
    return storage.join(lake, "erasure", pipeline, f"{request_id}.keys.enc")


def carried_keys(lake: str, pipeline: str, request_id: str, kek: Any) -> set[str]:
    """Record keys an earlier attempt of this request found (encrypted in the lake).

    An attempt that rewrote raw and curated snapshots and then failed leaves the subject's rows
    only in training sets, which are found by record key; the retry no longer finds those keys in
    raw or curated, so it reads them from here."""
    from llmops.privacy.crypto import WrappedKey, decrypt_bytes

    uri = _keys_uri(lake, pipeline, request_id)
    if not storage.exists(uri):
        return set()
    wrapped = WrappedKey.from_dict(storage.read_json(uri + ".key.json"))
    return set(json.loads(decrypt_bytes(storage.read_bytes(uri), wrapped, kek)))


def keep_keys(lake: str, pipeline: str, request_id: str, keys: set[str], kek: Any) -> None:
    """Encrypt the keys found so far under the lake's key, for a retry of this request."""
    from llmops.privacy.crypto import encrypt_bytes

    uri = _keys_uri(lake, pipeline, request_id)
    blob, wrapped = encrypt_bytes(json.dumps(sorted(keys)).encode(), kek)
    storage.write_json(uri + ".key.json", wrapped.to_dict())
    storage.write_bytes(uri, blob)


def forget_keys(lake: str, pipeline: str, request_id: str) -> None:
    for uri in (_keys_uri(lake, pipeline, request_id), _keys_uri(lake, pipeline, request_id) + ".key.json"):
        storage.delete(uri)


def _flag_versions(
    spec: PipelineSpec, replaced: dict[str, str], request_id: str, subject_ref: str, run_id: str
) -> list[dict[str, Any]]:
    """Tag (and record) every registered version trained on a rewritten snapshot for review."""
    from llmops.governance.provenance import registered_versions

    flagged = [
        {"model_name": item["model_name"], "version": item["version"]}
        for item in registered_versions(spec.name)
        if item["curated_snapshot_id"] in replaced
        or any(snapshot_id in replaced for _, snapshot_id in item["training_snapshots"])
    ]
    if flagged:
        _flag_models(flagged, request_id)
    for model in flagged:
        record(
            spec,
            ErasureModelFlagged(
                request_id=request_id,
                subject_ref=subject_ref,
                model_name=model["model_name"],
                version=model["version"],
                action=f"registry tag {REVIEW_TAG} set; retrain without the subject and retire this version",
            ),
            f"model/{model['model_name']}/{model['version']}",
            run_id,
        )
    return flagged


def erase_subject(
    spec: PipelineSpec, subject: str, request_id: str, run_id: str, requested_by: str = "unknown"
) -> dict[str, Any]:
    """Erase one data subject from one pipeline's lake; return counts (no personal data)."""
    from llmops.privacy.keys import get_key_ring, get_pseudonymisation_key
    from llmops.privacy.pii import Pseudonymiser

    column = spec.dataset.subject_column
    if not column:
        raise ErasureError(
            f"pipeline '{spec.name}' declares no dataset.subject_column: it cannot locate subjects"
        )
    if not subject or not subject.strip():
        raise ErasureError("subject id is empty")
    lake = get_settings().lake_root
    kek = get_key_ring()
    pseudonymiser = Pseudonymiser(get_pseudonymisation_key(spec.privacy.pseudonymisation_conn_id))
    value = normalise_subject(spec, subject)
    subject_ref = pseudonymiser.token(value, "subject")
    record(
        spec,
        ErasureRequested(request_id=request_id, subject_ref=subject_ref, requested_by=requested_by),
        f"erasure/{request_id}",
        run_id,
    )
    # Listed before the sweep: an ingest that extracts from now on keeps the subject out.
    first = suppression.add_erased(spec, request_id, value, ())

    erasure = _Erasure(spec, request_id, run_id, kek, lake)
    erasure.affected_keys |= carried_keys(lake, spec.name, request_id, kek)
    erasure.raw_zones(column, value)  # first: the plain value is there, and it yields the record keys
    erasure.staging(column, value)
    erasure.curated(column, value, pseudonymiser)
    if erasure.affected_keys:
        keep_keys(lake, spec.name, request_id, erasure.affected_keys, kek)  # before anything can fail
    listed = suppression.add_erased(spec, request_id, value, erasure.affected_keys)
    record(
        spec,
        ErasureSuppressed(
            request_id=request_id,
            subject_ref=subject_ref,
            entries=listed["entries"],
            added=first["added"] + listed["added"],
            key_id=listed["key_id"],
        ),
        f"erasure/{request_id}",
        run_id,
    )
    erasure.training_sets()
    erasure.job_files()
    batch_answers_removed = _erase_batch_answers(spec, value, erasure.affected_keys)
    replaced, affected_keys, rows_removed = erasure.replaced, erasure.affected_keys, erasure.rows_removed
    flagged = _flag_versions(spec, replaced, request_id, subject_ref, run_id)
    if erasure.failures:
        record(
            spec,
            ErasureFailed(
                pipeline=spec.name,
                request_id=request_id,
                subject_ref=subject_ref,
                files=sorted(erasure.failures),
                errors=[erasure.failures[f] for f in sorted(erasure.failures)],
                rows_removed=rows_removed,
                snapshots_rewritten=len(replaced),
            ),
            f"erasure/{request_id}",
            run_id,
        )
        raise SnapshotsNotDone(failure_message(f"erasure {request_id}", spec.name, erasure.failures))
    summary = {
        "pipeline": spec.name,
        "request_id": request_id,
        "subject_ref": subject_ref,
        "records_found": len(affected_keys),
        "rows_removed": rows_removed,
        "snapshots_rewritten": len(replaced),
        "models_flagged": flagged,
        "suppression_entries": listed["entries"],
        "staging_folders_removed": erasure.staging_removed,
        "job_files_removed": erasure.job_files_removed,
        "batch_answers_removed": batch_answers_removed,
    }
    record(spec, ErasureCompleted(**summary), f"erasure/{request_id}", run_id)
    forget_keys(lake, spec.name, request_id)
    log.info(
        "erasure %s on %s: %d rows in %d snapshots; %d model version(s) flagged",
        request_id,
        spec.name,
        rows_removed,
        len(replaced),
        len(flagged),
    )
    return summary


def _erase_batch_answers(spec: PipelineSpec, value: str, keys: set[str]) -> int:
    """Batch-inference answers for the subject's records (found in the lake, or by the subject
    column of the batch table) deleted from the results table."""
    if spec.batch_inference is None:
        return 0
    from llmops.deployment.batch import erase_answers

    return erase_answers(spec, keys, lambda v: isinstance(v, str) and normalise_subject(spec, v) == value)


def _flag_models(models: list[dict[str, str]], request_id: str) -> None:
    from mlflow import MlflowClient

    from llmops.registry.mlflow_registry import configure

    configure()
    client = MlflowClient()
    for model in models:
        existing = client.get_model_version(model["model_name"], model["version"]).tags.get(REVIEW_TAG)
        requests = sorted({*(existing.split(",") if existing else []), request_id})
        client.set_model_version_tag(model["model_name"], model["version"], REVIEW_TAG, ",".join(requests))


def open_erasure_reviews(model_name: str, version: str) -> list[str]:
    """Erasure requests that flagged this model version and are not yet resolved by a retrain."""
    from mlflow import MlflowClient

    from llmops.registry.mlflow_registry import configure

    configure()
    tag = MlflowClient().get_model_version(model_name, version).tags.get(REVIEW_TAG)
    return [r for r in (tag or "").split(",") if r]
