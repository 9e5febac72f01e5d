"""Hyperparameter search with Optuna's ask/tell interface, one trial per mapped Airflow task.

The study lives in SQL (`LLMOPS_OPTUNA_URL`: SQLite by default, PostgreSQL in production), named
after the pipeline, the training dataset and the search space, so a re-run of the same search on
the same data continues the study instead of starting over. Trials are asked for in one task
(TPE sampler, seeded), run in parallel by the launcher, and told back in one task: a failed trial
is recorded as failed and does not fail the study; a pruned one (stopped early by the median pruner,
which the training job consults after each evaluation) is recorded as pruned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from llmops.ledger import record
from llmops.ledger.events import SearchCompleted, SearchPlanned
from llmops.settings import get_settings

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec
    from llmops.specs.schema import SearchSpec

log = logging.getLogger(__name__)

LORA_PARAMS = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout"}
INT_PARAMS = {"batch_size", "lora_r", "lora_alpha"}


def storage_url() -> str:
    return os.environ.get("LLMOPS_OPTUNA_URL", f"sqlite:///{get_settings().home / 'optuna.db'}")


def study_name(spec: PipelineSpec, sft_snapshot_id: str) -> str:
    search = spec.training.search
    assert search is not None
    space = hashlib.sha256(json.dumps(search.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[
        :8
    ]
    return f"{spec.name}:{sft_snapshot_id}:{space}"


def distributions(search: SearchSpec) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, param in search.space.items():
        if param.type == "categorical":
            out[name] = CategoricalDistribution(list(param.choices or []))
        elif param.type == "int" or name in INT_PARAMS:
            out[name] = IntDistribution(int(param.low), int(param.high), log=param.log)  # type: ignore[arg-type]
        else:
            out[name] = FloatDistribution(float(param.low), float(param.high), log=param.log)  # type: ignore[arg-type]
    return out


def overrides_for(params: dict[str, Any]) -> dict[str, Any]:
    """Trial parameters as overrides of the spec: {"hyperparameters": {...}, "lora": {...}}."""
    hyper = {k: v for k, v in params.items() if k not in LORA_PARAMS}
    lora = {LORA_PARAMS[k]: v for k, v in params.items() if k in LORA_PARAMS}
    return {"hyperparameters": hyper, "lora": lora}


def _study(spec: PipelineSpec, name: str) -> Any:
    import optuna

    search = spec.training.search
    assert search is not None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=storage_url(),
        study_name=name,
        direction=search.direction,
        sampler=optuna.samplers.TPESampler(seed=spec.training.hyperparameters.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        load_if_exists=True,
    )


def plan_trials(spec: PipelineSpec, sft_snapshot_id: str, run_id: str) -> list[dict[str, Any]]:
    """Ask the study for this run's trials; a retried task gets the same trials back."""
    search = spec.training.search
    if search is None:
        return []
    name = study_name(spec, sft_snapshot_id)
    study = _study(spec, name)
    existing = study.get_trials(deepcopy=False)
    trials = [
        {"number": t.number, "params": dict(t.params), "study": name}
        for t in existing
        if t.user_attrs.get("airflow_run_id") == run_id
    ]
    # A continued study must not replay the same random start-up points: offset the seed by the
    # trials asked before this run (a retry of this task asks nothing new, so it stays stable).
    import optuna

    asked_before = sum(1 for t in existing if t.user_attrs.get("airflow_run_id") != run_id)
    study.sampler = optuna.samplers.TPESampler(seed=spec.training.hyperparameters.seed + asked_before)
    for _ in range(search.trials - len(trials)):
        trial = study.ask(distributions(search))
        trial.set_user_attr("airflow_run_id", run_id)
        trials.append({"number": trial.number, "params": dict(trial.params), "study": name})
    trials.sort(key=lambda t: t["number"])
    record(
        spec,
        SearchPlanned(
            study=name, storage=_redacted(storage_url()), trials=trials, direction=search.direction
        ),
        f"study/{name}",
        run_id,
    )
    return trials


def _redacted(url: str) -> str:
    """The storage URL without a password, for the ledger."""
    try:
        import sqlalchemy as sa

        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def tell_results(
    spec: PipelineSpec, sft_snapshot_id: str, results: list[dict[str, Any]], run_id: str
) -> dict[str, Any]:
    """Report each trial's outcome to the study; return the best trial of the study so far."""
    from optuna.trial import TrialState

    name = study_name(spec, sft_snapshot_id)
    study = _study(spec, name)
    for result in results:
        state = result.get("state")
        if state == "succeeded" and result.get("value") is not None:
            study.tell(result["number"], float(result["value"]), skip_if_finished=True)
        elif state == "pruned":
            study.tell(result["number"], state=TrialState.PRUNED, skip_if_finished=True)
        else:
            study.tell(result["number"], state=TrialState.FAIL, skip_if_finished=True)
    completed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    summary: dict[str, Any] = {
        "study": name,
        "trials": results,
        "completed_in_study": len(completed),
        "best": None,
    }
    if completed:
        best = study.best_trial
        summary["best"] = {"number": best.number, "value": best.value, "params": dict(best.params)}
    record(spec, SearchCompleted(**summary), f"study/{name}", run_id)
    if summary["best"] is None:
        log.warning("no trial of study %s completed: training with the spec's hyperparameters", name)
    return summary
