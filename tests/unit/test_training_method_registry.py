"""The training method registry: a method defined in this test module (no core file edited) is
accepted by the spec and the job config, renders its own training rows with its own row contract,
gets the metrics its evaluation style produces, and its trainer is what the job runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops import metrics
from llmops.specs import SpecError, parse_spec
from llmops.training import runner
from llmops.training.config import parse_job_config
from llmops.training.methods import TrainingMethod, get_method, register_method, unregister_method

PROJECT = Path(__file__).resolve().parents[2]


def render_summary(stage: Any, values: dict[str, str]) -> tuple[dict[str, str] | None, str | None]:
    """A prompt and a short answer: answers over 30 words break this method's row contract."""
    answer = values.get(stage.completion_column, "").strip()
    if len(answer.split()) > 30:
        return None, "answer longer than 30 words"
    return {"prompt": stage.prompt_template.format(**values), "completion": " " + answer}, None


def train_summary(config: Any) -> dict[str, Any]:
    return {"status": "succeeded", "method": config.method}


SUMMARY = TrainingMethod(
    name="short_answers",
    title="Short answers",
    dataset="short_answers",
    row_fields=("prompt", "completion"),
    suite="llmops_sft_dataset",
    spec_fields=("prompt_template", "completion_column"),
    render=render_summary,
    trainer=f"{__name__}:train_summary",
    evaluation="completion",
)


@pytest.fixture
def short_answers():
    register_method(SUMMARY)
    try:
        yield SUMMARY
    finally:
        unregister_method(SUMMARY.name)


def _spec(method: str) -> dict[str, Any]:
    raw = yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())
    raw["training"]["method"] = method
    return raw


def test_a_registered_method_is_used_by_spec_rows_job_and_metrics(short_answers) -> None:
    """Expect the spec to accept it (dataset named by the method), its rows rendered by its own
    renderer (contract included), generation metrics measured, and its trainer run by the job."""
    from llmops.orchestration.finetune.data import render_row

    spec = parse_spec(_spec("short_answers"))
    assert spec.training.dataset_name == "short_answers"
    row, problem = render_row(
        spec.training,
        {"category": "shipping", "subject": "Late parcel", "body": "Where is it?", "resolution": "Tomorrow."},
    )
    assert problem is None and row is not None and row["completion"] == " Tomorrow."
    row, problem = render_row(
        spec.training, {"category": "c", "subject": "s", "body": "b", "resolution": "word " * 40}
    )
    assert row is None and problem == "answer longer than 30 words"
    assert "token_f1" in metrics.produced_by("short_answers")
    config = parse_job_config(
        {
            "method": "short_answers",
            "base_model_path": "/m",
            "train_file": "/t.jsonl",
            "eval_file": "/e.jsonl",
            "output_dir": "/o",
        }
    )
    assert runner.run_job(config) == {"status": "succeeded", "method": "short_answers"}


def test_without_the_registration_the_method_is_refused() -> None:
    """Expect the spec and the job config to refuse the method when nothing registered it."""
    with pytest.raises(SpecError, match="training.method: Input should be 'sft', 'continued_pretraining' or"):
        parse_spec(_spec("short_answers"))
    with pytest.raises(ValueError, match="unknown training method 'short_answers'"):
        get_method("short_answers")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"name": "Short"}, "lowercase"),
        ({"dataset": "prompt_completion"}, "dataset 'prompt_completion' is sft's"),
        ({"spec_fields": ("prompt_template", "label_column")}, "unknown spec field"),
        ({"trainer": "train_summary"}, "module:function"),
    ],
)
def test_bad_registrations_are_refused(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        register_method(replace(SUMMARY, **change))
