"""Continued pre-training: unlabelled text (the record's text columns joined into one document),
next-token loss on every token, packed into fixed-length blocks."""

from __future__ import annotations

from typing import Any

from llmops.training.methods.base import TrainingMethod

MIN_TEXT_CHARS = 20  # a shorter document teaches nothing about the domain


def render(stage: Any, values: dict[str, str]) -> tuple[dict[str, str] | None, str | None]:
    parts = [values.get(c, "").strip() for c in stage.text_columns]
    text = "\n\n".join(p for p in parts if p)
    if len(text) < MIN_TEXT_CHARS:
        return None, f"text shorter than {MIN_TEXT_CHARS} characters"
    return {"text": text}, None


METHOD = TrainingMethod(
    name="continued_pretraining",
    title="Continued pre-training",
    dataset="text_corpus",
    row_fields=("text",),
    suite="llmops_text_corpus",
    spec_fields=("text_columns",),
    render=render,
    trainer="llmops.training.cpt:train_continued_pretraining",
    evaluation="text",
    packing_refusal="always concatenates its texts and cuts them into hyperparameters.max_length blocks",
    chat_refusal="trains on raw text, which has no conversation to render",
    description="Teaches a domain's language: text_columns joined into one document per record.",
)
