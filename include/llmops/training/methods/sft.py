"""Supervised fine-tuning: a prompt rendered from the record, its answer as the completion; the loss
is on the completion only."""

from __future__ import annotations

from typing import Any

from llmops.training.methods.base import TrainingMethod


def render(stage: Any, values: dict[str, str]) -> tuple[dict[str, str] | None, str | None]:
    completion = values.get(stage.completion_column, "").strip()
    if not completion:
        return None, f"no {stage.completion_column}"
    return {"prompt": stage.prompt_template.format(**values), "completion": " " + completion}, None


METHOD = TrainingMethod(
    name="sft",
    title="Supervised fine-tuning",
    dataset="prompt_completion",
    row_fields=("prompt", "completion"),
    suite="llmops_sft_dataset",
    spec_fields=("prompt_template", "completion_column"),
    render=render,
    trainer="llmops.training.sft:train_sft",
    evaluation="completion",
    description="Teaches answers: prompt from prompt_template, answer from completion_column.",
)
