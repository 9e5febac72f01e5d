"""Pipeline spec: the declarative YAML that describes one fine-tuning use case.

Every model forbids unknown keys, so a typo in a spec is an error that names the field rather
than a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from llmops import metrics
from llmops.privacy import pii_types

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
PIPELINE_NAME = re.compile(r"^[a-z][a-z0-9_]{1,40}$")

Identifier = Annotated[
    str,
    Field(pattern=IDENTIFIER.pattern, description="A SQL-safe identifier: letters, digits, underscore."),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Governance(StrictModel):
    """Who owns a source and what it may be used for; travels with every derived snapshot."""

    data_owner: str
    purposes: list[str] = Field(min_length=1)
    lawful_basis: Literal[
        "consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests"
    ]
    classification: Literal["public", "internal", "confidential", "restricted"] = "confidential"
    retention_days: int = Field(default=365, gt=0)
    consent_scope: list[str] | None = Field(
        default=None,
        description="With lawful_basis 'consent': the purposes data subjects consented to.",
    )

    @model_validator(mode="after")
    def _consent_has_scope(self) -> Governance:
        if self.lawful_basis == "consent" and not self.consent_scope:
            raise ValueError("lawful_basis 'consent' needs a consent_scope (the purposes consented to)")
        return self

    def allows(self, purpose: str) -> str | None:
        """Why this source may not serve `purpose`, or None when it may."""
        if purpose not in self.purposes:
            return f"purpose '{purpose}' is not among its purposes ({', '.join(self.purposes)})"
        if self.lawful_basis == "consent" and purpose not in (self.consent_scope or []):
            return f"purpose '{purpose}' is outside the consent scope ({', '.join(self.consent_scope or [])})"
        return None


ContractType = Literal["string", "int", "float", "bool", "timestamp", "date"]


class ColumnContract(StrictModel):
    """What a source promises about one column."""

    type: ContractType = "string"
    nullable: bool = True
    unique: bool = False
    allowed_values: list[str] | None = None
    pattern: str | None = Field(
        default=None, description="A regular expression every non-null value matches."
    )
    max_length: int | None = Field(default=None, gt=0)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from None
        return value


class Freshness(StrictModel):
    column: Identifier
    max_age_hours: float = Field(gt=0)


class DataContract(StrictModel):
    """A source's promise, checked before any expectation runs.

    Row-level promises (type, nullability, allowed values, pattern, length) quarantine the rows that
    break them; table-level ones (columns present, uniqueness, freshness, minimum rows) fail the run.
    """

    columns: dict[Identifier, ColumnContract] = {}
    freshness: Freshness | None = None
    min_rows: int = Field(default=0, ge=0)
    allow_extra_columns: bool = True


class Sampling(StrictModel):
    """A seeded sample of a source: for dry runs, and to validate huge sources cheaply."""

    fraction: float | None = Field(default=None, gt=0, le=1)
    rows: int | None = Field(default=None, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _one_of(self) -> Sampling:
        if (self.fraction is None) == (self.rows is None):
            raise ValueError("sample needs exactly one of 'fraction' or 'rows'")
        return self


class Incremental(StrictModel):
    """Extract only rows whose watermark column is above the last committed high-water mark."""

    column: Identifier
    initial_value: str | None = Field(
        default=None, description="Lower bound (exclusive) for the very first run; none means all rows."
    )


class Partitioning(StrictModel):
    """Split a big table into partitions extracted by parallel (mapped) tasks."""

    column: Identifier
    method: Literal["hash", "mod", "range"] = Field(
        default="hash",
        description="hash: any column (Postgres/MySQL); mod: integer column; range: numeric column split "
        "into equal ranges between its min and max.",
    )
    partitions: int = Field(ge=2, le=256)


ScalarParam = str | int | float | bool


class SqlSource(StrictModel):
    kind: Literal["sql"]
    name: Identifier
    conn_id: str = Field(description="Airflow connection holding the database URL and credentials.")
    table: Identifier | None = None
    db_schema: Identifier | None = Field(default=None, description="Database schema of `table`.")
    query: str | None = Field(
        default=None,
        description="A SELECT with named bind parameters (:name) instead of a table; values go in `params`.",
    )
    params: dict[Identifier, ScalarParam] = {}
    columns: list[Identifier] = Field(min_length=1)
    incremental: Incremental | None = None
    partitioning: Partitioning | None = None
    chunk_rows: int = Field(default=50_000, ge=100, le=1_000_000)
    sample: Sampling | None = None
    contract: DataContract | None = None
    governance: Governance

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.query is not None:
            head = self.query.lstrip().split(None, 1)[0].upper() if self.query.strip() else ""
            if head not in ("SELECT", "WITH"):
                raise ValueError("query must be a single SELECT (or WITH ... SELECT) statement")
            if ";" in self.query.rstrip().rstrip(";"):
                raise ValueError("query must be a single statement (no ';' inside)")
        elif self.params:
            raise ValueError("params are only used with 'query'")
        return self

    @property
    def partition_count(self) -> int:
        return self.partitioning.partitions if self.partitioning else 1


class RestPagination(StrictModel):
    type: Literal["page", "offset", "cursor", "link", "none"] = "page"
    page_param: str = "page"
    start_page: int = Field(default=1, ge=0)
    size_param: str = "per_page"
    page_size: int = Field(default=100, gt=0, le=10_000)
    offset_param: str = "offset"
    cursor_param: str = "cursor"
    cursor_path: str = Field(default="next_cursor", description="Dotted path to the next cursor in a page.")
    max_pages: int = Field(default=1000, gt=0)


class RestSource(StrictModel):
    kind: Literal["rest"]
    name: Identifier
    conn_id: str = Field(description="Airflow HTTP connection: base URL, and the secret as password.")
    endpoint: str = Field(pattern=r"^/[^\s]*$")
    params: dict[str, ScalarParam] = Field(default={}, description="Fixed query parameters.")
    records_path: str = Field(default="data", description="Dotted path to the list of records in each page.")
    columns: list[Identifier] = Field(min_length=1)
    pagination: RestPagination = RestPagination()
    timeout_seconds: float = Field(default=30.0, gt=0, description="Per request.")
    max_requests: int = Field(
        default=1000, gt=0, description="Request budget per extraction, retries included."
    )
    deadline_seconds: float = Field(default=3600.0, gt=0, description="Wall-clock budget per extraction.")
    sample: Sampling | None = None
    contract: DataContract | None = None
    governance: Governance

    @property
    def partition_count(self) -> int:
        return 1


class CsvOptions(StrictModel):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    header: bool = True


class FileSource(StrictModel):
    """CSV, JSON Lines or Parquet files under a prefix: ``s3://bucket/prefix/`` or a local folder."""

    kind: Literal["files"]
    name: Identifier
    uri: str = Field(description="s3://bucket/prefix/ (through the Amazon provider) or a local folder.")
    conn_id: str | None = Field(default="aws_default", description="AWS connection for s3:// URIs.")
    pattern: str = Field(default="*", description="Glob of file names under the prefix, e.g. '*.csv'.")
    format: Literal["csv", "jsonl", "parquet"]
    csv: CsvOptions = CsvOptions()
    columns: list[Identifier] = Field(min_length=1)
    sample: Sampling | None = None
    contract: DataContract | None = None
    governance: Governance

    @property
    def partition_count(self) -> int:
        return 1


Source = Annotated[SqlSource | RestSource | FileSource, Field(discriminator="kind")]


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


class PrivacySpec(StrictModel):
    columns: dict[Identifier, ColumnPolicy] = {}
    free_text: FreeTextPolicy | None = None
    pseudonymisation_conn_id: str = Field(
        default="llmops_pseudonymisation_key", description="Connection whose password is the HMAC key."
    )


class LoraSpec(StrictModel):
    r: int = Field(default=8, gt=0, le=512)
    alpha: int = Field(default=16, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class Hyperparameters(StrictModel):
    learning_rate: float = Field(default=2e-4, gt=0, lt=1)
    epochs: float = Field(default=1.0, gt=0, le=100)
    batch_size: int = Field(default=8, gt=0, le=4096)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    max_length: int = Field(default=512, ge=16)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = Field(default=0.0, ge=0)
    seed: int = 42


class BaseModelSpec(StrictModel):
    uri: str = Field(
        description="Local path, s3:// URI, or a name relative to the model store (LLMOPS_MODEL_STORE)."
    )


class Toleration(StrictModel):
    key: str
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class SecretEnv(StrictModel):
    """Environment from a Kubernetes secret: a whole secret (`env` unset) or one key as `env`."""

    secret: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    key: str | None = None
    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _key_and_env_together(self) -> SecretEnv:
        if (self.key is None) != (self.env is None):
            raise ValueError(
                "give both 'key' and 'env' (one key as one variable), or neither (the whole secret)"
            )
        return self


class KubernetesSpec(StrictModel):
    """Where and how training pods run when `launcher: kubernetes`."""

    namespace: str = "llmops"
    image: str = Field(
        description="The trainer image (Dockerfile target `trainer`), ideally pinned by digest."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = []
    service_account: str | None = None
    kubernetes_conn_id: str = "kubernetes_default"
    gpus: int = Field(default=1, ge=0, le=16)
    gpu_resource: str = "nvidia.com/gpu"
    cpu: str = "8"
    memory: str = "64Gi"
    ephemeral_storage: str = Field(default="100Gi", description="Scratch volume for caches and checkpoints.")
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = [Toleration(key="nvidia.com/gpu")]
    secrets: list[SecretEnv] = Field(
        default=[], description="Credentials for the pod (object storage, MLflow): never passed as arguments."
    )
    startup_timeout_seconds: int = Field(
        default=1800, ge=60, description="Time for a GPU node pool to scale up and pull the image."
    )
    execution_timeout_minutes: int = Field(default=24 * 60, gt=0)
    deferrable: bool = True


class Distributed(StrictModel):
    strategy: Literal["none", "ddp", "fsdp"] = "none"
    processes_per_node: int = Field(default=1, ge=1, le=16, description="torchrun --nproc-per-node (GPUs).")


class SearchParameter(StrictModel):
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[float | int | str] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> SearchParameter:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs 'choices'")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError("a numeric parameter needs 'low' < 'high'")
        elif self.log and self.low <= 0:
            raise ValueError("'log' needs a positive 'low'")
        return self


SEARCHABLE = (
    "learning_rate",
    "epochs",
    "batch_size",
    "weight_decay",
    "warmup_ratio",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
)


class SearchSpec(StrictModel):
    """Hyperparameter search: Optuna (TPE sampler, median pruner), one trial per mapped task."""

    trials: int = Field(default=4, ge=1, le=200)
    parallelism: int = Field(default=2, ge=1, le=64, description="Trials running at once.")
    metric: Literal["eval_loss"] = "eval_loss"
    direction: Literal["minimize", "maximize"] = "minimize"
    max_steps_per_trial: int | None = Field(
        default=None, gt=0, description="Cap each trial's optimizer steps."
    )
    space: dict[str, SearchParameter] = Field(min_length=1)

    @field_validator("space")
    @classmethod
    def _known_parameters(cls, value: dict[str, SearchParameter]) -> dict[str, SearchParameter]:
        unknown = sorted(set(value) - set(SEARCHABLE))
        if unknown:
            raise ValueError(f"cannot search {', '.join(unknown)}; searchable: {', '.join(SEARCHABLE)}")
        return value


def template_fields(template: str) -> list[str]:
    """The column names a prompt template uses; raises when it uses none or anything but names."""
    import string

    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    if not fields:
        raise ValueError("prompt_template must reference at least one column, e.g. '{body}'")
    for field in fields:
        if not IDENTIFIER.match(field):
            raise ValueError(f"prompt_template field {{{field}}} is not a plain column name")
    return fields


TrainingMethod = Literal["sft", "continued_pretraining", "preference"]
#: Columns a method may not be given, per method (a setting of another method is an error).
_METHOD_FIELDS = {
    "sft": ("prompt_template", "completion_column"),
    "continued_pretraining": ("text_columns",),
    "preference": ("prompt_template", "chosen_column", "rejected_column"),
}
_ALL_METHOD_FIELDS = tuple(dict.fromkeys(f for fields in _METHOD_FIELDS.values() for f in fields))


class MethodData(StrictModel):
    """What one training method learns from: columns of the curated dataset, per method.

    ``sft``: a prompt rendered from ``prompt_template`` and the answer in ``completion_column``.
    ``continued_pretraining``: unlabelled text, the ``text_columns`` of each record joined by a
    blank line. ``preference``: a prompt and two answers, ``chosen_column`` preferred over
    ``rejected_column`` (DPO, strength ``beta``).
    """

    method: TrainingMethod = "sft"
    prompt_template: str | None = Field(
        default=None, description="sft, preference: Python format string over columns, e.g. '{subject}'."
    )
    chat_template: bool = Field(
        default=False,
        description="Render prompt/answer as a user/assistant conversation with the base model's chat template.",
    )
    completion_column: Identifier | None = Field(default=None, description="sft: the answer column.")
    text_columns: list[Identifier] = Field(
        default=[], description="continued_pretraining: columns joined into one document per record."
    )
    chosen_column: Identifier | None = Field(default=None, description="preference: the preferred answer.")
    rejected_column: Identifier | None = Field(default=None, description="preference: the worse answer.")
    beta: float | None = Field(
        default=None, gt=0, description="preference: DPO's pull towards the reference model (default 0.1)."
    )
    eval_fraction: float = Field(default=0.15, gt=0, lt=0.9)

    @field_validator("prompt_template")
    @classmethod
    def _template_fields_are_identifiers(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)
        return value

    @model_validator(mode="after")
    def _method_columns(self) -> MethodData:
        needed = _METHOD_FIELDS[self.method]
        for name in needed:
            if not getattr(self, name):
                raise ValueError(f"{name}: required by method '{self.method}'")
        for name in _ALL_METHOD_FIELDS:
            if name not in needed and getattr(self, name):
                users = [m for m, fields in _METHOD_FIELDS.items() if name in fields]
                raise ValueError(
                    f"{name}: only used by method {' / '.join(users)}, but method is '{self.method}'"
                )
        if self.beta is not None and self.method != "preference":
            raise ValueError(f"beta: only used by method 'preference', but method is '{self.method}'")
        if self.chat_template and self.method == "continued_pretraining":
            raise ValueError("chat_template: continued_pretraining trains on raw text, not conversations")
        if self.method == "preference" and self.chosen_column == self.rejected_column:
            raise ValueError("rejected_column: must differ from chosen_column")
        return self

    @property
    def input_columns(self) -> list[str]:
        """The curated columns this method turns into training text, in order."""
        cols = template_fields(self.prompt_template) if self.prompt_template else []
        cols += [c for c in (self.completion_column, self.chosen_column, self.rejected_column) if c]
        return list(dict.fromkeys([*cols, *self.text_columns]))

    @property
    def prompt_columns(self) -> list[str]:
        """The columns the model reads as input: the prompt template's, or the raw text columns."""
        if self.prompt_template:
            return list(dict.fromkeys(template_fields(self.prompt_template)))
        return list(self.text_columns)

    @property
    def reference_column(self) -> str | None:
        """The column holding a good answer to the prompt (for quality checks), if the method has one."""
        return self.completion_column or self.chosen_column

    @property
    def dataset_name(self) -> str:
        """The name of the training dataset snapshots of this method."""
        return TRAINING_DATASETS[self.method]


TRAINING_DATASETS = {
    "sft": "prompt_completion",
    "continued_pretraining": "text_corpus",
    "preference": "preference_pairs",
}
#: Metrics a chain stage's training job reports, which stage gates may bound.


def _one_of(value: str, allowed: tuple[str, ...]) -> str:
    """Refuse a name outside `allowed` the way pydantic words a Literal (the list is the catalogue's)."""
    if value not in allowed:
        quoted = [repr(a) for a in allowed]
        expected = ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return value


class StageGate(StrictModel):
    """A bound on a chain stage's own held-out metric: the chain stops when it is not met."""

    metric: str = Field(description="A metric the stage's training job reports (llmops.metrics, stage=True).")
    min: float | None = None
    max: float | None = None

    @field_validator("metric")
    @classmethod
    def _stage_metric(cls, value: str) -> str:
        return _one_of(value, metrics.stage_metrics())

    @model_validator(mode="after")
    def _one_bound(self) -> StageGate:
        if self.min is None and self.max is None:
            raise ValueError("a stage gate needs 'min' or 'max'")
        return self

    def as_gate(self) -> Gate:
        """The same bound as a promotion gate, so one mechanism checks both."""
        return Gate(metric=self.metric, min=self.min, max=self.max)


class StageSpec(MethodData):
    """A stage trained before the final one; its merged model is the next stage's base model."""

    name: Identifier
    lora: LoraSpec = LoraSpec()
    hyperparameters: Hyperparameters = Hyperparameters()
    gates: list[StageGate] = []


RESERVED_STAGE_NAMES = frozenset({"train", "eval", "search", "final"})


class TrainingSpec(MethodData):
    base_model: BaseModelSpec
    launcher: Literal["local", "kubernetes"] = "local"
    kubernetes: KubernetesSpec | None = None
    lora: LoraSpec = LoraSpec()
    quantization: Literal["none", "4bit"] = Field(
        default="none", description="4bit: QLoRA (CUDA + bitsandbytes)."
    )
    hyperparameters: Hyperparameters = Hyperparameters()
    packing: bool = Field(default=False, description="sft: pack sequences (no cross-attention between them).")
    gradient_checkpointing: bool = False
    early_stopping_patience: int | None = Field(
        default=None, gt=0, description="Evaluations without improvement."
    )
    eval_steps: int | None = Field(default=None, gt=0, description="Evaluate (and checkpoint) every N steps.")
    distributed: Distributed = Distributed()
    search: SearchSpec | None = None
    preceding_stages: list[StageSpec] = Field(
        default=[],
        description="Stages trained first, in order (e.g. continued_pretraining before sft); each one's "
        "adapter is merged into its base and the result is the next stage's base. The stage this block "
        "describes comes last and is the one evaluated, gated and registered.",
    )

    @model_validator(mode="after")
    def _launcher_settings(self) -> TrainingSpec:
        if self.launcher == "kubernetes" and self.kubernetes is None:
            raise ValueError("launcher 'kubernetes' needs a 'kubernetes' block (at least the trainer image)")
        if self.distributed.strategy != "none" and self.distributed.processes_per_node < 2:
            raise ValueError("distributed training needs processes_per_node >= 2")
        if self.kubernetes and self.distributed.processes_per_node > max(self.kubernetes.gpus, 1):
            raise ValueError("distributed.processes_per_node cannot exceed kubernetes.gpus")
        if self.packing and self.method != "sft":
            raise ValueError(
                f"packing: only method 'sft' packs examples (continued_pretraining always packs its text "
                f"into blocks; preference compares pairs), but method is '{self.method}'"
            )
        names = [s.name for s in self.preceding_stages]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"preceding_stages: stage names must be unique; repeated: {', '.join(repeated)}")
        reserved = sorted(RESERVED_STAGE_NAMES & set(names))
        if reserved:
            raise ValueError(f"preceding_stages: reserved stage name(s) {', '.join(reserved)}")
        return self

    @property
    def methods(self) -> list[str]:
        """Every method this pipeline trains with, in chain order (the final one last)."""
        return [*(s.method for s in self.preceding_stages), self.method]


class GoldenSet(StrictModel):
    """A fixed, reviewed evaluation set (JSON Lines of {"prompt", "completion"}), scored every run."""

    name: Identifier
    uri: str = Field(description="Local path (relative to the project) or s3:// URI of the JSON Lines file.")


class PiiProbe(StrictModel):
    """Prompt the model with the start of records that held PII before redaction, and with planted
    canaries, and count how often it produces one of those values."""

    enabled: bool = True
    max_prompts: int = Field(default=40, gt=0)
    max_new_tokens: int = Field(default=48, gt=0, le=1024)
    canaries: list[str] = Field(
        default=[], description="Values planted in the raw data that must never come out of the model."
    )


class EvaluationSpec(StrictModel):
    max_samples: int = Field(default=64, gt=0)
    max_new_tokens: int = Field(default=64, gt=0, le=4096)
    label_metrics: bool = Field(
        default=False,
        description="Completions are labels: also report accuracy and macro precision/recall/F1.",
    )
    golden_sets: list[GoldenSet] = []
    pii_probe: PiiProbe = PiiProbe()
    blocked_terms: list[str] = Field(
        default=[], description="Words an answer must not contain (toxicity rate)."
    )
    refusal_terms: list[str] = Field(
        default=["i cannot help", "i can't help", "i am unable to", "as an ai"],
        description="Phrases that mark a refusal (refusal rate).",
    )
    compare_with_champion: bool = Field(
        default=True, description="Also evaluate the current champion on the same data in the same run."
    )


class Gate(StrictModel):
    """A condition for promotion: an absolute bound, or beating the current champion by a margin."""

    metric: str = Field(description="A metric name, or golden.<set>.<metric> for a golden set.")
    min: float | None = None
    max: float | None = None
    beat_champion_by: float | None = Field(
        default=None,
        description="Must be better than the champion (on the same data, same run) by this much.",
    )
    beat_base_by: float | None = Field(
        default=None,
        description="Must be better than the base model (adapter disabled, same data, same run) by this "
        "much; on eval_loss a margin m means a perplexity at most exp(-m) times the base model's.",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if not metrics.gate_metric_pattern().match(value):
            raise ValueError(
                f"unknown metric {value!r}; known: {', '.join(metrics.names())} (or golden.<set>.<metric>)"
            )
        return value

    @model_validator(mode="after")
    def _one_bound(self) -> Gate:
        if (
            self.min is None
            and self.max is None
            and self.beat_champion_by is None
            and self.beat_base_by is None
        ):
            raise ValueError("a gate needs 'min', 'max', 'beat_champion_by' or 'beat_base_by'")
        return self

    @property
    def lower_is_better(self) -> bool:
        return metrics.get(self.metric).lower_is_better


class Approval(StrictModel):
    """A human decision in the Airflow UI before the champion alias moves."""

    required: bool = False
    timeout_hours: float = Field(default=72, gt=0, description="No answer in time counts as a rejection.")
    approvers: list[str] = Field(default=[], description="Airflow user ids allowed to decide (empty: any).")


class RegistrySpec(StrictModel):
    model_name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
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
    alert_conn_id: str | None = Field(
        default=None, description="HTTP connection of a webhook (Slack, Teams, ...)."
    )
    retrain_on_drift: bool = False


DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DeployTarget = Literal["mlflow", "kserve", "vllm"]
KUBERNETES_TARGETS = frozenset({"kserve", "vllm"})


class MlflowServing(StrictModel):
    """Target `mlflow`: the champion answers a real request through MLflow's scoring server.

    The deploy step starts `mlflow models serve -m models:/<model>@champion --env-manager local` on
    the worker's loopback, sends one /invocations request, records answer and latency, and stops it.
    """

    smoke_prompt: str | None = Field(
        default=None,
        description="Prompt of the smoke request; default: the first prompt of the version's eval split.",
    )
    startup_timeout_seconds: float = Field(default=300, gt=0, le=3600)
    request_timeout_seconds: float = Field(default=120, gt=0, le=3600)
    max_latency_ms: float | None = Field(
        default=None, gt=0, description="Fail the deployment when the smoke request takes longer."
    )


class ServingKubernetes(StrictModel):
    """Targets `vllm` / `kserve`: a vLLM OpenAI-compatible server with the base model and the LoRA
    adapter, fetched from the registry version by an init container."""

    namespace: str = Field(default="llmops", pattern=DNS_LABEL)
    image: str = Field(
        default="vllm/vllm-openai:v0.11.0", description="The vLLM server image (pin it by digest)."
    )
    fetch_image: str | None = Field(
        default=None,
        description="Image of the init container that downloads the version (has llmops + MLflow); "
        "default: training.kubernetes.image (the trainer image).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = []
    service_account: str | None = Field(default=None, pattern=DNS_LABEL)
    replicas: int = Field(default=1, ge=1, le=100)
    max_replicas: int | None = Field(default=None, ge=1, le=100, description="KServe autoscaling bound.")
    gpus: int = Field(default=1, ge=0, le=16)
    gpu_resource: str = "nvidia.com/gpu"
    cpu: str = "4"
    memory: str = "32Gi"
    model_volume_size: str = Field(default="50Gi", description="emptyDir the model is fetched into.")
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = [Toleration(key="nvidia.com/gpu")]
    secrets: list[SecretEnv] = Field(
        default=[],
        description="Credentials of the fetch container (artifact store, MLflow): by reference only.",
    )
    max_model_len: int | None = Field(default=None, gt=0)
    extra_args: list[str] = Field(default=[], description="More `vllm serve` arguments.")
    port: int = Field(default=8000, ge=1024, le=65535)

    @model_validator(mode="after")
    def _replicas(self) -> ServingKubernetes:
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError("max_replicas cannot be below replicas")
        return self


class DeploymentSpec(StrictModel):
    """What happens after `champion` moves (promotion or rollback): off unless targets are listed."""

    targets: list[DeployTarget] = Field(
        default=[],
        description="mlflow: smoke-test the MLflow scoring server; vllm: Deployment + Service manifest; "
        "kserve: InferenceService manifest. Empty: no deploy step.",
    )
    mlflow: MlflowServing = MlflowServing()
    kubernetes: ServingKubernetes = ServingKubernetes()

    @field_validator("targets")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        repeated = sorted({t for t in value if value.count(t) > 1})
        if repeated:
            raise ValueError(f"targets must be unique; repeated: {', '.join(repeated)}")
        return value


IntegrationEvent = Literal["promoted", "rolled_back", "gate_failed", "deployment_failed"]


class IntegrationsSpec(StrictModel):
    """Downstream systems told about model events through a signed webhook (an HTTP connection)."""

    webhook_conn_id: str | None = Field(
        default=None,
        description="HTTP connection of the receiver; its password is the HMAC signing secret.",
    )
    events: list[IntegrationEvent] = ["promoted", "rolled_back", "gate_failed", "deployment_failed"]
    mlflow_registry_webhook: bool = Field(
        default=False,
        description="Also register an MLflow registry webhook (alias and version events) at the same URL "
        "and secret: needs an MLflow tracking server.",
    )

    @model_validator(mode="after")
    def _needs_connection(self) -> IntegrationsSpec:
        if self.mlflow_registry_webhook and not self.webhook_conn_id:
            raise ValueError("mlflow_registry_webhook needs webhook_conn_id (the URL and secret to register)")
        return self


class BatchInferenceSpec(StrictModel):
    """The `<pipeline>__batch_inference` DAG: score a table with the champion, upsert the answers."""

    conn_id: str = Field(description="Airflow connection of the database holding the rows to score.")
    table: Identifier | None = None
    db_schema: Identifier | None = None
    query: str | None = Field(
        default=None,
        description="A SELECT with named bind parameters instead of a table; values in `params`.",
    )
    params: dict[Identifier, ScalarParam] = {}
    key_column: Identifier = Field(description="Identifies a row; the results are keyed by it.")
    prompt_template: str | None = Field(
        default=None,
        description="Python format string over the row's columns; default: training.prompt_template.",
    )
    target_table: Identifier
    target_schema: Identifier | None = None
    target_conn_id: str | None = Field(default=None, description="Default: conn_id.")
    chunk_rows: int = Field(default=64, ge=1, le=10_000, description="Rows scored and committed at a time.")
    max_rows: int | None = Field(default=None, gt=0)
    max_new_tokens: int | None = Field(default=None, gt=0, le=4096)
    redact_pii: bool = Field(
        default=True,
        description="Mask the privacy.free_text PII types in prompts and answers (the model was trained on "
        "redacted text; raw PII never reaches it or the results table).",
    )
    schedule: str | None = Field(default=None, description="Cron or preset; none: triggered only.")

    @model_validator(mode="after")
    def _table_or_query(self) -> BatchInferenceSpec:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.query is not None:
            head = self.query.lstrip().split(None, 1)[0].upper() if self.query.strip() else ""
            if head not in ("SELECT", "WITH") or ";" in self.query.rstrip().rstrip(";"):
                raise ValueError("query must be a single SELECT (or WITH ... SELECT) statement")
        elif self.params:
            raise ValueError("params are only used with 'query'")
        return self

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)
        return value


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
    description: str
    owner: str
    purpose: str = Field(description="The purpose this model serves; every source must allow it.")
    tags: list[str] = []
    schedule: str | None = Field(default="@daily", description="Cron or preset for the ingest DAG.")
    sources: list[Source] = Field(min_length=1)
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

    def source(self, name: str) -> SqlSource | RestSource | FileSource:
        """The source called `name` (a plan or snapshot names it; the spec must still have it)."""
        for source in self.sources:
            if source.name == name:
                return source
        raise ValueError(f"pipeline '{self.name}' has no source '{name}'")
