"""Preference tuning (DPO): a prompt and two answers, the chosen one preferred over the rejected one,
against the base model as the reference."""

from __future__ import annotations

from typing import Any

from llmops.training.methods.base import TrainingMethod


def render(stage: Any, values: dict[str, str]) -> tuple[dict[str, str] | None, str | None]:
    chosen = values.get(stage.chosen_column, "").strip()
    rejected = values.get(stage.rejected_column, "").strip()
    if not chosen:
        return None, f"no {stage.chosen_column}"
    if not rejected:
        return None, f"no {stage.rejected_column}"
    if chosen == rejected:
        return None, f"{stage.chosen_column} equals {stage.rejected_column}"
    prompt = stage.prompt_template.format(**values)
    return {"prompt": prompt, "chosen": " " + chosen, "rejected": " " + rejected}, None


METHOD = TrainingMethod(
    name="preference",
    title="Preference tuning (DPO)",
    dataset="preference_pairs",
    row_fields=("prompt", "chosen", "rejected"),
    suite="llmops_preference_pairs",
    spec_fields=("prompt_template", "chosen_column", "rejected_column"),
    render=render,
    trainer="llmops.training.dpo:train_preference",
    evaluation="pairs",
    packing_refusal="(DPO) compares each chosen answer with its rejected one and does not pack pairs",
    uses_beta=True,
    description="Teaches which answer is better: chosen_column over rejected_column.",
)
