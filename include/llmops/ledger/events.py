"""Every kind of governed event the pipelines record, and the one way to record them.

Each event type is a model: its ``name`` (the ledger's ``event_type``) and the fields of its
payload. Writers build one and pass it to :func:`record`, so a misspelt or missing field fails at
the call, not in an audit months later; readers filter by ``<Event>.name`` and can read a row back
with ``<Event>.read(record)``. Nowhere else in the package is an event name written out.

Payloads hold what the event was about (ids, hashes, counts, decisions, settings), never personal
data or secrets: callers pass pseudonymous references and counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

from llmops.ledger.store import get_ledger
from llmops.specs import spec_hash

if TYPE_CHECKING:
    from llmops.ledger.store import LedgerRecord
    from llmops.specs import PipelineSpec

Number = int | float
Version = str | int


class Event(BaseModel):
    """A governed event. Subclasses set ``name`` and declare the payload's fields.

    Only the fields a writer sets are recorded (a field left at its default is absent from the
    payload, as it always was), so optional fields describe variants of one event.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: ClassVar[str]

    def payload(self) -> dict[str, Any]:
        """The payload as recorded: the fields the writer set, under their recorded names."""
        return self.model_dump(exclude_unset=True, by_alias=True)

    @classmethod
    def read(cls, record: LedgerRecord) -> Self:
        """A recorded row of this type as its model. Rows are trusted as written (not re-validated),
        so rows written before a field was added still read: a field they lack reads as None."""
        if record.event_type != cls.name:
            raise ValueError(f"ledger row {record.seq} is a {record.event_type!r}, not a {cls.name!r}")
        payload = record.payload
        values = {field: payload.get(info.alias or field) for field, info in cls.model_fields.items()}
        present = {field for field, info in cls.model_fields.items() if (info.alias or field) in payload}
        return cls.model_construct(_fields_set=present, **values)


# ---------------------------------------------------------------------------------------- ingest


class IngestPlanned(Event):
    name = "ingest.planned"
    items: int
    sources: dict[str, dict[str, Any]]


class RawSnapshotCreated(Event):
    name = "snapshot.raw.created"
    source: str
    kind: str
    conn_id: str | None
    location: str
    query: str | None
    snapshot_id: str
    uri: str
    row_count: int
    files: list[dict[str, Any]]
    sha256: str
    encryption: Any
    watermark: dict[str, Any] | None
    partitions: int
    schema_drift: Any
    governance: Any


class ContractViolated(Event):
    name = "dataset.contract_violated"
    inputs: list[dict[str, Any]]
    contracts: list[dict[str, Any]]
    violations: list[Any]


class NoNewData(Event):
    name = "ingest.no_new_data"
    inputs: list[dict[str, Any]]


class DatasetValidated(Event):
    name = "dataset.validated"
    inputs: Any
    validated_snapshot_id: str
    quarantine_snapshot_id: str
    rows_in: int
    rows_after_normalisation: int
    rows_accepted: int
    rows_quarantined: int
    counts_reconcile: bool
    quarantine_reasons: dict[str, Any]
    normalisation: dict[str, Any]
    contracts: list[dict[str, Any]]
    validation: dict[str, Any]
    quality: dict[str, Any]
    quality_trend: Any
    rows_suppressed: int | None = None  # rows of erased subjects dropped at extract and validation


class PiiHandled(Event):
    name = "pii.handled"
    validated_snapshot_id: str
    curated_snapshot_id: str
    uri: str
    row_count: int
    carried_forward_rows: int
    sha256: str
    files: list[dict[str, Any]]
    columns: list[str]
    privacy: dict[str, Any]
    residual_pii: dict[str, int]
    governance: dict[str, Any]


class CuratedSnapshotPublished(Event):
    name = "snapshot.curated.published"
    asset: str


class WatermarkAdvanced(Event):
    name = "watermark.advanced"
    source: str
    column: str
    low: Any = Field(alias="from")  # recorded as "from" (a keyword in Python)
    high: Any = Field(alias="to")


# -------------------------------------------------------------------------------------- finetune


class FinetuneStarted(Event):
    name = "finetune.started"
    curated_snapshot_id: str
    params: dict[str, Any]


class _TrainingDataset(Event):
    curated_snapshot_id: str
    stage: str
    method: str
    dataset: str
    sha256: str
    train_rows: int
    eval_rows: int  # the validation split (early stopping, search), its name from before test existed
    validation_rows: int | None = None
    test_rows: int | None = None  # held out for the gates only
    skipped_rows: int
    skipped_by_rule: dict[str, int]
    pii_replacements: dict[str, int]
    suite: dict[str, Any]
    stats: dict[str, Any]
    columns: list[str]
    split_sha256: dict[str, str] | None = None  # per split file: what the jobs check they read
    canaries: dict[str, Any] | None = None  # planted in the train split: counts and keyed hashes only


class StageDatasetCreated(_TrainingDataset):
    """The dataset of a preceding chain stage."""

    name = "dataset.stage.created"
    snapshot_id: str


class FinalDatasetCreated(_TrainingDataset):
    """The dataset of the final stage (whatever its method)."""

    name = "dataset.sft.created"
    sft_snapshot_id: str
    template: str | None


class SearchPlanned(Event):
    name = "hpo.planned"
    study: str
    storage: str
    trials: list[dict[str, Any]]
    direction: str


class TrialSkipped(Event):
    name = "hpo.trial_skipped"
    trial: int
    params: dict[str, Any] | None
    budget: Number
    spent: Number
    currency: str
    reason: str


class SearchCompleted(Event):
    name = "hpo.completed"
    study: str
    trials: list[dict[str, Any]]
    completed_in_study: int
    best: dict[str, Any] | None


class StageTrained(Event):
    name = "model.stage_trained"
    stage: str
    method: str
    dataset: str
    mlflow_run_id: str
    snapshot_id: str
    base_model_dir: str
    merged_model_dir: str
    merged_model_sha256: str | None
    metrics: dict[str, Number]
    base_eval_loss: Number | None
    gates: list[dict[str, Any]]
    passed: bool
    hyperparameters: dict[str, Any]
    lora: dict[str, Any]
    usage: dict[str, Any]


class ModelTrained(Event):
    name = "model.trained"
    mlflow_run_id: str
    adapter_dir: str
    base_model_dir: str
    manifest_path: str | None
    sft_snapshot_id: str
    curated_snapshot_id: str
    method: str
    chain: list[dict[str, Any]]
    train_loss: Number | None
    eval_loss: Number | None
    base_model: str
    launcher: str
    lora: dict[str, Any]
    hyperparameters: dict[str, Any]
    tuned_by_search: bool
    max_steps: int | None
    result: dict[str, Any]
    usage: dict[str, Any]


class CostRecorded(Event):
    name = "cost.recorded"
    mlflow_run_id: str
    currency: str | None
    totals: dict[str, Any]
    jobs: list[dict[str, Any]]
    trials_skipped_for_budget: int


class ModelEvaluated(Event):
    name = "model.evaluated"
    metrics: dict[str, Any]
    champion: str | None
    pii_probe: dict[str, Any] | None


class ModelGated(Event):
    name = "model.gated"
    passed: bool
    gates: list[dict[str, Any]]
    champion_compared: bool
    base_compared: bool
    champion: str | None
    # The champion version current when the evaluation ran (None: none), recorded when the spec
    # compares with the champion; promotion re-checks it under the promotion lock.
    champion_version: Version | None = None
    # A champion existed but could not be scored: why, and whether the spec let its gates pass.
    champion_unavailable: str | None = None
    on_champion_unavailable: str | None = None


class ModelRegistered(Event):
    name = "model.registered"
    model_name: str
    version: Version
    model_uri: str
    mlflow_run_id: str
    alias: str


class _ApprovalDecision(Event):
    model_name: str
    version: Version
    approved: bool
    outcome: str
    approver: dict[str, str] | None
    responded_at: Any
    # Every answer counted (min_approvers > 1), and the run's triggering user, who may not approve.
    approvers: list[dict[str, str]] | None = None
    triggered_by: str | None = None


class ModelApproved(_ApprovalDecision):
    name = "model.approved"


class ModelRejected(_ApprovalDecision):
    name = "model.rejected"


class PromotionSkipped(Event):
    name = "model.promotion_skipped"
    reason: str
    # Set when refused because the champion changed after gating: the one now, the one gated against.
    champion: Version | None = None
    gated_against: Version | None = None


class ModelPromoted(Event):
    name = "model.promoted"
    model_name: str
    version: Version
    champion: Version
    previous: Version | None


class ModelRolledBack(Event):
    name = "model.rolled_back"
    model_name: str
    champion: Version
    rolled_back: Version | None
    reason: str
    requested_by: str | None


class _Deployment(Event):
    model_name: str
    version: Version
    target: str
    trigger: str
    passed: bool
    error: str | None = None
    endpoint: dict[str, Any] | None = None
    smoke_test: dict[str, Any] | None = None
    manifest_uri: str | None = None
    objects: list[str] | None = None
    namespace: str | None = None
    image: str | None = None
    model_uri: str | None = None
    lora_rank: int | None = None
    validated_against: str | None = None
    warnings: list[str] | None = None


class ModelDeployed(_Deployment):
    name = "model.deployed"


class ModelDeploymentFailed(_Deployment):
    name = "model.deployment_failed"


class IntegrationNotified(Event):
    name = "integration.notified"
    event: str
    event_id: str
    conn_id: str | None
    origin: str | None
    http_status: int | None
    attempts: int | None
    model: str | None
    version: Version | None


class BatchScored(Event):
    name = "batch.scored"
    model_name: str
    model_version: Version
    source: dict[str, Any]
    target_conn_id: str
    rows_read: int
    rows_scored: int
    rows_unchanged: int
    pii_redactions: int
    seconds: Number
    model_seconds: Number
    target_table: str


# -------------------------------------------------------------------------------------- monitoring


class MonitoringMeasured(Event):
    name = "monitoring.measured"
    model_name: str
    model_version: Version
    reference_snapshot_id: str
    current_snapshot_id: str
    same_snapshot: bool
    measured_at: str
    text_columns: list[str]
    category_column: str | None
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    breaches: list[str]
    quality: dict[str, Any] | None
    alert: bool
    retrain: dict[str, Any] | None


class MonitoringAlerted(Event):
    name = "monitoring.alerted"
    breaches: list[str]
    channels: list[Any]
    http_status: int | None
    attempts: int | None
    current_snapshot_id: str


class RetrainTriggered(Event):
    name = "monitoring.retrain_triggered"
    dag_id: str
    conf: dict[str, Any] | None
    triggered_run_id: str | None
    breaches: list[str]
    model_name: str | None
    model_version: Version | None


# -------------------------------------------------------------------------------------- governance


class ReportGenerated(Event):
    """A fine-tune run's audit report (html, json, decision) or a model version's report (files)."""

    name = "report.generated"
    html: str | None = None
    json_uri: str | None = Field(default=None, alias="json")  # "json" is a BaseModel method
    decision: str | None = None
    kind: str | None = None
    model_name: str | None = None
    version: Version | None = None
    folder: str | None = None
    files: dict[str, dict[str, Any]] | None = None
    period: dict[str, Any] | None = None
    status: str | None = None
    ledger_verified: bool | None = None


class TaskFailed(Event):
    name = "task.failed"
    dag_id: str
    task_id: str
    map_index: int | None
    try_number: int | None
    error_type: str
    error: str


class ErasureRequested(Event):
    name = "erasure.requested"
    request_id: str
    subject_ref: str
    requested_by: str | None


class ErasureSnapshotRewritten(Event):
    name = "erasure.snapshot_rewritten"
    request_id: str
    old_snapshot_id: str
    new_snapshot_id: str
    rows_removed: int
    rows_kept: int
    new_sha256: str | None = None  # the rewritten content's hash: what readers check it against
    new_split_sha256: dict[str, str] | None = None  # a training snapshot's rewritten split files


class ErasureModelFlagged(Event):
    name = "erasure.model_flagged"
    request_id: str
    subject_ref: str
    model_name: str
    version: Version
    action: str


class ErasureCompleted(Event):
    name = "erasure.completed"
    pipeline: str
    request_id: str
    subject_ref: str
    records_found: int
    rows_removed: int
    snapshots_rewritten: int
    models_flagged: list[dict[str, Any]]
    suppression_entries: int | None = None  # keyed hashes listed so that ingest keeps them out
    staging_folders_removed: int = 0  # uncommitted extractions that held the subject
    job_files_removed: int = 0  # probe prompts and other record-bearing job files
    batch_answers_removed: int = 0  # rows of the batch-inference results table


class ErasureSuppressed(Event):
    """The subject and record keys of a request are on the pipeline's suppression list: counts and
    the public id of the hashing key only."""

    name = "erasure.suppressed"
    request_id: str
    subject_ref: str
    entries: int
    added: int
    key_id: str


class ErasureFailed(Event):
    """One pipeline's erasure could not be finished: its spec does not load, or these files could
    not be rewritten. `errors` holds this package's messages or exception type names, never data."""

    name = "erasure.failed"
    pipeline: str
    request_id: str
    subject_ref: str | None = None  # None when the spec (with its pseudonymisation key) does not load
    files: list[str]
    errors: list[str]
    rows_removed: int | None = None
    snapshots_rewritten: int | None = None


class _RetentionItem(Event):
    zone: str
    dataset: str
    snapshot_id: str
    created_at: str
    age_days: Number
    retention_days: Number
    rows: int | None


class RetentionKept(_RetentionItem):
    name = "retention.kept"
    reason: str


class RetentionDeleted(_RetentionItem):
    name = "retention.deleted"


class RetentionApplied(Event):
    name = "retention.applied"
    examined: int
    deleted: int
    kept: int
    dry_run: bool
    now: str


class RetentionFailed(Event):
    """One pipeline's retention could not be finished: its spec does not load, or these files
    could not be read or deleted."""

    name = "retention.failed"
    files: list[str]
    errors: list[str]
    deleted: int | None = None


def _concrete(base: type[Event]) -> list[type[Event]]:
    found = []
    for sub in base.__subclasses__():
        if "name" in sub.__dict__:
            found.append(sub)
        found.extend(_concrete(sub))
    return found


EVENT_TYPES: dict[str, type[Event]] = {cls.name: cls for cls in _concrete(Event)}


def record(spec: PipelineSpec, event: Event, subject: str, run_id: str | None) -> LedgerRecord:
    """Append one event of `spec`'s pipeline, stamped with the hash of the spec it ran under."""
    return get_ledger().append(
        pipeline=spec.name,
        event_type=event.name,
        subject=subject,
        run_id=run_id,
        payload={"spec_hash": spec_hash(spec), **event.payload()},
    )


def record_unloaded(pipeline: str, event: Event, subject: str, run_id: str | None) -> LedgerRecord:
    """Append an event of a pipeline whose spec cannot be loaded, so has no hash: `spec_hash` is
    null. Only for recording that failure; everything else goes through :func:`record`."""
    return get_ledger().append(
        pipeline=pipeline,
        event_type=event.name,
        subject=subject,
        run_id=run_id,
        payload={"spec_hash": None, **event.payload()},
    )
