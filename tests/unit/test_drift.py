"""Drift measures: zero on identical data, large on shifted data, each breach against its threshold."""

from __future__ import annotations

import random

import pytest

from llmops.monitoring.drift import Thresholds, category_drift, numeric_psi, psi, text_drift

WORDS = "refund order parcel late invoice password login app crash delivery address".split()


def _texts(seed: int, n: int, words=WORDS, length=(5, 15)) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(*length))) for _ in range(n)]


def test_psi_known_values():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * 0.5878 + (-0.4) * -1.6094, rel=1e-3)


def test_same_population_does_not_drift():
    """Expect two samples of the same process to stay under every threshold."""
    report = text_drift(_texts(1, 800), _texts(2, 800), Thresholds())
    assert report["breaches"] == []
    assert report["metrics"]["oov_rate"] == 0


def test_longer_texts_and_new_words_drift():
    """Expect longer texts with a new vocabulary to breach length, vocabulary and OOV thresholds."""
    new_words = [*WORDS[:3], "warranty", "subscription", "upgrade", "cancel", "renewal", "plan", "tier"]
    report = text_drift(_texts(1, 800), _texts(3, 800, new_words, (20, 40)), Thresholds())
    assert {"length_psi", "length_ks", "token_count_psi", "vocabulary_psi", "oov_rate"} <= set(
        report["breaches"]
    )
    assert report["mean_chars"]["current"] > 2 * report["mean_chars"]["reference"]


def test_new_categories_are_counted_not_listed():
    reference = ["billing", "shipping"] * 50
    current = ["billing"] * 40 + ["returns"] * 10
    report = category_drift(reference, current, Thresholds())
    assert report["new_category_share"] == 0.2 and report["new_categories"] == 1
    assert "returns" not in str(report)
    assert "new_category_share" in report["breaches"]


def test_numeric_psi_handles_empty_and_constant():
    assert numeric_psi([], [1, 2]) == 0
    assert numeric_psi([5] * 10, [5] * 10) == 0
