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
