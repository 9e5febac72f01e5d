"""Training of a finetune run: chain stages (each gated, its merged model the next base) and the
final training, written as jobs and collected from their results into MLflow and the ledger."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llmops.errors import PermanentError
from llmops.evaluation.gates import is_number
from llmops.jobs.results import read_result
from llmops.ledger import record
from llmops.ledger.events import CostRecorded, ModelTrained, StageTrained
from llmops.orchestration.finetune.jobs import (
    JobResultMissing,
    SpecConflict,
    build_train_job,
    hyperparameters_with,
    mlflow_registry_run,
    resolve_base_model,
    stage_snapshot_id,
    usage_metrics,
)
from llmops.settings import get_settings
from llmops.specs.pinned import run_spec
from llmops.storage import safe_run_id

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec
    from llmops.specs.schema import StageSpec

log = logging.getLogger(__name__)


def prepare_train(
    pipeline: str,
    data: dict[str, Any],
    run_id: str,
    overrides: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the final training job: spec hyperparameters, then the search's best, then Params."""
    from llmops.orchestration.finetune import study

    spec = run_spec(pipeline, run_id)
    best = (search or {}).get("best") or {}
    tuned = study.overrides_for(best.get("params", {})) if best else {"hyperparameters": {}, "lora": {}}
    hyper = hyperparameters_with(spec, tuned["hyperparameters"], overrides)
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


def stage_spec(spec: PipelineSpec, name: str) -> StageSpec:
    for stage in spec.training.preceding_stages:
        if stage.name == name:
            return stage
    raise SpecConflict(f"training.preceding_stages has no stage '{name}' (the spec changed during the run?)")


def prepare_stage(
    pipeline: str, data: dict[str, Any], stage_name: str, run_id: str, max_steps: int | None = None
) -> dict[str, Any]:
    """Write a preceding chain stage's training job: its own data, settings and MLflow run."""
    spec = run_spec(pipeline, run_id)
    stage = stage_spec(spec, stage_name)
    snapshot_id = stage_snapshot_id(data, stage_name)
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
    if value is None and metric == "eval_perplexity" and is_number(result.get("eval_loss")):
        value = math.exp(min(float(result["eval_loss"]), 700.0))
    return float(value) if is_number(value) else None


class StageGateFailed(PermanentError):
    """A chain stage missed one of its gates: the chain stops before the next stage."""


def collect_stage(pipeline: str, job: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Read a chain stage's result, check its gates, record it; the next stage trains on its merge."""
    from llmops import metrics as catalogue
    from llmops.evaluation.gates import evaluate_gates
    from llmops.governance import cost
    from llmops.registry import mlflow_registry

    spec = run_spec(pipeline, run_id)
    stage = stage_spec(spec, job["stage"])
    result = read_result(job["output_dir"])
    if result is None:
        raise JobResultMissing(f"stage job {job['config_uri']} left no result.json in {job['output_dir']}")
    if result.get("status") != "succeeded":
        raise RuntimeError(f"stage '{stage.name}' failed: {result.get('error') or result.get('status')}")
    if not result.get("merged_model_path"):
        raise JobResultMissing(f"stage '{stage.name}' wrote no merged model in {job['output_dir']}")
    metrics = {m: stage_metric(result, m) for m in catalogue.stage_metrics()}
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
            **usage_metrics(usage, ""),
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
        StageTrained(**entry, hyperparameters=job["hyperparameters"], lora=job["lora"], usage=usage),
        f"mlflow-run/{job['mlflow_run_id']}",
        run_id,
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


def collect_train(pipeline: str, job: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Read the training job's result from the lake, log it to MLflow and the ledger."""
    from llmops.registry import mlflow_registry

    spec = run_spec(pipeline, run_id)
    result = read_result(job["output_dir"])
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
        | usage_metrics(usage, "")
        | usage_metrics(run_totals, "_total"),
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
        ModelTrained(
            **summary,
            base_model=spec.training.base_model.uri,
            launcher=spec.training.launcher,
            lora=job["lora"],
            hyperparameters=job["hyperparameters"],
            tuned_by_search=job.get("tuned_by_search", False),
            max_steps=job.get("max_steps"),
            result=result,
            usage=usage,
        ),
        f"mlflow-run/{mlflow_run_id}",
        run_id,
    )
    record(
        spec,
        CostRecorded(
            mlflow_run_id=mlflow_run_id,
            currency=run_totals["currency"],
            totals=run_totals,
            jobs=jobs,
            trials_skipped_for_budget=sum(
                1 for j in jobs if j["kind"] == "trial" and j.get("status") == "skipped"
            ),
        ),
        f"cost/{safe_run_id(run_id)}",
        run_id,
    )
    from llmops import lineage

    lineage.emit_train(spec, summary)  # OpenLineage: SFT + base model -> MLflow run, adapter; never raises
    # The evaluation job checks the adapter's weights against it (the event records it in `result`).
    return {**summary, "adapter_sha256": result.get("adapter_sha256")}
