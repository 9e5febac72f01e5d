"""The training job config: the contract between the Airflow side and the training entrypoint.

The Airflow task writes one JSON file per job and launches ``python -m llmops.training --config``
in a subprocess or a container. The LoRA and hyperparameter blocks *are* the pipeline spec's
models, so ``spec.training.lora.model_dump()`` is a valid value and the names cannot drift.

This module must stay import-light (pydantic only): DAG parsing imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmops.specs.schema import Hyperparameters, LoraSpec

if TYPE_CHECKING:
    from collections.abc import Iterable

Device = Literal["auto", "cpu", "cuda"]


class ConfigError(ValueError):
    """A job config that cannot be used; the message names the file, the field and the problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"invalid job config {source}:\n" + "\n".join(f"  - {p}" for p in problems))


def _field_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def describe_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem, each starting with the dotted field path (e.g. ``lora.r: ...``)."""
    problems = []
    for error in exc.errors(include_url=False):
        # Drop union/literal branch tags (e.g. "list[str]", "literal['all-linear']") from the path.
        loc = [p for p in error["loc"] if isinstance(p, int) or not any(c in str(p) for c in "[]'")]
        where = _field_path(loc)
        if error["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown field (check its spelling or remove it)")
        elif error["type"] == "missing":
            problems.append(f"{where}: required field is missing")
        elif "input" in error and error["type"] != "model_type":
            shown = repr(error["input"])
            if len(shown) > 80:
                shown = shown[:77] + "..."
            problems.append(f"{where}: {error['msg']} (got {shown})")
        else:
            problems.append(f"{where}: {error['msg']}")
    return list(dict.fromkeys(problems))


def read_json_config(path: Path | str) -> dict[str, Any]:
    """Read a JSON object from ``path``, raising ConfigError for unreadable or non-object files."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror or exc}"]) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            str(path), [f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), [f"(top level): expected a JSON object, got {type(raw).__name__}"])
    return raw


def resolve_relative_paths(raw: dict[str, Any], base_dir: Path, fields: Iterable[str]) -> dict[str, Any]:
    """Make relative local paths absolute against ``base_dir`` (the config file's directory).

    A job directory can then hold its config and data side by side and be launched from any
    working directory. URIs (``scheme://``) are left as they are.
    """
    out = dict(raw)
    for name in fields:
        value = out.get(name)
        if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute():
            out[name] = str((base_dir / value).resolve())
    return out


class StrictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowTarget(StrictConfig):
    """Where the trainer's own metrics go. With ``run_id`` the job logs into that existing run."""

    tracking_uri: str = Field(min_length=1)
    experiment_name: str | None = None
    run_id: str | None = Field(default=None, pattern=r"^[0-9a-zA-Z]{1,64}$")


class TrainingJobConfig(StrictConfig):
    """Everything one fine-tuning run needs; unknown keys are errors, never silently ignored."""

    method: Literal["sft"] = "sft"
    base_model_path: str = Field(
        min_length=1, description="Local directory saved with save_pretrained (s3:// support may come later)."
    )
    train_file: Path = Field(description="JSONL of {'prompt': str, 'completion': str}.")
    eval_file: Path = Field(description="JSONL of {'prompt': str, 'completion': str}.")
    output_dir: Path = Field(description="Receives adapter/ and result.json.")
    lora: LoraSpec = LoraSpec()
    hyperparameters: Hyperparameters = Hyperparameters()
    packing: bool = False
    gradient_checkpointing: bool = False
    device: Device = "auto"
    max_steps: int | None = Field(default=None, gt=0, description="Stop after this many optimizer steps.")
    mlflow: MlflowTarget | None = None
    run_name: str = Field(default="llmops-sft", min_length=1, max_length=250)

    @field_validator("base_model_path")
    @classmethod
    def _local_or_s3(cls, value: str) -> str:
        if "://" in value and not value.startswith("s3://"):
            raise ValueError("must be a local directory or an s3:// URI")
        return value

    def resolved_dict(self) -> dict[str, Any]:
        """JSON-able form with absolute paths, the input of ``config_sha256``."""
        return self.model_dump(mode="json")


def parse_job_config(raw: Any, source: str = "<config>") -> TrainingJobConfig:
    """Validate an already-parsed config mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"(top level): expected a JSON object, got {type(raw).__name__}"])
    try:
        return TrainingJobConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, describe_validation_error(exc)) from None


def load_job_config(path: Path | str) -> TrainingJobConfig:
    """Read and validate a job config file; relative paths resolve against its directory."""
    path = Path(path)
    raw = read_json_config(path)
    raw = resolve_relative_paths(
        raw, path.resolve().parent, ("base_model_path", "train_file", "eval_file", "output_dir")
    )
    return parse_job_config(raw, str(path))
