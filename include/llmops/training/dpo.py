"""Preference optimisation with LoRA: DPO via TRL's ``DPOTrainer``.

Rows are ``{"prompt": str, "chosen": str, "rejected": str}`` (with ``chat_template: true`` the
prompt becomes a user turn and the answers assistant turns, TRL's conversational preference
format). The policy is the base model plus a LoRA adapter; the reference model is the *same*
base with the adapter disabled (``ref_model=None`` with a PEFT model), so no second copy of the
weights is held. ``beta`` comes from the job config.

Evaluation on the held-out pairs: ``eval_loss`` (the DPO loss, log 2 before training), the
reward accuracy (share of pairs whose implicit reward ``beta * (log pi - log pi_ref)`` is higher
for the chosen answer than for the rejected one) and the mean reward margin. Before training the
adapter is zero, policy and reference agree and every reward is 0 (accuracy 0, margin 0).

Everything else (staging, LoRA, checkpoints and resume, integrity checks, manifest, MLflow) is
the shared driver in :mod:`llmops.training.driver`.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from llmops.jobs.runtime import read_jsonl_rows
from llmops.training.driver import TrainerRecipe, run_training
from llmops.training.methods import get_method
from llmops.training.trainer_parts import build_peft_config, progress_callback, training_arguments

if TYPE_CHECKING:
    from pathlib import Path

    from llmops.training.config import TrainingJobConfig

PAIR_FIELDS = get_method("preference").row_fields
# TRL's eval metric (mean over evaluation batches) -> the name in result.json (after the prefix).
_REWARD_METRICS = {
    "eval_rewards/accuracies": "reward_accuracy",
    "eval_rewards/margins": "reward_margin",
    "eval_rewards/chosen": "reward_chosen",
    "eval_rewards/rejected": "reward_rejected",
}


def build_dpo_config(
    config: TrainingJobConfig,
    output_dir: Path,
    *,
    device: str,
    dtype: Any,
    train_rows: int,
    world_size: int = 1,
) -> Any:
    """The ``DPOConfig`` of a preference job."""
    from trl import DPOConfig

    return training_arguments(
        DPOConfig,
        config,
        output_dir,
        device=device,
        dtype=dtype,
        train_rows=train_rows,
        world_size=world_size,
        beta=config.dpo_beta,
        max_length=config.hyperparameters.max_length,
        loss_type=["sigmoid"],  # the original DPO loss
        precompute_ref_log_probs=False,  # the reference is the adapter-disabled base, always at hand
    )


def as_preference_conversation(row: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    """A pair as TRL's conversational preference example (user prompt, assistant answers)."""
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "chosen": [{"role": "assistant", "content": row["chosen"].strip()}],
        "rejected": [{"role": "assistant", "content": row["rejected"].strip()}],
    }


def build_dpo_trainer(
    config: TrainingJobConfig,
    args: Any,
    model: Any,
    tokenizer: Any,
    train_rows: list[dict[str, str]],
    eval_rows: list[dict[str, str]],
) -> Any:
    """DPOTrainer with the job's LoRA adapter and no separate reference model."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOTrainer

    def convert(rows: list[dict[str, str]]) -> Any:
        if config.chat_template:
            return Dataset.from_list([as_preference_conversation(r) for r in rows])
        return Dataset.from_list(rows)

    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # with a PEFT policy: the base with the adapter disabled
        args=args,
        train_dataset=convert(train_rows),
        eval_dataset=convert(eval_rows),
        processing_class=tokenizer,
        peft_config=build_peft_config(config),
    )
    if trainer.ref_model is not None:  # a second copy of the weights would double the memory
        raise RuntimeError(
            "DPOTrainer created a separate reference model; expected the adapter-disabled base"
        )
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress_callback())
    return trainer


def dpo_metrics(evaluation: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}{name}": float(evaluation[key]) if evaluation.get(key) is not None else None
        for key, name in _REWARD_METRICS.items()
    }


PREFERENCE = TrainerRecipe(
    name="preference",
    read_rows=partial(read_jsonl_rows, keys=PAIR_FIELDS, method="preference"),
    build_args=build_dpo_config,
    build_trainer=build_dpo_trainer,
    eval_metrics=dpo_metrics,
)


def train_preference(config: TrainingJobConfig) -> dict[str, Any]:
    """Run one LoRA DPO job; the result is also written to ``result.json``."""
    return run_training(config, PREFERENCE)
