"""Supervised fine-tuning with LoRA (or QLoRA), via TRL's ``SFTTrainer``: prompt/completion rows,
loss on the completion tokens only, optionally packed (no attention across packed examples).
The job itself is :func:`llmops.training.driver.run_training`'s.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llmops.jobs.runtime import as_conversation, read_prompt_completion_jsonl
from llmops.training.driver import TrainerRecipe, run_training
from llmops.training.trainer_parts import (
    build_peft_config,
    progress_callback,
    training_arguments,
)

if TYPE_CHECKING:
    from pathlib import Path

    from llmops.training.config import TrainingJobConfig

logger = logging.getLogger(__name__)


def make_datasets(
    config: TrainingJobConfig, train_rows: list[dict[str, str]], eval_rows: list[dict[str, str]]
) -> Any:
    """The train and eval ``datasets.Dataset``: plain prompt/completion, or chat conversations."""
    from datasets import Dataset

    def convert(rows: list[dict[str, str]]) -> Any:
        if config.chat_template:
            rows = [as_conversation(r["prompt"], r["completion"]) for r in rows]  # type: ignore[misc]
        return Dataset.from_list(rows)

    return convert(train_rows), convert(eval_rows)


def build_sft_config(
    config: TrainingJobConfig,
    output_dir: Path,
    *,
    device: str,
    dtype: Any,
    train_rows: int,
    world_size: int = 1,
) -> Any:
    """The ``SFTConfig`` of a job: one place, used by the entrypoint, the tests and the benchmark."""
    from trl import SFTConfig

    return training_arguments(
        SFTConfig,
        config,
        output_dir,
        device=device,
        dtype=dtype,
        train_rows=train_rows,
        world_size=world_size,
        max_length=config.hyperparameters.max_length,
        packing=config.packing,
        packing_strategy="bfd",  # whole examples per row + padding-free position_ids (see packing.py)
        eval_packing=False,  # eval loss per example, comparable with the evaluation entrypoint
        completion_only_loss=True,
    )


def build_trainer(
    config: TrainingJobConfig,
    args: Any,
    model: Any,
    tokenizer: Any,
    train_rows: list[dict[str, str]],
    eval_rows: list[dict[str, str]],
) -> Any:
    """The SFTTrainer exactly as the entrypoint builds it (no job-level callbacks)."""
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    train_dataset, eval_dataset = make_datasets(config, train_rows, eval_rows)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=build_peft_config(config),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress_callback())
    return trainer


SFT = TrainerRecipe(
    name="sft",
    read_rows=read_prompt_completion_jsonl,
    build_args=build_sft_config,
    build_trainer=build_trainer,
)


def train_sft(config: TrainingJobConfig) -> dict[str, Any]:
    """Run one LoRA SFT job and return the result that is also written to ``result.json``."""
    return run_training(config, SFT)
