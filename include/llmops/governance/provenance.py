"""Which snapshots a model version was built from, read back from the governance ledger.

The chain is: model.registered (version) -> model.trained in the same finetune run (curated and
SFT snapshot ids) -> pii.handled of that curated snapshot (its ingest run) -> the ingest run's raw,
validated and quarantine snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmops import snapshots
from llmops.ledger import get_ledger
from llmops.ledger.events import (
    DatasetValidated,
    ModelRegistered,
    ModelTrained,
    PiiHandled,
    RawSnapshotCreated,
)


@dataclass
class ModelLineage:
    model_name: str
    version: str
    finetune_run_id: str | None = None
    ingest_run_id: str | None = None
    snapshots: set[tuple[str, str, str]] = field(default_factory=set)  # (zone, dataset, snapshot_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "finetune_run_id": self.finetune_run_id,
            "ingest_run_id": self.ingest_run_id,
            "snapshots": [{"zone": z, "dataset": d, "snapshot_id": s} for z, d, s in sorted(self.snapshots)],
        }


def registered_versions(pipeline: str) -> list[dict[str, Any]]:
    """Every model version the pipeline registered: name, version, run ids and snapshot ids."""
    ledger = get_ledger()
    out = []
    for record in ledger.records(pipeline=pipeline, event_type=ModelRegistered.name):
        registered = ModelRegistered.read(record)
        runs = ledger.records(pipeline=pipeline, event_type=ModelTrained.name, run_id=record.run_id)
        trained = ModelTrained.read(runs[-1]) if runs else None
        out.append(
            {
                "model_name": registered.model_name,
                "version": str(registered.version),
                "finetune_run_id": record.run_id,
                "curated_snapshot_id": trained.curated_snapshot_id if trained else None,
                "sft_snapshot_id": trained.sft_snapshot_id if trained else None,
                "training_snapshots": _training_snapshots(trained),
            }
        )
    return out


def _training_snapshots(trained: ModelTrained | None) -> list[tuple[str, str]]:
    """(dataset, snapshot id) of every training dataset of a model: the final stage's and the chain's."""
    from llmops.training.methods import get_method

    if trained is None:
        return []
    out = []
    if trained.sft_snapshot_id:
        out.append((get_method(trained.method or "sft").dataset, trained.sft_snapshot_id))
    out += [(c["dataset"], c["snapshot_id"]) for c in trained.chain or [] if c.get("snapshot_id")]
    return out


def ingest_run_of_curated(pipeline: str, curated_snapshot_id: str) -> str | None:
    handled = get_ledger().records(
        pipeline=pipeline, subject=f"curated/{curated_snapshot_id}", event_type=PiiHandled.name
    )
    return handled[-1].run_id if handled else None


def ingest_snapshots(pipeline: str, ingest_run_id: str) -> set[tuple[str, str, str]]:
    """The raw, validated and quarantine snapshots one ingest run wrote."""
    found: set[tuple[str, str, str]] = set()
    for record in get_ledger().records(pipeline=pipeline, run_id=ingest_run_id):
        if record.event_type == RawSnapshotCreated.name:
            raw = RawSnapshotCreated.read(record)
            found.add(("raw", raw.source, raw.snapshot_id))
        elif record.event_type == DatasetValidated.name:
            validated = DatasetValidated.read(record)
            found.add(("raw", "validated", validated.validated_snapshot_id))
            found.add(("quarantine", "rows", validated.quarantine_snapshot_id))
    return found


def model_lineage(pipeline: str, model_name: str, version: str) -> ModelLineage:
    lineage = ModelLineage(model_name, str(version))
    for item in registered_versions(pipeline):
        if item["model_name"] != model_name or item["version"] != str(version):
            continue
        lineage.finetune_run_id = item["finetune_run_id"]
        for dataset, snapshot_id in item["training_snapshots"]:
            lineage.snapshots.add((snapshots.TRAINING_ZONE, dataset, snapshot_id))
        if item["curated_snapshot_id"]:
            lineage.snapshots.add(("curated", snapshots.CURATED_DATASET, item["curated_snapshot_id"]))
            lineage.ingest_run_id = ingest_run_of_curated(pipeline, item["curated_snapshot_id"])
            if lineage.ingest_run_id:
                lineage.snapshots |= ingest_snapshots(pipeline, lineage.ingest_run_id)
    return lineage
