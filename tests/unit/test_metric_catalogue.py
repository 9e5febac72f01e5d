"""The metric catalogue: one entry per metric, read by specs, the evaluation job, gates and reports.

A metric registered from this test module (no core file edited) must be accepted by the spec's
gates, computed by the evaluation job's scoring, flattened for the gates, bounded in the right
direction, and shown by the reports; one that an installed package declares through the
``llmops.metrics`` entry point group must be loaded the same way.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from llmops import metrics
from llmops.evaluation.gates import evaluate_gates, flat_metrics
from llmops.specs import SpecError, parse_spec

PROJECT = Path(__file__).resolve().parents[2]


def _length_ratio(prediction: str, reference: str) -> float:
    """Answer length against the reference's: a verbosity check a team might add."""
    return len(prediction.split()) / max(1, len(reference.split()))


VERBOSITY = metrics.Metric(
    "answer_length_ratio", "Answer length ratio", lower_is_better=True, scorer=_length_ratio
)


@pytest.fixture
def verbosity():
    metrics.register(VERBOSITY)
    try:
        yield VERBOSITY
    finally:
        metrics.unregister(VERBOSITY.name)


def _raw_spec() -> dict:
    return yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())


def test_a_registered_metric_goes_through_spec_job_gates_and_reports(verbosity) -> None:
    """Expect a gate on the new metric to validate, the job's scoring to compute it, the gates to
    bound it with lower-is-better, and the reports' lists to know it."""
    from llmops.evaluation.measure import score_generations

    raw = _raw_spec()
    raw["gates"].append({"metric": "answer_length_ratio", "max": 1.5})
    spec = parse_spec(raw)

    scored = score_generations(["a b c d", "a b"], ["a b", "a b"], [10.0, 12.0])
    assert scored["answer_length_ratio"] == pytest.approx((2.0 + 1.0) / 2)

    flat = flat_metrics({**scored, "golden": {"faq": {"answer_length_ratio": 3.0}}})
    assert flat["answer_length_ratio"] == pytest.approx(1.5)
    assert flat["golden.faq.answer_length_ratio"] == 3.0

    gate = next(g for g in spec.gates if g.metric == "answer_length_ratio")
    assert gate.lower_is_better
    decision = evaluate_gates([gate], {"answer_length_ratio": 2.0})
    assert not decision["passed"] and "above the maximum 1.5" in decision["gates"][0]["reason"]
    assert evaluate_gates([gate], {"answer_length_ratio": 1.2})["passed"]
    assert verbosity.display(1.23456) == "1.235"


def test_a_gate_on_an_unknown_or_unmeasured_metric_is_refused(verbosity) -> None:
    """Expect a misspelt metric to fail naming the catalogue, and a per-answer metric to be refused
    for continued pre-training (nothing is generated there)."""
    raw = _raw_spec()
    raw["gates"].append({"metric": "answer_lenght_ratio", "max": 1.5})
    with pytest.raises(SpecError, match="unknown metric 'answer_lenght_ratio'; known: .*answer_length_ratio"):
        parse_spec(raw)
    raw = yaml.safe_load((PROJECT / "include" / "pipelines" / "northwind_kb.yaml").read_text())
    raw["gates"].append({"metric": "answer_length_ratio", "max": 1.5})
    with pytest.raises(SpecError, match="not measured for method 'continued_pretraining'"):
        parse_spec(raw)


def test_without_the_registration_the_metric_is_unknown() -> None:
    """Expect the same gate to be refused when nothing registered the metric (the path is real)."""
    raw = _raw_spec()
    raw["gates"].append({"metric": "answer_length_ratio", "max": 1.5})
    with pytest.raises(SpecError, match="unknown metric 'answer_length_ratio'"):
        parse_spec(raw)


@pytest.mark.parametrize(
    ("metric", "problem"),
    [
        (metrics.Metric("Token-F1", "x"), "lowercase letters"),
        (metrics.Metric("token_f1", "another token F1"), "already in the catalogue"),
        (
            metrics.Metric("length", "x", methods=metrics.EVERY_METHOD, scorer=_length_ratio),
            "a scorer needs",
        ),
        (metrics.Metric("x", "x", methods="rlhf"), "methods must be"),
    ],
)
def test_bad_registrations_are_refused(metric: metrics.Metric, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        metrics.register(metric)


def test_the_catalogue_keeps_what_each_method_measures() -> None:
    """Expect continued pre-training to measure loss, perplexity, leakage and canary exposure only,
    and the preference-only metrics to stay out of SFT."""
    assert metrics.produced_by("continued_pretraining") == (
        "eval_loss",
        "eval_perplexity",
        "pii_leakage_rate",
        "canary_exposure",
    )
    assert "reward_margin" not in metrics.produced_by("sft")
    assert metrics.stage_metrics() == ("eval_loss", "eval_perplexity", "reward_accuracy", "reward_margin")


def test_an_installed_package_adds_metrics_through_the_entry_point(tmp_path: Path, monkeypatch) -> None:
    """Expect a distribution declaring `llmops.metrics` to have its metric registered by load_plugins."""
    package = tmp_path / "acme_metrics"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from llmops.metrics import Metric

            def politeness(prediction, reference):
                return float("please" in prediction.lower())

            POLITENESS = Metric("politeness", "Politeness", scorer=politeness)
            """
        )
    )
    dist = tmp_path / "acme_metrics-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-metrics\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[llmops.metrics]\npoliteness = acme_metrics:POLITENESS\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        assert "politeness" in metrics.load_plugins()
        assert metrics.get("politeness").scorer("Please wait", "") == 1.0
        assert "politeness" in metrics.produced_by("sft")
    finally:
        metrics.unregister("politeness")
        sys.modules.pop("acme_metrics", None)
