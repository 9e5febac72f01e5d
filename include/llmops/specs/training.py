"""Training in a pipeline spec: the method and its data, the base model, LoRA, hyperparameters,
search, chain stages, and where the jobs run (local or Kubernetes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from llmops import metrics
from llmops.specs.base import IDENTIFIER, ConnId, Identifier, StrictModel, one_of, reject_parent_segments
from llmops.specs.evaluation import Gate
from llmops.training.methods import REGISTRY, get_method, method_names
from llmops.training.methods.base import METHOD_SPEC_FIELDS


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
    max_length: int = Field(default=512, ge=16, le=131_072, description="Tokens per training example.")
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = Field(default=0.0, ge=0)
    seed: int = 42


class BaseModelSpec(StrictModel):
    uri: str = Field(
        description="Local path, s3:// URI, or a name relative to the model store (LLMOPS_MODEL_STORE)."
    )

    @field_validator("uri")
    @classmethod
    def _no_parent_segments(cls, value: str) -> str:
        return reject_parent_segments(value)


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


class KekSecret(StrictModel):
    """The Kubernetes secret key holding the lake's KEK: base64, as in the ``llmops_kek``
    connection's password. Jobs decrypt their inputs (split files, probe prompts) with it."""

    secret: str = Field(default="llmops-kek", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    key: str = Field(default="kek", pattern=r"^[-._a-zA-Z0-9]+$")


class KubernetesSpec(StrictModel):
    """Where and how training pods run when `launcher: kubernetes`."""

    namespace: str = "llmops"
    image: str = Field(
        description="The trainer image (Dockerfile target `trainer`), ideally pinned by digest."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = []
    service_account: str | None = None
    kubernetes_conn_id: ConnId = "kubernetes_default"
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
    kek_secret: KekSecret | None = Field(
        default_factory=KekSecret,
        description="Where the pod's LLMOPS_KEK comes from (a secretKeyRef); null only when every data key "
        "is wrapped by AWS KMS (kms_key_id).",
    )
    kms_key_id: str | None = Field(
        default=None,
        description="The AWS KMS key (id, ARN or alias) the lake's data keys are wrapped with, when KMS is used: "
        "the pod unwraps them with its own AWS identity (kms:Decrypt).",
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


class MethodData(StrictModel):
    """What one training method learns from: columns of the curated dataset, per method.

    ``sft``: a prompt rendered from ``prompt_template`` and the answer in ``completion_column``.
    ``continued_pretraining``: unlabelled text, the ``text_columns`` of each record joined by a
    blank line. ``preference``: a prompt and two answers, ``chosen_column`` preferred over
    ``rejected_column`` (DPO, strength ``beta``).
    """

    method: str = Field(default="sft", description="A training method (llmops.training.methods).")
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
    validation_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Share of records (by key hash) held out for validation: early stopping, best "
        "checkpoint, search trials, stage gates. Never trained on. Alias: eval_fraction (deprecated).",
    )
    test_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Share of records (by key hash) held out for the final test: the evaluation job, "
        "the promotion gates and the champion comparison. Never given to a training job.",
    )

    @model_validator(mode="before")
    @classmethod
    def _eval_fraction_alias(cls, data: Any) -> Any:
        """``eval_fraction`` (deprecated) is the old name of ``validation_fraction``."""
        if isinstance(data, dict) and "eval_fraction" in data:
            if "validation_fraction" in data:
                raise ValueError("eval_fraction: deprecated alias of validation_fraction; give only one")
            data = {("validation_fraction" if k == "eval_fraction" else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _splits_leave_training_rows(self) -> MethodData:
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"validation_fraction ({self.validation_fraction}) + test_fraction ({self.test_fraction}) "
                "must be below 1: the rest is the train split"
            )
        return self

    @field_validator("prompt_template")
    @classmethod
    def _template_fields_are_identifiers(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)
        return value

    @field_validator("method")
    @classmethod
    def _registered_method(cls, value: str) -> str:
        return one_of(value, method_names())

    @model_validator(mode="after")
    def _method_columns(self) -> MethodData:
        method = get_method(self.method)
        needed = method.spec_fields
        for name in needed:
            if not getattr(self, name):
                raise ValueError(f"{name}: required by method '{self.method}'")
        for name in METHOD_SPEC_FIELDS:
            if name not in needed and getattr(self, name):
                users = [m.name for m in REGISTRY.values() if name in m.spec_fields]
                raise ValueError(
                    f"{name}: only used by method {' / '.join(users)}, but method is '{self.method}'"
                )
        problems = method.setting_problems(packing=False, chat_template=self.chat_template, beta=self.beta)
        if problems:
            raise ValueError(problems[0])
        if self.chosen_column is not None and self.chosen_column == self.rejected_column:
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
        return get_method(self.method).dataset


class StageGate(StrictModel):
    """A bound on a chain stage's own held-out metric: the chain stops when it is not met."""

    metric: str = Field(description="A metric the stage's training job reports (llmops.metrics, stage=True).")
    min: float | None = None
    max: float | None = None

    @field_validator("metric")
    @classmethod
    def _stage_metric(cls, value: str) -> str:
        return one_of(value, metrics.stage_metrics())

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
        if self.packing and not get_method(self.method).packing:
            raise ValueError(
                get_method(self.method).setting_problems(packing=True, chat_template=False, beta=None)[0]
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
