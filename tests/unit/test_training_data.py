"""Training rows per method: the data contract, the privacy policy on every trained text, the GX suite."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from llmops.orchestration.finetune.data import (
    TrainingDataError,
    build_rows,
    check_suite,
    render_row,
    split_of,
)
from llmops.quality.expectations import BlockingExpectationFailed
from llmops.settings import get_settings
from llmops.specs import parse_spec
from llmops.specs.schema import StageSpec


def _spec(name: str = "support_replies", **training):
    raw = yaml.safe_load((get_settings().pipelines_dir / f"{name}.yaml").read_text())
    raw["training"].update(training)
    return parse_spec(raw)


REVIEW = {
    "review_id": "REV-1",
    "category": "billing",
    "subject": "Charged twice",
    "body": "I was charged twice, write to jane.doe@example.com",
    "chosen_reply": "Sorry about that: the duplicate charge is refunded within 5 business days.",
    "rejected_reply": "Not our problem.",
}


def test_each_method_renders_its_own_row_shape():
    spec = _spec()
    pair, problem = render_row(spec.training, REVIEW)
    assert problem is None and set(pair) == {"prompt", "chosen", "rejected"}
    assert pair["prompt"].startswith("Ticket (billing): Charged twice")
    sft = StageSpec(name="s", method="sft", prompt_template="{subject}", completion_column="chosen_reply")
    row, _ = render_row(sft, REVIEW)
    assert row == {"prompt": "Charged twice", "completion": " " + REVIEW["chosen_reply"]}
    cpt = StageSpec(name="c", method="continued_pretraining", text_columns=["subject", "body"])
    row, _ = render_row(cpt, REVIEW)
    assert row == {"text": "Charged twice\n\n" + REVIEW["body"]}


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"rejected_reply": None}, "no rejected_reply"),
        ({"chosen_reply": "  "}, "no chosen_reply"),
        ({"rejected_reply": REVIEW["chosen_reply"]}, "chosen_reply equals rejected_reply"),
    ],
)
def test_preference_contract_names_the_broken_rule(change, rule):
    row, problem = render_row(_spec().training, {**REVIEW, **change})
    assert row is None and problem == rule


def test_short_text_breaks_the_corpus_contract():
    cpt = StageSpec(name="c", method="continued_pretraining", text_columns=["subject"])
    assert render_row(cpt, {"subject": "Hi"}) == (None, "text shorter than 20 characters")


def test_privacy_policy_masks_pii_in_every_trained_text_and_counts_it():
    spec = _spec()
    df = pd.DataFrame([REVIEW, {**REVIEW, "review_id": "REV-2", "rejected_reply": None}])
    rows, skipped, replaced = build_rows(spec, spec.training, df, seed=42)
    assert skipped == {"no rejected_reply": 1}
    assert len(rows) == 1 and "jane.doe@example.com" not in rows[0]["prompt"]
    assert "[EMAIL]" in rows[0]["prompt"] and replaced == {"email": 1}
    assert rows[0]["split"] == split_of(
        "REV-1", spec.training.validation_fraction, spec.training.test_fraction, 42
    )


def test_without_a_free_text_policy_pii_in_training_text_stops_the_run():
    raw = yaml.safe_load((get_settings().pipelines_dir / "support_replies.yaml").read_text())
    raw["privacy"].pop("free_text")
    spec = parse_spec(raw)
    with pytest.raises(TrainingDataError, match="holds personal data \\(email\\)"):
        build_rows(spec, spec.training, pd.DataFrame([REVIEW]), seed=1)


def test_method_suite_leaves_out_failing_rows_and_blocks_duplicate_keys():
    rows = [
        {"key": "a", "text": "x" * 40, "split": "train"},
        {"key": "b", "text": "short", "split": "validation"},
    ]
    kept, summary = check_suite("continued_pretraining", rows)
    assert [r["key"] for r in kept] == ["a"] and summary["quarantined_rows"] == 1
    assert summary["suite"] == "llmops_text_corpus" and summary["success"]
    with pytest.raises(BlockingExpectationFailed, match="llmops_text_corpus"):
        check_suite("continued_pretraining", [rows[0], dict(rows[0])])
