"""The training job config: the contract between the Airflow side and the training entrypoint.

The Airflow task writes one JSON file per job and launches ``python -m llmops.training --config``
in a subprocess or a container. The LoRA, hyperparameter and distributed blocks *are* the
pipeline spec's models, so ``spec.training.lora.model_dump()`` is a valid value and the names
cannot drift.

Inputs and outputs are local paths or ``s3://`` URIs (the config file itself too): a pod in a
cluster reads the lake directly, a local run uses folders.

This module must stay import-light (pydantic only): DAG parsing imports it. Reading a config from
object storage imports :mod:`llmops.storage` lazily, only when a URI is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from llmops.jobs.config import (
    ConfigError,
    StrictConfig,
    check_location,
    config_parent,
    describe_validation_error,
    read_json_config,
    resolve_relative_paths,
)
from llmops.specs.schema import Distributed, Hyperparameters, LoraSpec
from llmops.training.methods import get_method, method_names

if TYPE_CHECKING:
    from pathlib import Path

Device = Literal["auto", "cpu", "cuda"]
Quantization = Literal["none", "4bit"]
DEFAULT_BETA = 0.1


RUN_ID_PATTERN = r"^[0-9a-zA-Z]{1,64}$"


class MlflowTarget(StrictConfig):
    """Where the trainer's own metrics go. With ``run_id`` the job logs into that existing run.

    ``parent_run_id`` makes the job's run a child run (tag ``mlflow.parentRunId``): one child per
    hyperparameter-search trial under the search's parent run.
    """

    tracking_uri: str = Field(min_length=1)
    experiment_name: str | None = None
    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN)
    parent_run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN)
    log_adapter: bool = Field(default=True, description="Log adapter/ as run artifacts (under 'adapter').")


class HpoTarget(StrictConfig):
    """The Optuna trial this job is; evaluations are reported to it and it may be pruned.

    The trial (state RUNNING, e.g. from ``study.ask()``) is looked up by number in the study's RDB
    storage. Pruners are not persisted by Optuna, so the pruner settings travel here; the
    defaults are Optuna's ``MedianPruner`` defaults. The job never finishes the trial itself: the
    orchestrator tells the study the outcome from ``result.json`` (``status`` "pruned" or a value).
    """

    storage_url: str = Field(
        min_length=1,
        description="Optuna RDB storage URL, or env:NAME to read it from the environment variable NAME "
        "(how a URL with a password reaches the job: never written into a config file).",
    )
    study_name: str = Field(min_length=1)
    trial_number: int = Field(ge=0)
    pruner: Literal["median", "none"] = "median"
    n_startup_trials: int = Field(
        default=5, ge=0, description="MedianPruner: completed trials before pruning."
    )
    n_warmup_steps: int = Field(default=0, ge=0, description="MedianPruner: steps before pruning starts.")


class TrainingJobConfig(StrictConfig):
    """Everything one fine-tuning run needs; unknown keys are errors, never silently ignored."""

    method: str = Field(default="sft", description="A training method (llmops.training.methods).")
    base_model_path: str = Field(
        min_length=1, description="Directory saved with save_pretrained: a local path or an s3:// prefix."
    )
    train_file: str = Field(
        min_length=1,
        description="JSONL; rows per method: sft {'prompt', 'completion'}, continued_pretraining {'text'}, "
        "preference {'prompt', 'chosen', 'rejected'}.",
    )
    eval_file: str = Field(
        min_length=1,
        description="Held-out JSONL in the same format as train_file: the validation split (early "
        "stopping, best checkpoint, search trials). Never the test split: that is the evaluation job's.",
    )
    train_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="sha256 the file must have (from the ledger)."
    )
    eval_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="sha256 the file must have (from the ledger)."
    )
    output_dir: str = Field(
        min_length=1,
        description="Receives adapter/, checkpoints/, manifest.json and result.json (local or s3://).",
    )
    lora: LoraSpec = LoraSpec()
    hyperparameters: Hyperparameters = Hyperparameters()
    chat_template: bool = Field(
        default=False,
        description="Render prompt/completion as user/assistant messages with the tokenizer's chat template.",
    )
    quantization: Quantization = Field(default="none", description="4bit: QLoRA (CUDA + bitsandbytes).")
    packing: bool = Field(
        default=False,
        description="sft only: pack sequences; packed sequences never attend to each other. "
        "(continued_pretraining always packs its texts into max_length blocks.)",
    )
    beta: float | None = Field(
        default=None,
        gt=0,
        description=f"preference only: DPO's beta, the strength of the pull towards the reference model "
        f"(default {DEFAULT_BETA}).",
    )
    gradient_checkpointing: bool = False
    device: Device = "auto"
    max_steps: int | None = Field(default=None, gt=0, description="Stop after this many optimizer steps.")
    eval_steps: int | None = Field(
        default=None,
        gt=0,
        description="Evaluate every N steps (and checkpoint with it). Unset: before and after training "
        "only, or every epoch when early stopping or a search trial needs evaluations.",
    )
    save_steps: int | None = Field(
        default=None,
        gt=0,
        description="Checkpoint every N steps. Unset: with eval_steps, else every epoch but at least "
        "every 500 steps.",
    )
    early_stopping_patience: int | None = Field(
        default=None, gt=0, description="Stop after this many evaluations without eval_loss improving."
    )
    resume: bool = Field(
        default=True, description="Resume from the latest complete checkpoint in output_dir."
    )
    merge_adapter: bool = Field(default=False, description="Also save base+adapter merged under merged/.")
    distributed: Distributed = Distributed()
    hpo: HpoTarget | None = None
    mlflow: MlflowTarget | None = None
    provenance: dict[str, Any] = Field(
        default={},
        description="Free-form lineage (pipeline, snapshot ids, spec hash, run id) for the manifest.",
    )
    run_name: str = Field(default="llmops-sft", min_length=1, max_length=250)

    @field_validator("method")
    @classmethod
    def _registered_method(cls, value: str) -> str:
        from llmops.specs.base import one_of

        return one_of(value, method_names())

    @field_validator("base_model_path", "train_file", "eval_file", "output_dir")
    @classmethod
    def _local_or_s3(cls, value: str) -> str:
        return check_location(value)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TrainingJobConfig:
        self._method_rules()
        if self.quantization == "4bit" and self.device == "cpu":
            raise ValueError("quantization: '4bit' (QLoRA) needs a CUDA device, but device is 'cpu'")
        if self.quantization == "4bit" and self.distributed.strategy == "fsdp":
            raise ValueError("quantization: '4bit' cannot be combined with distributed.strategy 'fsdp'")
        if self.distributed.strategy != "none" and self.distributed.processes_per_node < 2:
            raise ValueError(
                "distributed.processes_per_node: distributed training needs at least 2 processes"
            )
        if self.early_stopping_patience is not None and self.save_steps is not None:
            # The best checkpoint is reloaded at the end, so checkpoints must fall on evaluations.
            if self.eval_steps is None or self.save_steps % self.eval_steps:
                raise ValueError(
                    "save_steps: with early_stopping_patience, checkpoints must fall on evaluations; "
                    "set eval_steps and make save_steps a multiple of it"
                )
        return self

    def _method_rules(self) -> None:
        """Settings that belong to one method are errors on another (never silently ignored)."""
        problems = get_method(self.method).setting_problems(
            packing=bool(self.packing), chat_template=self.chat_template, beta=self.beta
        )
        if problems:
            raise ValueError(problems[0])

    @property
    def dpo_beta(self) -> float:
        """The DPO beta in effect (the configured one, else the default)."""
        return self.beta if self.beta is not None else DEFAULT_BETA

    @property
    def data_format(self) -> tuple[str, ...]:
        """The keys every row of train_file and eval_file must have."""
        return get_method(self.method).row_fields

    @property
    def evaluates_during_training(self) -> bool:
        """Whether evaluations happen between steps (not only before and after training)."""
        return self.eval_steps is not None or self.early_stopping_patience is not None or self.hpo is not None

    def resolved_dict(self) -> dict[str, Any]:
        """JSON-able form with absolute paths, the input of ``config_sha256``.

        Method-specific fields are left out while unset, so a config that does not use them has
        the same digest (and resumes the same checkpoints) as before the fields existed.
        """
        return self.model_dump(mode="json", exclude={"beta"} if self.beta is None else None)


def parse_job_config(raw: Any, source: str = "<config>") -> TrainingJobConfig:
    """Validate an already-parsed config mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"(top level): expected a JSON object, got {type(raw).__name__}"])
    try:
        return TrainingJobConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, describe_validation_error(exc)) from None


def load_job_config(path: Path | str) -> TrainingJobConfig:
    """Read and validate a job config file or URI; relative paths resolve against its directory."""
    raw = read_json_config(path)
    raw = resolve_relative_paths(
        raw, config_parent(path), ("base_model_path", "train_file", "eval_file", "output_dir")
    )
    return parse_job_config(raw, str(path))
