"""Optuna pruning from inside the training job.

A hyperparameter search runs each trial as its own training job (one mapped Airflow task per
trial). The orchestrator asks the study for a trial and passes its number; this job reports
each evaluation's loss to that trial in the study's RDB storage and stops as soon as the
study's pruner says the trial cannot beat the others. The job does not finish the trial: the
orchestrator tells the study the outcome it reads from ``result.json``.

In a distributed job only rank 0 talks to the storage, and its decision is broadcast, so every
rank stops at the same step (a rank that kept going would hang in the next collective).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from llmops.jobs.runtime import JobInputError

if TYPE_CHECKING:
    from llmops.training.config import HpoTarget

logger = logging.getLogger(__name__)


def resolve_storage_url(value: str) -> str:
    """``env:NAME`` reads the URL from the environment (it may hold a password); else as given."""
    if not value.startswith("env:"):
        return value
    name = value.removeprefix("env:")
    url = os.environ.get(name)
    if not url:
        raise JobInputError(f"hpo.storage_url: environment variable {name} is not set")
    return url


def load_trial(target: HpoTarget) -> Any:
    """The running Optuna trial the job is, with the configured pruner attached to its study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner: optuna.pruners.BasePruner
    if target.pruner == "median":
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=target.n_startup_trials, n_warmup_steps=target.n_warmup_steps
        )
    else:
        pruner = optuna.pruners.NopPruner()
    storage = optuna.storages.get_storage(
        resolve_storage_url(target.storage_url)
    )  # one connection pool for the whole job
    try:
        study_id = storage.get_study_id_from_name(target.study_name)
    except KeyError:
        raise JobInputError(f"hpo.study_name: no study {target.study_name!r} in the storage") from None
    try:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, target.trial_number)
    except KeyError:
        raise JobInputError(
            f"hpo.trial_number: study {target.study_name!r} has no trial {target.trial_number}"
        ) from None
    study = optuna.load_study(study_name=target.study_name, storage=storage, pruner=pruner)
    state = storage.get_trial(trial_id).state
    if state != optuna.trial.TrialState.RUNNING:
        raise JobInputError(
            f"hpo.trial_number: trial {target.trial_number} of {target.study_name!r} is {state.name}, not RUNNING"
        )
    return optuna.trial.Trial(study, trial_id)


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's value of ``flag`` on every rank (identity when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    payload = [flag]
    dist.broadcast_object_list(payload, src=0)
    return bool(payload[0])


def pruning_callback(target: HpoTarget, is_world_zero: bool) -> Any:
    """A TrainerCallback that reports eval_loss after each evaluation and stops a pruned trial."""
    from transformers import TrainerCallback

    trial = load_trial(target) if is_world_zero else None

    class OptunaPruning(TrainerCallback):
        def __init__(self) -> None:
            self.training = False
            self.pruned = False
            self.pruned_at_step: int | None = None
            self.last_eval_loss: float | None = None
            self.reported_steps: list[int] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.training = True  # evaluations before training (the base model) are not reported

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.training = False

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any
        ) -> None:
            if not self.training or not metrics or "eval_loss" not in metrics:
                return
            value = float(metrics["eval_loss"])
            self.last_eval_loss = value
            prune = False
            if trial is not None:
                trial.report(value, step=state.global_step)
                self.reported_steps.append(state.global_step)
                prune = trial.should_prune()
            if broadcast_flag(prune):
                self.pruned = True
                self.pruned_at_step = state.global_step
                control.should_training_stop = True
                logger.info(
                    "trial %d pruned at step %d (eval_loss=%.4f)",
                    target.trial_number,
                    state.global_step,
                    value,
                )

        def summary(self) -> dict[str, Any]:
            return {
                "study_name": target.study_name,
                "trial_number": target.trial_number,
                "pruned": self.pruned,
                "pruned_at_step": self.pruned_at_step,
                "reported_steps": self.reported_steps,
                "last_eval_loss": self.last_eval_loss,
            }

    return OptunaPruning()
