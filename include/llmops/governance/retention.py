"""Retention: delete snapshots older than the spec allows, and record every decision.

Raw snapshots follow their source's `governance.retention_days`; derived datasets follow the
spec's `retention` block (defaulting to the shortest source retention, since they contain every
source). Snapshots that the current champion or previous model were trained on are kept while that
holds, when `retention.keep_model_lineage` is on, and the ledger says why each one was kept.
Deleting removes the key files first: encrypted parts are unreadable from that moment.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.errors import safe_error_text
from llmops.governance.sweep import SnapshotsNotDone, failure_message
from llmops.ledger import record
from llmops.ledger.events import RetentionApplied, RetentionDeleted, RetentionFailed, RetentionKept
from llmops.settings import get_settings

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)

ZONES = ("raw", "quarantine", "curated", "sft")
STAGING_GRACE = timedelta(days=1)


def retention_days(spec: PipelineSpec, zone: str, dataset: str) -> int:
    shortest = min(s.governance.retention_days for s in spec.sources)
    by_source = {s.name: s.governance.retention_days for s in spec.sources}
    curated = spec.retention.curated_days or shortest
    if zone == "raw":
        return by_source.get(dataset, shortest)  # "validated" holds every source: the shortest
    if zone == "quarantine":
        return spec.retention.quarantine_days
    if zone == "curated":
        return curated
    return spec.retention.training_data_days or curated


def protected_snapshots(spec: PipelineSpec) -> dict[tuple[str, str, str], str]:
    """Snapshots in the lineage of the champion and previous model versions, with the reason."""
    if not spec.retention.keep_model_lineage:
        return {}
    from llmops.governance.provenance import model_lineage
    from llmops.registry.mlflow_registry import CHAMPION, PREVIOUS, alias_version

    protected: dict[tuple[str, str, str], str] = {}
    for alias in (CHAMPION, PREVIOUS):
        version = alias_version(spec.registry.model_name, alias)
        if version is None:
            continue
        for key in model_lineage(spec.name, spec.registry.model_name, version).snapshots:
            protected.setdefault(key, f"lineage of {spec.registry.model_name} v{version} ({alias})")
    return protected


def _age(manifest: dict[str, Any], now: datetime) -> timedelta:
    created = datetime.fromisoformat(manifest["created_at"])
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return now - created


def apply_retention(spec: PipelineSpec, now: datetime, run_id: str, dry_run: bool = False) -> dict[str, Any]:
    """Delete the pipeline's expired snapshots (unless protected); return what was done."""
    settings = get_settings()
    lake = settings.lake_root
    protected = protected_snapshots(spec)
    summary: dict[str, Any] = {"deleted": [], "kept": [], "examined": 0, "dry_run": dry_run}
    failures: dict[str, str] = {}  # file: error; the rest still done, then the pipeline fails
    for zone in ZONES:
        unreadable: list[tuple[str, str]] = []
        for ref, manifest in snapshots.list_snapshots(lake, zone, spec.name, unreadable):
            summary["examined"] += 1
            days = retention_days(spec, zone, ref.dataset)
            age = _age(manifest, now)
            if age <= timedelta(days=days):
                continue
            item = {
                "zone": zone,
                "dataset": ref.dataset,
                "snapshot_id": ref.snapshot_id,
                "created_at": manifest["created_at"],
                "age_days": round(age.total_seconds() / 86400, 2),
                "retention_days": days,
                "rows": manifest.get("row_count"),
            }
            reason = protected.get((zone, ref.dataset, ref.snapshot_id))
            if reason:
                summary["kept"].append({**item, "reason": reason})
                record(
                    spec,
                    RetentionKept(**item, reason=reason),
                    f"{zone}/{ref.dataset}/{ref.snapshot_id}",
                    run_id,
                )
                continue
            if not dry_run:
                try:
                    _delete(spec, ref, lake)
                except Exception as exc:  # named by file and type: a library's text may quote data
                    failures[ref.uri] = safe_error_text(exc)
                    continue
                record(spec, RetentionDeleted(**item), f"{zone}/{ref.dataset}/{ref.snapshot_id}", run_id)
            summary["deleted"].append(item)
        failures.update(unreadable)
    summary["staging_cleared"] = [] if dry_run else _clear_stale_staging(spec, now)
    record(
        spec,
        RetentionApplied(
            examined=summary["examined"],
            deleted=len(summary["deleted"]),
            kept=len(summary["kept"]),
            dry_run=dry_run,
            now=now.isoformat(),
        ),
        "retention",
        run_id,
    )
    log.info(
        "retention %s: %d snapshots examined, %d deleted, %d kept for model lineage",
        spec.name,
        summary["examined"],
        len(summary["deleted"]),
        len(summary["kept"]),
    )
    if failures:
        files = sorted(failures)
        record(
            spec,
            RetentionFailed(
                files=files, errors=[failures[f] for f in files], deleted=len(summary["deleted"])
            ),
            "retention",
            run_id,
        )
        raise SnapshotsNotDone(failure_message("retention", spec.name, failures))
    return summary


def _delete(spec: PipelineSpec, ref: snapshots.SnapshotRef, lake: str) -> None:
    snapshots.delete_snapshot(ref, lake)
    if ref.zone == "raw" and ref.dataset == "validated":
        storage.delete(storage.join(lake, "validation", spec.name, f"{ref.snapshot_id}.json"))


def _clear_stale_staging(spec: PipelineSpec, now: datetime) -> list[str]:
    """Staged parts of runs that never committed (crashed, abandoned) are raw data too: clear them."""
    lake = get_settings().lake_root
    cleared = []
    root = storage.join(lake, "_staging", spec.name)
    for dataset in storage.list_dirs(root):
        for run in storage.list_dirs(storage.join(root, dataset)):
            folder = storage.join(root, dataset, run)
            fs, path = storage.filesystem(folder)
            try:
                modified = max((_mtime(fs.info(f)) for f in fs.find(path)), default=None)
            except FileNotFoundError:
                continue
            if modified is None or now - modified > STAGING_GRACE:
                storage.delete(folder)
                cleared.append(f"{dataset}/{run}")
    return cleared


def _mtime(info: dict[str, Any]) -> datetime:
    value = info.get("mtime") or info.get("LastModified") or info.get("created")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value or 0), tz=UTC)
