"""Continued pretraining with LoRA: next-token loss on raw domain text, via TRL's ``SFTTrainer``.

Rows are ``{"text": str}``. TRL's language-modeling path appends EOS to each text, tokenizes it
and, with ``packing_strategy="wrapped"``, concatenates everything and cuts it into blocks of
``hyperparameters.max_length`` tokens (the classic ``group_texts`` recipe): every token is a
training target and no padding is wasted. Blocks span document boundaries on purpose, as in
pretraining. The eval split is packed the same way, so ``eval_loss`` is the mean next-token loss
per held-out token and ``eval_perplexity = exp(eval_loss)``.

Everything else (staging, LoRA, checkpoints and resume, integrity checks, manifest, MLflow) is
the shared driver in :mod:`llmops.training.driver`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING, Any

from llmops.jobs.runtime import read_jsonl_rows
from llmops.training.driver import TrainerRecipe, run_training
from llmops.training.methods import get_method
from llmops.training.trainer_parts import build_peft_config, progress_callback, training_arguments

if TYPE_CHECKING:
    from pathlib import Path

    from llmops.training.config import TrainingJobConfig

TEXT_FIELD = "text"
PACKING_STRATEGY = "wrapped"


def build_cpt_config(
    config: TrainingJobConfig,
    output_dir: Path,
    *,
    device: str,
    dtype: Any,
    train_rows: int,
    world_size: int = 1,
) -> Any:
    """The ``SFTConfig`` of a continued-pretraining job (``train_rows`` = blocks per epoch)."""
    from trl import SFTConfig

    return training_arguments(
        SFTConfig,
        config,
        output_dir,
        device=device,
        dtype=dtype,
        train_rows=train_rows,
        world_size=world_size,
        dataset_text_field=TEXT_FIELD,
        max_length=config.hyperparameters.max_length,
        packing=True,
        packing_strategy=PACKING_STRATEGY,
        eval_packing=True,  # the held-out text in the same blocks: loss per held-out token
        completion_only_loss=False,  # every token is a target
    )


def build_cpt_trainer(
    config: TrainingJobConfig,
    args: Any,
    model: Any,
    tokenizer: Any,
    train_rows: list[dict[str, str]],
    eval_rows: list[dict[str, str]],
) -> Any:
    """SFTTrainer on a plain ``text`` dataset, with the job's LoRA adapter."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows),
        processing_class=tokenizer,
        peft_config=build_peft_config(config),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress_callback())
    return trainer


def count_blocks(config: TrainingJobConfig, tokenizer: Any, rows: list[dict[str, str]]) -> int:
    """Blocks of ``max_length`` tokens the texts pack into (each text + EOS, as TRL tokenizes it)."""
    eos = tokenizer.eos_token
    tokens = sum(
        len(
            tokenizer(text=r[TEXT_FIELD] if r[TEXT_FIELD].endswith(eos) else r[TEXT_FIELD] + eos)["input_ids"]
        )
        for r in rows
    )
    return max(1, -(-tokens // config.hyperparameters.max_length))


def perplexity(loss: float | None) -> float | None:
    """``exp(loss)`` of a mean next-token loss; None when there is no loss (inf on overflow)."""
    if loss is None:
        return None
    try:
        return math.exp(float(loss))
    except OverflowError:
        return math.inf


def cpt_metrics(evaluation: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}perplexity": perplexity(evaluation.get("eval_loss"))}


CONTINUED_PRETRAINING = TrainerRecipe(
    name="continued_pretraining",
    read_rows=partial(
        read_jsonl_rows, keys=get_method("continued_pretraining").row_fields, method="continued_pretraining"
    ),
    build_args=build_cpt_config,
    build_trainer=build_cpt_trainer,
    count_examples=count_blocks,
    eval_metrics=cpt_metrics,
    packing={
        "enabled": True,
        "strategy": PACKING_STRATEGY,
        "checked": False,
        "reason": "continued pretraining: blocks of concatenated texts attend across document boundaries "
        "by design",
    },
)


def train_continued_pretraining(config: TrainingJobConfig) -> dict[str, Any]:
    """Run one LoRA continued-pretraining job; the result is also written to ``result.json``."""
    return run_training(config, CONTINUED_PRETRAINING)
