"""Fine-tuning steps: training data, training, evaluation, gates, registry, report.

Each function is the body of one task of the `<pipeline>__finetune` DAG, a plain function of
small JSON-able arguments. Heavy work runs in job processes (`llmops.training`,
`llmops.evaluation`) through the spec's launcher; these steps prepare, record and register.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.errors import PermanentError
from llmops.ledger import get_ledger
from llmops.orchestration.common import record, safe_run_id
from llmops.settings import get_settings
from llmops.specs import load_pipeline, spec_hash

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec
    from llmops.specs.schema import StageSpec

log = logging.getLogger(__name__)

CURATED_DATASET = "records"
EVAL_METRICS = (
    "eval_loss",
    "eval_perplexity",
    "token_f1",
    "exact_match",
    "rouge_l",
    "latency_ms_mean",
    "latency_ms_p95",
)


def start_finetune(pipeline: str, curated_snapshot_id: str, params: dict[str, Any], run_id: str) -> str:
    """Record the run's parameters and resolve 'latest' to a concrete snapshot id.

    Airflow validates the declared run parameters at trigger time but lets unknown keys through;
    a misspelt override (``learning_rat``) would silently train with the spec's value, so it
    stops the run here instead.
    """
    from llmops.orchestration.factory import FINETUNE_PARAMS

    unknown = sorted(set(params) - set(FINETUNE_PARAMS))
    if unknown:
        raise PermanentError(
            f"unknown run parameter(s) {', '.join(map(repr, unknown))}: "
            f"this DAG takes {', '.join(sorted(FINETUNE_PARAMS))}"
        )
    spec = load_pipeline(pipeline)
    if not curated_snapshot_id or curated_snapshot_id == "latest":
        curated_snapshot_id = snapshots.get_latest(
            get_settings().lake_root, "curated", spec.name, CURATED_DATASET
        ).snapshot_id
    record(
        spec,
        "finetune.started",
        f"curated/{curated_snapshot_id}",
        run_id,
        {"curated_snapshot_id": curated_snapshot_id, "params": params},
    )
    return curated_snapshot_id


class PurposeNotAllowed(PermanentError, ValueError):
    """Data whose governance tags do not cover the pipeline's purpose cannot be trained on."""


def check_purpose(spec: PipelineSpec, snapshot_id: str, manifest: dict[str, Any]) -> None:
    """Enforce purpose limitation from the tags the data carries (not only from today's spec)."""
    from llmops.specs.schema import Governance

    problems = []
    for source, tags in sorted((manifest.get("governance") or {}).items()):
        problem = Governance.model_validate(tags).allows(spec.purpose)
        if problem:
            problems.append(f"source '{source}': {problem}")
    if not manifest.get("governance"):
        problems.append("it carries no governance tags")
    if problems:
        raise PurposeNotAllowed(
            f"curated snapshot {snapshot_id} cannot feed '{spec.name}' (purpose '{spec.purpose}'): "
            + "; ".join(problems)
        )


def prepare_training_data(pipeline: str, curated_snapshot_id: str | None, run_id: str) -> dict[str, Any]:
    """Build every stage's training dataset from the curated snapshot (one snapshot per stage).

    The final stage's snapshot is ``sft_snapshot_id`` (whatever its method); the preceding
    stages' are listed under ``stages`` in chain order. See :mod:`llmops.orchestration.training_data`.
    """
    from llmops.orchestration.training_data import write_dataset

    spec = load_pipeline(pipeline)
    settings = get_settings()
    if not curated_snapshot_id or curated_snapshot_id == "latest":
        c_ref = snapshots.get_latest(settings.lake_root, "curated", spec.name, CURATED_DATASET)
    else:
        c_ref = snapshots.snapshot_ref(
            settings.lake_root, "curated", spec.name, CURATED_DATASET, curated_snapshot_id
        )
    c_manifest = snapshots.read_manifest(c_ref)
    check_purpose(spec, c_ref.snapshot_id, c_manifest)
    df = snapshots.read_snapshot(c_ref).to_pandas()
    training = spec.training
    stages = []
    for stage in training.preceding_stages:
        built = write_dataset(
            spec, stage, stage.name, c_ref.snapshot_id, c_manifest, df, stage.hyperparameters.seed, run_id
        )
        record(
            spec,
            "dataset.stage.created",
            f"sft/{built['snapshot_id']}",
            run_id,
            {"curated_snapshot_id": c_ref.snapshot_id, **built, "columns": stage.input_columns},
        )
        stages.append(
            {k: built[k] for k in ("stage", "method", "dataset", "snapshot_id", "train_rows", "eval_rows")}
        )
    final = write_dataset(
        spec, training, "final", c_ref.snapshot_id, c_manifest, df, training.hyperparameters.seed, run_id
    )
    record(
        spec,
        "dataset.sft.created",
        f"sft/{final['snapshot_id']}",
        run_id,
        {
            "curated_snapshot_id": c_ref.snapshot_id,
            "sft_snapshot_id": final["snapshot_id"],
            **{k: v for k, v in final.items() if k != "snapshot_id"},
            "template": training.prompt_template,
            "columns": training.input_columns,
        },
    )
    result = {
        "curated_snapshot_id": c_ref.snapshot_id,
        "sft_snapshot_id": final["snapshot_id"],
        "method": training.method,
        "dataset": final["dataset"],
        "train_rows": final["train_rows"],
        "eval_rows": final["eval_rows"],
        "stages": stages,
    }
    from llmops import lineage

    lineage.emit_prepare_training_data(spec, result)  # OpenLineage: curated -> SFT; never raises
    return result


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
    return storage.join(get_settings().lake_root, "jobs", spec.name, safe_run_id(run_id))


def _job_location(uri: str) -> str:
    """A lake URI as the job reads it: a plain path for local lakes, the URI for object storage."""
    return uri if uri.startswith("s3://") else str(storage.local_path(uri))


def _sft_files(spec: PipelineSpec, sft_snapshot_id: str, dataset: str | None = None) -> tuple[str, str]:
    """A training snapshot's split files as a job reads them (default: the final stage's dataset)."""
    from llmops.orchestration.training_data import split_files

    train, evaluation = split_files(spec, dataset or spec.training.dataset_name, sft_snapshot_id)
    return _job_location(train), _job_location(evaluation)


def job_env(spec: PipelineSpec) -> dict[str, str]:
    """Plain settings a job needs besides its config (never credentials: see launch.kubernetes)."""
    from llmops.orchestration import hpo

    env = {"MLFLOW_TRACKING_URI": get_settings().mlflow_tracking_uri}
    if spec.training.search is not None and spec.training.launcher == "local":
        env["LLMOPS_OPTUNA_URL"] = hpo.storage_url()  # a subprocess's env: not written anywhere
    return env


def _optuna_url_for_job(spec: PipelineSpec) -> str:
    """The study storage as the job config names it: indirect when the URL holds a password."""
    import sqlalchemy as sa

    from llmops.orchestration import hpo

    url = hpo.storage_url()
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
    from llmops.training.config import ConfigError, parse_job_config

    training = spec.training
    method = stage or training
    if stage is None:
        snapshot_id = data["sft_snapshot_id"]
    else:
        snapshot_id = _stage_snapshot(data, stage.name)
    train_file, eval_file = _sft_files(spec, snapshot_id, method.dataset_name)
    root = storage.join(job_root(spec, run_id), name)
    job = {
        "method": method.method,
        "run_name": f"{spec.name}-{safe_run_id(run_id)}-{name}",
        "base_model_path": data.get("base_model_dir") or resolve_base_model(training.base_model.uri),
        "train_file": train_file,
        "eval_file": eval_file,
        "output_dir": _job_location(storage.join(root, "output")),
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
        "config_uri": _job_location(config_uri),
        "output_dir": job["output_dir"],
        "arguments": _job_arguments("llmops.training", _job_location(config_uri), spec),
        "base_model_dir": job["base_model_path"],
    }


class SpecConflict(PermanentError, ValueError):
    """The spec (with this run's Params) makes a job config the job would refuse."""


def _job_arguments(module: str, config_uri: str, spec: PipelineSpec) -> list[str]:
    from llmops.launch.command import job_argv

    distributed = spec.training.distributed if module == "llmops.training" else None
    return job_argv(module, config_uri, distributed)[1:]


def _hyperparameters(spec: PipelineSpec, *layers: dict[str, Any] | None) -> dict[str, Any]:
    """The spec's hyperparameters with override layers applied in order (None values skipped)."""
    hyper = spec.training.hyperparameters.model_dump()
    for layer in layers:
        hyper.update({k: v for k, v in (layer or {}).items() if v is not None and k in hyper})
    return hyper


def _experiment(spec: PipelineSpec) -> str:
    from llmops.registry import mlflow_registry

    return mlflow_registry.ensure_experiment(spec.registry.model_name)


def _run_tags(spec: PipelineSpec, data: dict[str, Any], run_id: str, stage: str) -> dict[str, str]:
    return {
        "llmops.pipeline": spec.name,
        "llmops.airflow_run_id": run_id,
        "llmops.stage": stage,
        "llmops.spec_hash": spec_hash(spec),
        "llmops.sft_snapshot_id": data["sft_snapshot_id"],
        "llmops.curated_snapshot_id": data["curated_snapshot_id"],
    }


def plan_search(
    pipeline: str, data: dict[str, Any], run_id: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Ask the study for this run's trials and write one training job per trial.

    Each trial is a child MLflow run of the search's parent run and reports its evaluations to
    the Optuna trial (so the median pruner can stop it). No search in the spec: no trials.
    """
    from llmops.orchestration import hpo
    from llmops.registry import mlflow_registry

    spec = load_pipeline(pipeline)
    search = spec.training.search
    if search is None:
        return []
    trials = hpo.plan_trials(spec, data["sft_snapshot_id"], run_id)
    experiment_id = _experiment(spec)
    parent = mlflow_registry.find_or_create_run(
        experiment_id,
        run_name=f"{spec.name}-{safe_run_id(run_id)}-search",
        tags=_run_tags(spec, data, run_id, "search"),
    )
    settings = get_settings()
    max_steps = search.max_steps_per_trial or (params or {}).get("max_steps")
    jobs = []
    for trial in trials:
        overrides = hpo.overrides_for(trial["params"])
        stage = f"trial-{trial['number']}"
        child = mlflow_registry.find_or_create_run(
            experiment_id,
            run_name=f"{spec.name}-{safe_run_id(run_id)}-{stage}",
            tags={**_run_tags(spec, data, run_id, stage), "mlflow.parentRunId": parent},
        )
        job = build_train_job(
            spec,
            data,
            run_id,
            name=stage,
            hyperparameters=_hyperparameters(spec, overrides["hyperparameters"]),
            lora={**spec.training.lora.model_dump(), **overrides["lora"]},
            max_steps=max_steps,
            mlflow={
                "tracking_uri": settings.mlflow_tracking_uri,
                "experiment_name": spec.registry.model_name,
                "run_id": child,
                "log_adapter": False,  # only the final model's adapter is worth keeping
            },
            hpo_target={
                "storage_url": _optuna_url_for_job(spec),
                "study_name": trial["study"],
                "trial_number": trial["number"],
            },
        )
        jobs.append({**job, "number": trial["number"], "params": trial["params"], "mlflow_run_id": child})
    return jobs


def run_job(pipeline: str, module: str, config_uri: str, run_id: str | None = None) -> None:
    """Run one job with the local launcher (the kubernetes launcher is a pod operator instead)."""
    from llmops.launch.local import run_local

    spec = load_pipeline(pipeline)
    distributed = spec.training.distributed if module == "llmops.training" else None
    env = job_env(spec)
    if module == "llmops.evaluation" and run_id and spec.evaluation.pii_probe.enabled:
        from llmops.orchestration.probe import SALT_ENV, probe_salt

        env[SALT_ENV] = probe_salt(spec, run_id)
    run_local(module, config_uri, distributed=distributed, env=env)


def read_job_result(output_dir: str) -> dict[str, Any] | None:
    """The job's result.json, or None when it never got to write one (killed, not started)."""
    uri = storage.join(output_dir, "result.json")
    if not storage.exists(uri):
        return None
    return json.loads(storage.read_bytes(uri))


def finish_search(
    pipeline: str, data: dict[str, Any], trials: list[dict[str, Any]], run_id: str
) -> dict[str, Any]:
    """Tell the study every trial's outcome (from its result.json) and pick the best parameters.

    Runs whatever state the trial tasks ended in: a failed or lost trial is recorded as failed
    and the search goes on with the others. Without any completed trial the final training uses
    the spec's hyperparameters (recorded).
    """
    from llmops.orchestration import hpo
    from llmops.registry import mlflow_registry

    spec = load_pipeline(pipeline)
    search = spec.training.search
    if search is None or not trials:
        return {"searched": False}
    from llmops.governance import cost

    outcomes = []
    usages = []
    for trial in trials:
        result = read_job_result(trial["output_dir"]) or {}
        status = result.get("status")
        outcome: dict[str, Any] = {"number": trial["number"], "params": trial["params"]}
        if status == "succeeded" and isinstance(result.get(search.metric), int | float):
            outcome.update(state="succeeded", value=float(result[search.metric]))
        elif status == "pruned":
            outcome.update(state="pruned", value=result.get(search.metric))
        elif status == "skipped":
            outcome.update(state="skipped", reason=result.get("reason"))
        else:
            outcome.update(
                state="failed", error=str(result.get("error") or "no result (job did not finish)")[:500]
            )
        outcome["global_step"] = result.get("global_step")
        outcome["train_runtime_s"] = result.get("train_runtime_s")
        usage = cost.job_usage(spec, f"trial-{trial['number']}", "trial", result or None)
        if status == "skipped":
            usage.update(wall_s=0.0, devices=0, device_hours=0.0, gpu_hours=0.0, cost=0.0, note="not run")
        outcome["usage"] = usage
        usages.append(usage)
        if trial.get("mlflow_run_id") and status not in ("skipped", None):
            mlflow_registry.log_params_and_metrics(
                trial["mlflow_run_id"], params={}, metrics=_usage_metrics(usage, "")
            )
        outcomes.append(outcome)
    summary = hpo.tell_results(spec, data["sft_snapshot_id"], outcomes, run_id)
    parent = mlflow_registry.find_or_create_run(
        _experiment(spec),
        run_name=f"{spec.name}-{safe_run_id(run_id)}-search",
        tags=_run_tags(spec, data, run_id, "search"),
    )
    best = summary.get("best")
    mlflow_registry.log_params_and_metrics(
        parent,
        params={f"best.{k}": v for k, v in (best or {}).get("params", {}).items()},
        metrics={
            "trials_succeeded": sum(o["state"] == "succeeded" for o in outcomes),
            "trials_pruned": sum(o["state"] == "pruned" for o in outcomes),
            "trials_failed": sum(o["state"] == "failed" for o in outcomes),
            "trials_skipped": sum(o["state"] == "skipped" for o in outcomes),
            **({f"best_{search.metric}": best["value"]} if best else {}),
            **_usage_metrics(cost.totals(spec, usages), "_search"),
        },
    )
    return {
        "searched": True,
        "study": summary["study"],
        "best": best,
        "trials": outcomes,
        "mlflow_run_id": parent,
        "usage": usages,
    }


def _usage_metrics(usage: dict[str, Any], suffix: str) -> dict[str, float]:
    """MLflow metrics of a job's (or a total's) usage: wall time, GPU-hours and cost when priced."""
    names = {"wall_s": "wall_s", "wall_hours": "wall_hours", "gpu_hours": "gpu_hours", "cost": "cost"}
    return {
        f"{name}{suffix}": float(usage[key])
        for key, name in names.items()
        if isinstance(usage.get(key), int | float) and not isinstance(usage.get(key), bool)
    }


class BudgetExceeded(PermanentError):
    """The run's cost budget is spent: this search trial is not started (recorded as skipped)."""


def check_trial_budget(
    pipeline: str, trial: dict[str, Any], trials: list[dict[str, Any]], run_id: str
) -> dict[str, Any]:
    """Before a search trial starts: what this run's finished trials cost, against the budget.

    Over budget, the trial is recorded as skipped (a ``result.json`` with status "skipped", and
    ``hpo.trial_skipped`` in the ledger) and `BudgetExceeded` is raised for the task to skip.
    Trials running at the same time are counted once they finish, so with ``parallelism`` > 1 the
    spend can pass the budget by up to that many trials.
    """
    from llmops.governance import cost

    spec = load_pipeline(pipeline)
    if spec.cost is None or spec.cost.budget is None:
        return {"budget": None}
    usages = []
    for other in trials:
        if other["number"] == trial["number"]:
            continue
        result = read_job_result(other["output_dir"])
        if result is not None and result.get("status") != "skipped":
            usages.append(cost.job_usage(spec, f"trial-{other['number']}", "trial", result))
    spent = cost.totals(spec, usages)["cost"] or 0.0
    check = {"budget": spec.cost.budget, "spent": spent, "currency": spec.cost.currency}
    if spent < spec.cost.budget:
        return check
    skipped = {"status": "skipped", "reason": "budget", **check, "trial_number": trial["number"]}
    storage.write_json(storage.join(trial["output_dir"], "result.json"), skipped)
    record(
        spec,
        "hpo.trial_skipped",
        f"study/{trial.get('study')}/trial-{trial['number']}",
        run_id,
        {"trial": trial["number"], "params": trial.get("params"), **check, "reason": "budget"},
    )
    raise BudgetExceeded(
        f"trial {trial['number']} not started: this run's trials cost {spent:.4f} {spec.cost.currency}, "
        f"the budget (cost.budget) is {spec.cost.budget:.4f}"
    )


def prepare_train(
    pipeline: str,
    data: dict[str, Any],
    run_id: str,
    overrides: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the final training job: spec hyperparameters, then the search's best, then Params."""
    from llmops.orchestration import hpo

    spec = load_pipeline(pipeline)
    best = (search or {}).get("best") or {}
    tuned = hpo.overrides_for(best.get("params", {})) if best else {"hyperparameters": {}, "lora": {}}
    hyper = _hyperparameters(spec, tuned["hyperparameters"], overrides)
    lora = {**spec.training.lora.model_dump(), **tuned["lora"]}
    mlflow_run_id = mlflow_registry_run(spec, data, run_id, "train")
    job = build_train_job(
        spec,
        data,
        run_id,
        name="train",
        hyperparameters=hyper,
        lora=lora,
        max_steps=(overrides or {}).get("max_steps"),
        mlflow={
            "tracking_uri": get_settings().mlflow_tracking_uri,
            "experiment_name": spec.registry.model_name,
            "run_id": mlflow_run_id,
        },
    )
    return {
        **job,
        "mlflow_run_id": mlflow_run_id,
        "sft_snapshot_id": data["sft_snapshot_id"],
        "curated_snapshot_id": data["curated_snapshot_id"],
        "chain": data.get("chain") or [],
        "stage_usage": data.get("stage_usage") or [],
        "hyperparameters": hyper,
        "lora": lora,
        "max_steps": (overrides or {}).get("max_steps"),
        "tuned_by_search": bool(best),
        "search_usage": (search or {}).get("usage") or [],
    }


def _stage_snapshot(data: dict[str, Any], name: str) -> str:
    """The dataset snapshot prepare_data built for chain stage ``name``."""
    return next(s["snapshot_id"] for s in data["stages"] if s["stage"] == name)


def _stage(spec: PipelineSpec, name: str) -> StageSpec:
    for stage in spec.training.preceding_stages:
        if stage.name == name:
            return stage
    raise SpecConflict(f"training.preceding_stages has no stage '{name}' (the spec changed during the run?)")


def prepare_stage(
    pipeline: str, data: dict[str, Any], stage_name: str, run_id: str, max_steps: int | None = None
) -> dict[str, Any]:
    """Write a preceding chain stage's training job: its own data, settings and MLflow run."""
    spec = load_pipeline(pipeline)
    stage = _stage(spec, stage_name)
    snapshot_id = _stage_snapshot(data, stage_name)
    mlflow_run_id = mlflow_registry_run(
        spec, {**data, "sft_snapshot_id": snapshot_id}, run_id, f"stage-{stage_name}"
    )
    hyper = stage.hyperparameters.model_dump()
    job = build_train_job(
        spec,
        data,
        run_id,
        name=f"stage-{stage_name}",
        hyperparameters=hyper,
        lora=stage.lora.model_dump(),
        max_steps=max_steps,
        mlflow={
            "tracking_uri": get_settings().mlflow_tracking_uri,
            "experiment_name": spec.registry.model_name,
            "run_id": mlflow_run_id,
            "log_adapter": False,  # the merged model goes on as the next stage's base
        },
        stage=stage,
    )
    return {
        **job,
        "stage": stage_name,
        "method": stage.method,
        "mlflow_run_id": mlflow_run_id,
        "snapshot_id": snapshot_id,
        "hyperparameters": hyper,
        "lora": stage.lora.model_dump(),
        "data": data,
    }


def stage_metric(result: dict[str, Any], metric: str) -> float | None:
    """A stage gate's metric from the training job's result (held-out split, after training)."""
    import math

    key = metric if metric.startswith("eval_") else f"eval_{metric}"
    value = result.get(key)
    if value is None and metric == "eval_perplexity" and _is_number(result.get("eval_loss")):
        value = math.exp(min(float(result["eval_loss"]), 700.0))
    return float(value) if _is_number(value) else None


class StageGateFailed(PermanentError):
    """A chain stage missed one of its gates: the chain stops before the next stage."""


def collect_stage(pipeline: str, job: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Read a chain stage's result, check its gates, record it; the next stage trains on its merge."""
    from llmops.evaluation.gates import evaluate_gates
    from llmops.governance import cost
    from llmops.registry import mlflow_registry
    from llmops.specs.schema import STAGE_METRICS

    spec = load_pipeline(pipeline)
    stage = _stage(spec, job["stage"])
    result = read_job_result(job["output_dir"])
    if result is None:
        raise JobResultMissing(f"stage job {job['config_uri']} left no result.json in {job['output_dir']}")
    if result.get("status") != "succeeded":
        raise RuntimeError(f"stage '{stage.name}' failed: {result.get('error') or result.get('status')}")
    if not result.get("merged_model_path"):
        raise JobResultMissing(f"stage '{stage.name}' wrote no merged model in {job['output_dir']}")
    metrics = {m: stage_metric(result, m) for m in STAGE_METRICS}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    decision = evaluate_gates([g.as_gate() for g in stage.gates], metrics)
    usage = cost.job_usage(spec, f"stage-{stage.name}", "train", result)
    mlflow_registry.log_params_and_metrics(
        job["mlflow_run_id"],
        params={
            "stage": stage.name,
            "method": stage.method,
            "base_model_path": job["base_model_dir"],
            "snapshot_id": job["snapshot_id"],
            **{f"lora.{k}": v for k, v in job["lora"].items()},
            **{f"hp.{k}": v for k, v in job["hyperparameters"].items()},
            "config_sha256": result.get("config_sha256"),
        },
        metrics={
            **{k: v for k, v in result.items() if k in ("train_loss", "train_runtime_s", "base_eval_loss")},
            **metrics,
            **_usage_metrics(usage, ""),
        },
    )
    entry = {
        "stage": stage.name,
        "method": stage.method,
        "dataset": stage.dataset_name,
        "mlflow_run_id": job["mlflow_run_id"],
        "snapshot_id": job["snapshot_id"],
        "base_model_dir": job["base_model_dir"],
        "merged_model_dir": result["merged_model_path"],
        "merged_model_sha256": result.get("merged_model_sha256"),
        "metrics": metrics,
        "base_eval_loss": result.get("base_eval_loss"),
        "gates": decision["gates"],
        "passed": decision["passed"],
    }
    record(
        spec,
        "model.stage_trained",
        f"mlflow-run/{job['mlflow_run_id']}",
        run_id,
        {**entry, "hyperparameters": job["hyperparameters"], "lora": job["lora"], "usage": usage},
    )
    from llmops import lineage

    lineage.emit_stage(
        spec, entry, job["data"]["curated_snapshot_id"], job["data"].get("chain")
    )  # never raises
    if not decision["passed"]:
        failed = [f"{g['metric']}: {g['reason']}" for g in decision["gates"] if not g["passed"]]
        raise StageGateFailed(f"stage '{stage.name}' missed its gate(s): {'; '.join(failed)}")
    data = job["data"]
    return {
        **data,
        "base_model_dir": result["merged_model_path"],
        "chain": [*(data.get("chain") or []), entry],
        "stage_usage": [*(data.get("stage_usage") or []), usage],
    }


def mlflow_registry_run(spec: PipelineSpec, data: dict[str, Any], run_id: str, stage: str) -> str:
    from llmops.registry import mlflow_registry

    suffix = f"-{stage}" if stage.startswith("stage-") else ""
    return mlflow_registry.find_or_create_run(
        _experiment(spec),
        run_name=f"{spec.name}-{safe_run_id(run_id)}{suffix}",
        tags=_run_tags(spec, data, run_id, stage),
    )


class JobResultMissing(RuntimeError):
    """The job ended without a result.json (it was killed, or wrote somewhere else)."""


def collect_train(pipeline: str, job: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Read the training job's result from the lake, log it to MLflow and the ledger."""
    from llmops.registry import mlflow_registry

    spec = load_pipeline(pipeline)
    result = read_job_result(job["output_dir"])
    if result is None:
        raise JobResultMissing(f"training job {job['config_uri']} left no result.json in {job['output_dir']}")
    if result.get("status") != "succeeded":
        raise RuntimeError(f"training job failed: {result.get('error') or result.get('status')}")
    mlflow_run_id = job["mlflow_run_id"]
    from llmops.governance import cost

    usage = cost.job_usage(spec, "train", "train", result)
    jobs = [*(job.get("stage_usage") or []), *(job.get("search_usage") or []), usage]
    run_totals = cost.totals(spec, jobs)
    mlflow_registry.log_params_and_metrics(
        mlflow_run_id,
        params={
            "base_model": spec.training.base_model.uri,
            "base_model_sha256": result.get("base_model_sha256"),
            **{f"lora.{k}": v for k, v in job["lora"].items()},
            **{f"hp.{k}": v for k, v in job["hyperparameters"].items()},
            "sft_snapshot_id": job["sft_snapshot_id"],
            "config_sha256": result.get("config_sha256"),
            "tuned_by_search": job.get("tuned_by_search", False),
            "method": spec.training.method,
            "chain": ",".join(c["stage"] for c in job.get("chain") or []) or "none",
        },
        metrics={
            k: v
            for k, v in result.items()
            if k
            in (
                "train_loss",
                "eval_loss",
                "eval_perplexity",
                "eval_reward_accuracy",
                "eval_reward_margin",
                "tokens_per_second",
                "steady_tokens_per_second",
                "train_runtime_s",
                "peak_memory_gib",
            )
        }
        | _usage_metrics(usage, "")
        | _usage_metrics(run_totals, "_total"),
    )
    summary = {
        "mlflow_run_id": mlflow_run_id,
        "adapter_dir": result["adapter_path"],
        "base_model_dir": job.get("base_model_dir") or resolve_base_model(spec.training.base_model.uri),
        "manifest_path": result.get("manifest_path"),
        "sft_snapshot_id": job["sft_snapshot_id"],
        "curated_snapshot_id": job["curated_snapshot_id"],
        "method": spec.training.method,
        "chain": [
            {
                k: c[k]
                for k in ("stage", "method", "dataset", "mlflow_run_id", "snapshot_id", "merged_model_sha256")
            }
            for c in job.get("chain") or []
        ],
        "train_loss": result.get("train_loss"),
        "eval_loss": result.get("eval_loss"),
    }
    record(
        spec,
        "model.trained",
        f"mlflow-run/{mlflow_run_id}",
        run_id,
        {
            **summary,
            "base_model": spec.training.base_model.uri,
            "method": spec.training.method,
            "launcher": spec.training.launcher,
            "lora": job["lora"],
            "hyperparameters": job["hyperparameters"],
            "tuned_by_search": job.get("tuned_by_search", False),
            "max_steps": job.get("max_steps"),
            "result": result,
            "usage": usage,
        },
    )
    record(
        spec,
        "cost.recorded",
        f"cost/{safe_run_id(run_id)}",
        run_id,
        {
            "mlflow_run_id": mlflow_run_id,
            "currency": run_totals["currency"],
            "totals": run_totals,
            "jobs": jobs,
            "trials_skipped_for_budget": sum(
                1 for j in jobs if j["kind"] == "trial" and j.get("status") == "skipped"
            ),
        },
    )
    from llmops import lineage

    lineage.emit_train(spec, summary)  # OpenLineage: SFT + base model -> MLflow run, adapter; never raises
    return summary


def _golden_location(uri: str) -> str:
    if uri.startswith("s3://") or Path(uri).is_absolute():
        return uri
    return str(get_settings().project_dir / uri)


def _exists(location: str) -> bool:
    return location.startswith("s3://") or Path(location).is_dir()


def champion_adapter(
    spec: PipelineSpec, base_model_dir: str | None = None
) -> tuple[str | None, str, str | None]:
    """The current champion's adapter, a note, and its own base when it is not the candidate's.

    A champion trained on the spec's base model shares the candidate's base (one model, two
    adapters). A chained pipeline's versions each have their own base, that run's merged model
    (tag ``llmops.base_model_dir``): the champion is then scored on its own base, which must
    still exist. ``base_model_dir`` is the candidate's base.
    """
    from llmops.registry import mlflow_registry

    name = spec.registry.model_name
    version = mlflow_registry.alias_version(name, mlflow_registry.CHAMPION)
    if version is None:
        return None, "no champion yet: the first model sets the bar", None
    tags = mlflow_registry.model_version_info(name, version)["tags"]
    adapter = tags.get("llmops.adapter_uri")
    if not adapter:
        return None, f"champion v{version} has no recorded adapter location", None
    if tags.get("llmops.base_model") not in (None, spec.training.base_model.uri):
        return (
            None,
            f"champion v{version} was trained on another base model ({tags.get('llmops.base_model')})",
            None,
        )
    if not _exists(adapter):
        return None, f"champion v{version}'s adapter is no longer at {adapter}", None
    own_base = tags.get("llmops.base_model_dir")
    chained = bool(json.loads(tags.get("llmops.chain") or "[]"))
    if chained and own_base and own_base != base_model_dir:
        if not _exists(own_base):
            return (
                None,
                f"champion v{version}'s own base (a chain's merged model) is no longer at {own_base}",
                None,
            )
        return adapter, f"champion v{version} (on its own chained base)", own_base
    return adapter, f"champion v{version}", None


def prepare_evaluate(pipeline: str, trained: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Write the evaluation job: held-out split, golden sets, champion, probes."""
    from llmops.evaluation.config import parse_eval_config
    from llmops.orchestration.probe import build_probe
    from llmops.training.config import ConfigError

    spec = load_pipeline(pipeline)
    evaluation = spec.evaluation
    _, eval_file = _sft_files(spec, trained["sft_snapshot_id"])
    root = storage.join(job_root(spec, run_id), "eval")
    champion, champion_note, champion_base = (None, "comparison off in the spec", None)
    if evaluation.compare_with_champion:
        champion, champion_note, champion_base = champion_adapter(spec, trained["base_model_dir"])
    probe = build_probe(spec, trained, root, run_id)
    job = {
        "base_model_path": trained["base_model_dir"],
        "adapter_path": trained["adapter_dir"],
        "eval_file": eval_file,
        "output_file": _job_location(storage.join(root, "output", "metrics.json")),
        "max_samples": evaluation.max_samples,
        "max_new_tokens": evaluation.max_new_tokens,
        "seed": spec.training.hyperparameters.seed,
        "method": spec.training.method,
        "chat_template": spec.training.chat_template,
        "label_metrics": evaluation.label_metrics,
        "blocked_terms": evaluation.blocked_terms,
        "refusal_terms": evaluation.refusal_terms,
        "golden_sets": [{"name": g.name, "file": _golden_location(g.uri)} for g in evaluation.golden_sets],
        "champion_adapter_path": champion,
        "champion_base_model_path": champion_base,
        "pii_probe": (probe or {}).get("job"),
    }
    if spec.training.method == "preference" and spec.training.beta is not None:
        job["beta"] = spec.training.beta
    try:
        parse_eval_config(job, "evaluation job")
    except ConfigError as exc:
        raise SpecConflict(str(exc)) from None
    config_uri = storage.join(root, "job.json")
    storage.write_json(config_uri, job)
    location = _job_location(config_uri)
    return {
        "name": "eval",
        "config_uri": location,
        "output_file": job["output_file"],
        "arguments": _job_arguments("llmops.evaluation", location, spec),
        "mlflow_run_id": trained["mlflow_run_id"],
        "champion": champion_note if champion is None else champion_note,
        "compared_with_champion": champion is not None,
        "probe": (probe or {}).get("summary"),
    }


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Gate-able numbers of one model's metrics: base metrics and golden.<set>.<metric>."""
    from llmops.specs.schema import BASE_METRICS

    flat = {k: float(metrics[k]) for k in BASE_METRICS if _is_number(metrics.get(k))}
    for name, golden in (metrics.get("golden") or {}).items():
        flat.update(
            {f"golden.{name}.{k}": float(golden[k]) for k in BASE_METRICS if _is_number(golden.get(k))}
        )
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def collect_evaluate(pipeline: str, job: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Read the evaluation metrics from the lake, log them to MLflow and the ledger."""
    from llmops.registry import mlflow_registry

    spec = load_pipeline(pipeline)
    if not storage.exists(job["output_file"]):
        raise JobResultMissing(f"evaluation job {job['config_uri']} wrote no {job['output_file']}")
    metrics = json.loads(storage.read_bytes(job["output_file"]))
    flat = flat_metrics(metrics)
    baseline = flat_metrics(metrics.get("baseline") or {})
    champion = flat_metrics(metrics["champion"]) if metrics.get("champion") else None
    logged = {
        **flat,
        **{f"baseline_{k}": v for k, v in baseline.items() if "." not in k},
        **{f"champion_{k}": v for k, v in (champion or {}).items() if "." not in k},
    }
    mlflow_registry.log_params_and_metrics(job["mlflow_run_id"], params={}, metrics=logged)
    probe = {
        **(job.get("probe") or {}),
        **{k: v for k, v in (metrics.get("pii_probe") or {}).items() if k != "matched_hashes"},
    }
    record(
        spec,
        "model.evaluated",
        f"mlflow-run/{job['mlflow_run_id']}",
        run_id,
        {"metrics": metrics, "champion": job.get("champion"), "pii_probe": probe or None},
    )
    return {
        "metrics": flat,
        "champion": champion,
        "baseline": baseline or None,
        "champion_note": job.get("champion"),
        "pii_probe": probe or None,
    }


def check_gates(
    pipeline: str, evaluation: dict[str, Any], trained: dict[str, Any], run_id: str
) -> dict[str, Any]:
    from llmops.evaluation.gates import evaluate_gates, raise_if_failed

    spec = load_pipeline(pipeline)
    decision = evaluate_gates(
        list(spec.gates), evaluation["metrics"], evaluation.get("champion"), evaluation.get("baseline")
    )
    decision["champion"] = evaluation.get("champion_note")
    record(spec, "model.gated", f"mlflow-run/{trained['mlflow_run_id']}", run_id, decision)
    raise_if_failed(decision)
    return decision


def register(pipeline: str, trained: dict[str, Any], decision: dict[str, Any], run_id: str) -> dict[str, Any]:
    from llmops import __version__
    from llmops.registry import mlflow_registry
    from llmops.training.staging import fetch_model_dir

    spec = load_pipeline(pipeline)
    ledger = get_ledger()
    existing = ledger.records(pipeline=spec.name, event_type="model.registered", run_id=run_id)
    if existing:  # a retry after the version was created: do not register a second version
        return {k: existing[-1].payload[k] for k in ("model_name", "version", "model_uri")}
    from llmops.orchestration.training_data import example_prompt

    registered = mlflow_registry.log_and_register_model(
        run_id=trained["mlflow_run_id"],
        model_name=spec.registry.model_name,
        base_model_dir=fetch_model_dir(trained["base_model_dir"]),
        adapter_dir=fetch_model_dir(trained["adapter_dir"], "adapter_path"),
        tags={
            "llmops.pipeline": spec.name,
            "llmops.spec_hash": spec_hash(spec),
            "llmops.code_version": __version__,
            "llmops.curated_snapshot_id": trained["curated_snapshot_id"],
            "llmops.sft_snapshot_id": trained["sft_snapshot_id"],
            "llmops.airflow_run_id": run_id,
            "llmops.gates_passed": str(decision["passed"]).lower(),
            "llmops.adapter_uri": trained["adapter_dir"],
            "llmops.base_model": spec.training.base_model.uri,
            "llmops.base_model_dir": trained["base_model_dir"],
            "llmops.method": spec.training.method,
            "llmops.chain": json.dumps(trained.get("chain") or [])[:4900],
            "llmops.gates": json.dumps(decision["gates"])[:4900],
        },
        max_new_tokens=spec.evaluation.max_new_tokens,
        input_example=example_prompt(spec, trained["sft_snapshot_id"]),
    )
    record(
        spec,
        "model.registered",
        f"model/{registered['model_name']}/{registered['version']}",
        run_id,
        {**registered, "mlflow_run_id": trained["mlflow_run_id"], "alias": mlflow_registry.CHALLENGER},
    )
    from llmops import lineage

    lineage.emit_register(spec, trained, {**registered, "alias": mlflow_registry.CHALLENGER})  # never raises
    return registered


APPROVE, REJECT = "Approve", "Reject"


def approval_outcome(spec: PipelineSpec, response: dict[str, Any] | None) -> dict[str, Any]:
    """Read the human decision (the approval task's XCom) into what the ledger records.

    No answer before the deadline comes back as the default, "Reject", with no responder: that
    is a timeout. A responder outside ``registry.approval.approvers`` does not count.
    """
    if not response or not response.get("chosen_options"):
        return {"approved": False, "outcome": "no_decision", "approver": None, "responded_at": None}
    chosen = response["chosen_options"][0]
    user = response.get("responded_by_user") or None
    responded_at = response.get("responded_at")
    outcome: dict[str, Any] = {
        "approved": chosen == APPROVE,
        "outcome": "approved" if chosen == APPROVE else "rejected",
        "approver": {"id": str(user.get("id")), "name": str(user.get("name"))} if user else None,
        "responded_at": responded_at.isoformat() if hasattr(responded_at, "isoformat") else responded_at,
    }
    if user is None:
        outcome.update(approved=False, outcome="timed_out")
    approvers = spec.registry.approval.approvers
    if outcome["approved"] and approvers and outcome["approver"]["id"] not in approvers:
        outcome.update(approved=False, outcome="approver_not_allowed")
    return outcome


def promote(
    pipeline: str,
    registered: dict[str, Any],
    run_id: str,
    enabled: bool = True,
    approval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Move the champion alias, unless promotion is off or the required approval was not given."""
    from llmops.registry import mlflow_registry

    spec = load_pipeline(pipeline)
    subject = f"model/{registered['model_name']}/{registered['version']}"
    if not enabled:
        record(
            spec,
            "model.promotion_skipped",
            subject,
            run_id,
            {"reason": "promotion disabled for this run (Param promote=false)"},
        )
        return {
            "promoted": False,
            "champion": mlflow_registry.alias_version(registered["model_name"], "champion"),
        }
    if spec.registry.approval.required:
        outcome = approval_outcome(spec, approval)
        event = "model.approved" if outcome["approved"] else "model.rejected"
        record(
            spec,
            event,
            subject,
            run_id,
            {"model_name": registered["model_name"], "version": registered["version"], **outcome},
        )
        if not outcome["approved"]:
            return {
                "promoted": False,
                "reason": outcome["outcome"],
                "champion": mlflow_registry.alias_version(registered["model_name"], "champion"),
            }
    from llmops.orchestration.deploy import ensure_registry_webhook

    ensure_registry_webhook(spec)  # before the alias moves, so MLflow's own event reaches it too
    moved = mlflow_registry.promote(registered["model_name"], registered["version"])
    record(
        spec,
        "model.promoted",
        subject,
        run_id,
        {
            "model_name": registered["model_name"],
            "version": registered["version"],
            **moved,
        },
    )
    return {"promoted": True, **moved}


def rollback(model_name: str, reason: str, run_id: str, requested_by: str | None) -> dict[str, Any]:
    """Restore the previous champion of `model_name` and record who asked and why."""
    from llmops.orchestration.deploy import ensure_registry_webhook
    from llmops.registry import mlflow_registry

    spec = pipeline_of_model(model_name)
    ensure_registry_webhook(spec)
    moved = mlflow_registry.rollback(model_name)
    record(
        spec,
        "model.rolled_back",
        f"model/{model_name}/{moved['champion']}",
        run_id,
        {"model_name": model_name, **moved, "reason": reason, "requested_by": requested_by},
    )
    return moved


class UnknownModel(PermanentError, LookupError):
    """No pipeline spec registers a model of that name."""


def pipeline_of_model(model_name: str) -> PipelineSpec:
    from llmops.specs import SpecError, load_spec

    known = []
    for path in sorted(get_settings().pipelines_dir.glob("*.yaml")):
        try:
            spec = load_spec(path)
        except SpecError:
            continue
        if spec.registry.model_name == model_name:
            return spec
        known.append(spec.registry.model_name)
    raise UnknownModel(
        f"no pipeline registers a model named {model_name!r}; known: {', '.join(known) or 'none'}"
    )


def audit_report(pipeline: str, run_id: str) -> dict[str, Any]:
    from llmops.reports.audit import write_audit_report

    spec = load_pipeline(pipeline)
    paths = write_audit_report(spec, run_id)
    record(spec, "report.generated", f"report/{safe_run_id(run_id)}", run_id, paths)
    return paths
