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
    assert "2 of 2 gate(s) failed" in message
    assert "eval_perplexity: 5.12 > max 3 (over by 2.12)" in message
    assert "token_f1: 0.18 < min 0.6 (short by 0.42)" in message


def test_missing_or_nan_metric_fails():
    decision = evaluate_gates(GATES, {"eval_perplexity": float("nan")})
    assert [g["reason"] for g in decision["gates"]] == ["metric was not produced"] * 2
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
    assert "must be better by 0.02, is better by 0.01" in worse["gates"][0]["reason"]
    assert "is better by -0.05" in worse["gates"][1]["reason"]
    first = evaluate_gates(gates, {"token_f1": 0.5, "eval_loss": 1.0}, None)
    assert first["passed"] and first["gates"][0]["reason"] == "no champion to beat yet"


def test_unknown_gate_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        Gate(metric="bleu", min=0.1)
    assert Gate(metric="golden.faq.token_f1", min=0.5).metric == "golden.faq.token_f1"
