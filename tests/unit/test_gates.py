"""Gates: every number recorded, failures listed with by how much."""

from __future__ import annotations

import pytest

from llmops.evaluation.gates import GateFailed, evaluate_gates, raise_if_failed
from llmops.specs.schema import Gate

GATES = [Gate(metric="eval_perplexity", max=3.0), Gate(metric="token_f1", min=0.6)]


def test_all_pass():
    decision = evaluate_gates(GATES, {"eval_perplexity": 1.4, "token_f1": 0.9})
    assert decision["passed"]
    raise_if_failed(decision)


def test_failures_say_by_how_much():
    """Expect each failed gate in the message with the observed value, the bound and the gap."""
    decision = evaluate_gates(GATES, {"eval_perplexity": 5.12, "token_f1": 0.18})
    assert not decision["passed"]
    assert [g["observed"] for g in decision["gates"]] == [5.12, 0.18]
    with pytest.raises(GateFailed) as info:
        raise_if_failed(decision)
    message = str(info.value)
    assert "2 of 2 gates failed" in message
    assert "eval_perplexity 5.12 is 2.12 above the maximum 3" in message
    assert "token_f1 0.18 is 0.42 below the minimum 0.6" in message


def test_missing_or_nan_metric_fails():
    decision = evaluate_gates(GATES, {"eval_perplexity": float("nan")})
    assert [g["reason"] for g in decision["gates"]] == [
        "eval_perplexity was not produced",
        "token_f1 was not produced",
    ]
    assert not decision["passed"]


def test_champion_comparison_respects_direction_and_margin():
    """Expect 'beat the champion' to compare in the metric's direction, with the margin, and pass with no champion."""
    gates = [Gate(metric="token_f1", beat_champion_by=0.02), Gate(metric="eval_loss", beat_champion_by=0.0)]
    better = evaluate_gates(
        gates, {"token_f1": 0.90, "eval_loss": 0.30}, {"token_f1": 0.85, "eval_loss": 0.35}
    )
    assert better["passed"] and better["champion_compared"]
    worse = evaluate_gates(
        gates, {"token_f1": 0.86, "eval_loss": 0.40}, {"token_f1": 0.85, "eval_loss": 0.35}
    )
    assert [g["passed"] for g in worse["gates"]] == [False, False]
    assert (
        worse["gates"][0]["reason"]
        == "token_f1 0.86 is 0.01 above the champion's 0.85; must be at least 0.02 above"
    )
    assert worse["gates"][1]["reason"] == "eval_loss 0.4 is 0.05 above the champion's 0.35; must not be above"
    first = evaluate_gates(gates, {"token_f1": 0.5, "eval_loss": 1.0}, None)
    assert first["passed"] and first["gates"][0]["reason"] == "no champion to beat yet"


def test_a_tolerated_regression_reads_as_a_sentence():
    """A negative margin tolerates that much worse; the failure says how far and what was allowed."""
    gates = [Gate(metric="token_f1", beat_champion_by=-0.02)]
    decision = evaluate_gates(gates, {"token_f1": 0.178}, {"token_f1": 0.981})
    with pytest.raises(GateFailed) as info:
        raise_if_failed(decision)
    assert str(info.value) == (
        "1 of 1 gate failed: token_f1 0.178 is 0.803 below the champion's 0.981; must not be more than 0.02 below"
    )
    within = evaluate_gates(gates, {"token_f1": 0.97}, {"token_f1": 0.981})
    assert within["passed"]


def test_unknown_gate_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        Gate(metric="bleu", min=0.1)
    assert Gate(metric="golden.faq.token_f1", min=0.5).metric == "golden.faq.token_f1"


def test_base_model_comparison_needs_the_base_scored_and_respects_direction():
    """Expect 'beat the base model' to compare in the metric's direction and fail when the base was not scored."""
    gates = [Gate(metric="eval_loss", beat_base_by=2.0), Gate(metric="reward_accuracy", beat_base_by=0.1)]
    base = {"eval_loss": 11.1, "reward_accuracy": 0.5}
    good = evaluate_gates(gates, {"eval_loss": 5.1, "reward_accuracy": 0.9}, baseline=base)
    assert good["passed"] and good["base_compared"]
    assert good["gates"][0]["base"] == 11.1
    assert good["gates"][0]["reason"] == "eval_loss 5.1 is 6 below the base model's 11.1"
    weak = evaluate_gates(gates, {"eval_loss": 9.5, "reward_accuracy": 0.55}, baseline=base)
    assert [g["passed"] for g in weak["gates"]] == [False, False]
    assert (
        weak["gates"][0]["reason"]
        == "eval_loss 9.5 is 1.6 below the base model's 11.1; must be at least 2 below"
    )
    unscored = evaluate_gates(gates, {"eval_loss": 1.0, "reward_accuracy": 1.0}, baseline=None)
    assert not unscored["passed"]
    assert "base model was not scored" in unscored["gates"][0]["reason"]


def test_gates_on_metrics_the_final_method_does_not_measure_are_refused():
    import yaml

    from llmops.settings import get_settings
    from llmops.specs import SpecError, parse_spec

    raw = yaml.safe_load((get_settings().pipelines_dir / "northwind_kb.yaml").read_text())
    raw["gates"].append({"metric": "token_f1", "min": 0.5})
    with pytest.raises(
        SpecError, match="gates: metric 'token_f1' is not measured for method 'continued_pretraining'"
    ):
        parse_spec(raw)


def test_a_champion_that_could_not_be_scored_fails_closed():
    """Expect a beat_champion_by gate to fail when a champion exists but was not scored, with the
    reason, unless the spec says to pass; and a champion scored without the metric to fail too."""
    gates = [Gate(metric="token_f1", beat_champion_by=0.0), Gate(metric="token_f1", min=0.5)]
    closed = evaluate_gates(gates, {"token_f1": 0.9}, None, champion_unavailable="adapter gone")
    assert not closed["passed"] and closed["gates"][1]["passed"]
    assert closed["gates"][0]["reason"] == "the champion could not be scored (adapter gone)"
    assert closed["champion_unavailable"] == "adapter gone" and closed["on_champion_unavailable"] == "fail"
    allowed = evaluate_gates(
        gates, {"token_f1": 0.9}, None, champion_unavailable="adapter gone", on_champion_unavailable="pass"
    )
    assert allowed["passed"] and "on_champion_unavailable: pass" in allowed["gates"][0]["reason"]
    missing = evaluate_gates(gates, {"token_f1": 0.9}, {"eval_loss": 0.3})
    assert not missing["passed"] and "produced no token_f1" in missing["gates"][0]["reason"]
