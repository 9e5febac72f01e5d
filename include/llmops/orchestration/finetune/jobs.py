"""Jobs of a finetune run: where their configs and outputs live, how they are written and run.

A job (training or evaluation) reads its config from the lake and writes its result there, so
the local launcher and a Kubernetes pod get byte-identical arguments.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.errors import PermanentError
from llmops.lake import SPLIT_FILES, SPLITS
from llmops.settings import get_settings
from llmops.specs import spec_hash
from llmops.specs.pinned import run_spec
from llmops.storage import safe_run_id

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec
    from llmops.specs.schema import StageSpec

log = logging.getLogger(__name__)


def resolve_base_model(uri: str) -> str:
    """A base model reference from the spec, as the location a training job loads it from.

    ``s3://`` URIs are passed through (the job fetches and caches them, locally or in a pod);
    local references resolve against ``LLMOPS_MODEL_STORE`` and must hold a Hugging Face model.
    """
    settings = get_settings()
    if uri.startswith("s3://"):
        return uri
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(
            f"training.base_model.uri {uri!r}: base models load from s3:// or from a local directory "
            f"(absolute, or relative to LLMOPS_MODEL_STORE)"
        )
    path = Path(uri.removeprefix("file://"))
    if not path.is_absolute():
        path = Path(settings.model_store) / path
    if not (path / "config.json").is_file():
        raise BaseModelMissing(
            f"base model '{uri}' not found at {path} (no config.json); build the demo base model with "
            f"`llmops build-demo-model` or point training.base_model.uri at a Hugging Face model directory"
        )
    return str(path)


class BaseModelMissing(PermanentError, FileNotFoundError):
    """The spec names a base model that is not where it says: retrying cannot help."""


def job_root(spec: PipelineSpec, run_id: str) -> str:
    """Where this run's job configs and outputs live: in the lake, so a pod can read them too."""
    return snapshots.job_uri(get_settings().lake_root, spec.name, run_id)


def job_location(uri: str) -> str:
    """A lake URI as the job reads it: a plain path for local lakes, the URI for object storage."""
    return uri if uri.startswith("s3://") else str(storage.local_path(uri))


def sft_files(spec: PipelineSpec, sft_snapshot_id: str, dataset: str | None = None) -> tuple[str, str, str]:
    """A training snapshot's train, validation and test files as a job reads them (default: the
    final stage's dataset). Training jobs get train + validation; only the evaluation job gets test."""
    train, validation, test = snapshots.split_file_uris(
        get_settings().lake_root, spec.name, dataset or spec.training.dataset_name, sft_snapshot_id
    )
    return job_location(train), job_location(validation), job_location(test)


def split_hashes(
    spec: PipelineSpec, sft_snapshot_id: str, dataset: str | None = None
) -> dict[str, str | None]:
    """The hashes the ledger holds for a training snapshot's split files, per split (train,
    validation, test), for the job configs' `*_sha256`: a job refuses files that differ (None: not
    recorded)."""
    from llmops.governance.integrity import recorded_split_sha256

    ref = snapshots.snapshot_ref(
        get_settings().lake_root, "sft", spec.name, dataset or spec.training.dataset_name, sft_snapshot_id
    )
    recorded = recorded_split_sha256(spec, ref) or {}
    return {split: recorded.get(name) for split, name in zip(SPLITS, SPLIT_FILES, strict=True)}


def job_env(spec: PipelineSpec) -> dict[str, str]:
    """Plain settings a job needs besides its config (never credentials: see launch.kubernetes)."""
    from llmops.orchestration.finetune import study

    env = {"MLFLOW_TRACKING_URI": get_settings().mlflow_tracking_uri}
    if spec.training.search is not None and spec.training.launcher == "local":
        env["LLMOPS_OPTUNA_URL"] = study.storage_url()  # a subprocess's env: not written anywhere
    return env


def optuna_url_for_job(spec: PipelineSpec) -> str:
    """The study storage as the job config names it: indirect when the URL holds a password."""
    import sqlalchemy as sa

    from llmops.orchestration.finetune import study

    url = study.storage_url()
    if spec.training.launcher == "kubernetes" or sa.make_url(url).password:
        return "env:LLMOPS_OPTUNA_URL"  # local: job_env(); pods: a kubernetes.secrets entry
    return url


def build_train_job(
    spec: PipelineSpec,
    data: dict[str, Any],
    run_id: str,
    *,
    name: str,
    hyperparameters: dict[str, Any],
    lora: dict[str, Any],
    max_steps: int | None,
    mlflow: dict[str, Any],
    hpo_target: dict[str, Any] | None = None,
    stage: StageSpec | None = None,
) -> dict[str, Any]:
    """Write one training job's config into the lake; return where it and its outputs are.

    ``stage`` is a preceding chain stage (its own method, data and settings; its merged model is
    saved for the next stage); None is the final stage. The base model is the previous stage's
    merged model when a chain ran before (``data['base_model_dir']``), else the spec's. The config
    is validated here with the job's own schema, so a bad combination fails the task with the
    field named instead of failing minutes later in a pod.
    """
    from llmops.jobs.config import ConfigError
    from llmops.training.config import parse_job_config

    training = spec.training
    method = stage or training
    if stage is None:
        snapshot_id = data["sft_snapshot_id"]
    else:
        snapshot_id = stage_snapshot_id(data, stage.name)
    # The training job sees train and validation rows only; the test split is the evaluation job's.
    train_file, validation_file, _ = sft_files(spec, snapshot_id, method.dataset_name)
    hashes = split_hashes(spec, snapshot_id, method.dataset_name)
    root = storage.join(job_root(spec, run_id), name)
    job = {
        "method": method.method,
        "run_name": f"{spec.name}-{safe_run_id(run_id)}-{name}",
        "base_model_path": data.get("base_model_dir") or resolve_base_model(training.base_model.uri),
        "train_file": train_file,
        "eval_file": validation_file,  # early stopping, best checkpoint, search trials, stage gates
        "train_sha256": hashes["train"],
        "eval_sha256": hashes["validation"],
        "output_dir": job_location(storage.join(root, "output")),
        "lora": lora,
        "hyperparameters": hyperparameters,
        "chat_template": method.chat_template,
        "quantization": training.quantization,
        "packing": training.packing if stage is None else False,
        "gradient_checkpointing": training.gradient_checkpointing,
        "early_stopping_patience": training.early_stopping_patience if stage is None else None,
        "eval_steps": training.eval_steps if stage is None else None,
        "merge_adapter": stage is not None,  # the next stage trains on this one's merged model
        "distributed": training.distributed.model_dump(),
        "device": "cuda"
        if training.launcher == "kubernetes" and training.kubernetes and training.kubernetes.gpus
        else "auto",
        "max_steps": max_steps,
        "mlflow": mlflow,
        "hpo": hpo_target,
        "provenance": {
            "pipeline": spec.name,
            "spec_sha256": spec_hash(spec),
            "airflow_run_id": run_id,
            "stage": stage.name if stage else "final",
            "method": method.method,
            "curated_snapshot_id": data["curated_snapshot_id"],
            "sft_snapshot_id": snapshot_id,
            "base_model": training.base_model.uri,
            "chain": [c["stage"] for c in data.get("chain") or []],
            "trainer_image": training.kubernetes.image
            if training.launcher == "kubernetes" and training.kubernetes
            else None,
        },
    }
    if method.beta is not None:
        job["beta"] = method.beta
    try:
        parse_job_config(job, f"{name} job")
    except ConfigError as exc:
        raise SpecConflict(str(exc)) from None
    config_uri = storage.join(root, "job.json")
    storage.write_json(config_uri, job)
    return {
        "name": name,
        "config_uri": job_location(config_uri),
        "output_dir": job["output_dir"],
        "arguments": job_arguments("llmops.training", job_location(config_uri), spec),
        "base_model_dir": job["base_model_path"],
    }


class SpecConflict(PermanentError, ValueError):
    """The spec (with this run's Params) makes a job config the job would refuse."""


def job_arguments(module: str, config_uri: str, spec: PipelineSpec) -> list[str]:
    from llmops.launch.command import job_argv

    distributed = spec.training.distributed if module == "llmops.training" else None
    return job_argv(module, config_uri, distributed)[1:]


def hyperparameters_with(spec: PipelineSpec, *layers: dict[str, Any] | None) -> dict[str, Any]:
    """The spec's hyperparameters with override layers applied in order (None values skipped)."""
    hyper = spec.training.hyperparameters.model_dump()
    for layer in layers:
        hyper.update({k: v for k, v in (layer or {}).items() if v is not None and k in hyper})
    return hyper


def experiment_id(spec: PipelineSpec) -> str:
    from llmops.registry import mlflow_registry

    return mlflow_registry.ensure_experiment(spec.registry.model_name)


def run_tags(spec: PipelineSpec, data: dict[str, Any], run_id: str, stage: str) -> dict[str, str]:
    return {
        "llmops.pipeline": spec.name,
        "llmops.airflow_run_id": run_id,
        "llmops.stage": stage,
        "llmops.spec_hash": spec_hash(spec),
        "llmops.sft_snapshot_id": data["sft_snapshot_id"],
        "llmops.curated_snapshot_id": data["curated_snapshot_id"],
    }


def run_job(pipeline: str, module: str, config_uri: str, run_id: str) -> None:
    """Run one job with the local launcher (the kubernetes launcher is a pod operator instead)."""
    from llmops.launch.local import run_local
    from llmops.privacy.keys import local_job_key_env

    spec = run_spec(pipeline, run_id)
    distributed = spec.training.distributed if module == "llmops.training" else None
    env = job_env(spec)
    env.update(local_job_key_env())  # to decrypt its inputs: the subprocess's env, written nowhere
    if module == "llmops.evaluation" and spec.evaluation.pii_probe.enabled:
        from llmops.orchestration.finetune.leakage_probe import SALT_ENV, probe_salt

        env[SALT_ENV] = probe_salt(spec, run_id)
    run_local(module, config_uri, distributed=distributed, env=env)


def usage_metrics(usage: dict[str, Any], suffix: str) -> dict[str, float]:
    """MLflow metrics of a job's (or a total's) usage: wall time, GPU-hours and cost when priced."""
    names = {"wall_s": "wall_s", "wall_hours": "wall_hours", "gpu_hours": "gpu_hours", "cost": "cost"}
    return {
        f"{name}{suffix}": float(usage[key])
        for key, name in names.items()
        if isinstance(usage.get(key), int | float) and not isinstance(usage.get(key), bool)
    }


def mlflow_registry_run(spec: PipelineSpec, data: dict[str, Any], run_id: str, stage: str) -> str:
    from llmops.registry import mlflow_registry

    suffix = f"-{stage}" if stage.startswith("stage-") else ""
    return mlflow_registry.find_or_create_run(
        experiment_id(spec),
        run_name=f"{spec.name}-{safe_run_id(run_id)}{suffix}",
        tags=run_tags(spec, data, run_id, stage),
    )


def end_tracking_runs(pipeline: str, run_id: str) -> dict[str, int]:
    """End the MLflow runs this Airflow run opened, FAILED where it recorded a failed task."""
    from llmops.ledger import get_ledger
    from llmops.ledger.events import TaskFailed
    from llmops.registry import mlflow_registry

    spec = run_spec(pipeline, run_id)
    failed = bool(get_ledger().records(pipeline=spec.name, event_type=TaskFailed.name, run_id=run_id))
    return mlflow_registry.end_open_runs(experiment_id(spec), run_id, failed=failed)


class JobResultMissing(RuntimeError):
    """The job ended without a result.json (it was killed, or wrote somewhere else)."""


def stage_snapshot_id(data: dict[str, Any], name: str) -> str:
    """The dataset snapshot prepare_data built for chain stage ``name``."""
    return next(s["snapshot_id"] for s in data["stages"] if s["stage"] == name)
