"""Hyperparameter search of a finetune run: the Optuna study, one training job per trial, results.

The study lives in SQL (SQLite by default, Postgres by URL): trials run as mapped tasks (or pods),
each a child MLflow run that reports to its Optuna trial so the median pruner can stop it.
"""

from __future__ import annotations

import logging
from typing import Any

from llmops.errors import PermanentError, safe_error_text
from llmops.jobs.results import read_result, write_result
from llmops.ledger import record
from llmops.ledger.events import TrialSkipped
from llmops.orchestration.finetune.jobs import (
    build_train_job,
    experiment_id,
    hyperparameters_with,
    optuna_url_for_job,
    run_tags,
    usage_metrics,
)
from llmops.settings import get_settings
from llmops.specs.pinned import run_spec
from llmops.storage import safe_run_id

log = logging.getLogger(__name__)


def plan_search(
    pipeline: str, data: dict[str, Any], run_id: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Ask the study for this run's trials and write one training job per trial.

    Each trial is a child MLflow run of the search's parent run and reports its evaluations to
    the Optuna trial (so the median pruner can stop it). No search in the spec: no trials.
    """
    from llmops.orchestration.finetune import study
    from llmops.registry import mlflow_registry

    spec = run_spec(pipeline, run_id)
    search = spec.training.search
    if search is None:
        return []
    trials = study.plan_trials(spec, data["sft_snapshot_id"], run_id)
    experiment = experiment_id(spec)
    parent = mlflow_registry.find_or_create_run(
        experiment,
        run_name=f"{spec.name}-{safe_run_id(run_id)}-search",
        tags=run_tags(spec, data, run_id, "search"),
    )
    settings = get_settings()
    max_steps = search.max_steps_per_trial or (params or {}).get("max_steps")
    jobs = []
    for trial in trials:
        overrides = study.overrides_for(trial["params"])
        stage = f"trial-{trial['number']}"
        child = mlflow_registry.find_or_create_run(
            experiment,
            run_name=f"{spec.name}-{safe_run_id(run_id)}-{stage}",
            tags={**run_tags(spec, data, run_id, stage), "mlflow.parentRunId": parent},
        )
        job = build_train_job(
            spec,
            data,
            run_id,
            name=stage,
            hyperparameters=hyperparameters_with(spec, overrides["hyperparameters"]),
            lora={**spec.training.lora.model_dump(), **overrides["lora"]},
            max_steps=max_steps,
            mlflow={
                "tracking_uri": settings.mlflow_tracking_uri,
                "experiment_name": spec.registry.model_name,
                "run_id": child,
                "log_adapter": False,  # only the final model's adapter is worth keeping
            },
            hpo_target={
                "storage_url": optuna_url_for_job(spec),
                "study_name": trial["study"],
                "trial_number": trial["number"],
            },
        )
        jobs.append({**job, "number": trial["number"], "params": trial["params"], "mlflow_run_id": child})
    return jobs


def finish_search(
    pipeline: str, data: dict[str, Any], trials: list[dict[str, Any]], run_id: str
) -> dict[str, Any]:
    """Tell the study every trial's outcome (from its result.json) and pick the best parameters.

    Runs whatever state the trial tasks ended in: a failed or lost trial is recorded as failed
    and the search goes on with the others. Without any completed trial the final training uses
    the spec's hyperparameters (recorded).
    """
    from llmops.orchestration.finetune import study
    from llmops.registry import mlflow_registry

    spec = run_spec(pipeline, run_id)
    search = spec.training.search
    if search is None or not trials:
        return {"searched": False}
    from llmops.governance import cost

    outcomes = []
    usages = []
    for trial in trials:
        result = read_result(trial["output_dir"]) or {}
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
                # The job reduced it already; a result file is input, so reduce it again.
                state="failed",
                error=safe_error_text(str(result.get("error") or "no result (job did not finish)")),
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
                trial["mlflow_run_id"], params={}, metrics=usage_metrics(usage, "")
            )
        outcomes.append(outcome)
    summary = study.tell_results(spec, data["sft_snapshot_id"], outcomes, run_id)
    parent = mlflow_registry.find_or_create_run(
        experiment_id(spec),
        run_name=f"{spec.name}-{safe_run_id(run_id)}-search",
        tags=run_tags(spec, data, run_id, "search"),
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
            **usage_metrics(cost.totals(spec, usages), "_search"),
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

    spec = run_spec(pipeline, run_id)
    if spec.cost is None or spec.cost.budget is None:
        return {"budget": None}
    usages = []
    for other in trials:
        if other["number"] == trial["number"]:
            continue
        result = read_result(other["output_dir"])
        if result is not None and result.get("status") != "skipped":
            usages.append(cost.job_usage(spec, f"trial-{other['number']}", "trial", result))
    spent = cost.totals(spec, usages)["cost"] or 0.0
    check = {"budget": spec.cost.budget, "spent": spent, "currency": spec.cost.currency}
    if spent < spec.cost.budget:
        return check
    skipped = {"status": "skipped", "reason": "budget", **check, "trial_number": trial["number"]}
    write_result(trial["output_dir"], skipped)
    record(
        spec,
        TrialSkipped(trial=trial["number"], params=trial.get("params"), **check, reason="budget"),
        f"study/{trial.get('study')}/trial-{trial['number']}",
        run_id,
    )
    raise BudgetExceeded(
        f"trial {trial['number']} not started: this run's trials cost {spent:.4f} {spec.cost.currency}, "
        f"the budget (cost.budget) is {spec.cost.budget:.4f}"
    )
