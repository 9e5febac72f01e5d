"""The evaluation job config: what the Airflow side writes for ``python -m llmops.evaluation``.

Import-light (pydantic only), like :mod:`llmops.training.config`: DAG parsing imports it. Every
location may be a local path or an ``s3://`` URI, like the training job's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, field_validator

from llmops.training.config import (
    ConfigError,
    Device,
    StrictConfig,
    check_location,
    config_parent,
    describe_validation_error,
    read_json_config,
    resolve_relative_paths,
)

if TYPE_CHECKING:
    from pathlib import Path


class EvalJobConfig(StrictConfig):
    """One offline evaluation of an adapter (and, by default, of its base model for the lift)."""

    base_model_path: str = Field(
        min_length=1, description="Directory saved with save_pretrained: a local path or an s3:// prefix."
    )
    adapter_path: str = Field(min_length=1, description="The adapter/ directory written by the training job.")
    eval_file: str = Field(min_length=1, description="JSONL of {'prompt': str, 'completion': str}.")
    output_file: str = Field(min_length=1, description="Metrics JSON, written atomically (local or s3://).")
    max_samples: int = Field(default=64, gt=0, description="Prompts to generate for (loss uses every row).")
    max_new_tokens: int = Field(default=64, gt=0, le=4096)
    batch_size: int = Field(default=8, gt=0, le=4096, description="Rows per forward pass for the loss.")
    seed: int = 42
    device: Device = "auto"
    include_baseline: bool = True
    chat_template: bool = Field(
        default=False,
        description="Score and prompt through the tokenizer's chat template, as a job trained with it.",
    )

    @field_validator("base_model_path", "adapter_path", "eval_file", "output_file")
    @classmethod
    def _local_or_s3(cls, value: str) -> str:
        return check_location(value)


def parse_eval_config(raw: Any, source: str = "<config>") -> EvalJobConfig:
    """Validate an already-parsed config mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"(top level): expected a JSON object, got {type(raw).__name__}"])
    try:
        return EvalJobConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, describe_validation_error(exc)) from None


def load_eval_config(path: Path | str) -> EvalJobConfig:
    """Read and validate an eval config file or URI; relative paths resolve against its directory."""
    raw = read_json_config(path)
    raw = resolve_relative_paths(
        raw, config_parent(path), ("base_model_path", "adapter_path", "eval_file", "output_file")
    )
    return parse_eval_config(raw, str(path))
