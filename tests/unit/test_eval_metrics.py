"""Text metrics against hand-computed values."""

from __future__ import annotations

import pytest

from llmops.evaluation.metrics import exact_match, normalize, percentile, rouge_l, token_f1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  The   cat\tsat.\n", "the cat sat"),
        ("don't stop", "dont stop"),
        ("«Ça va?» — oui…", "ça va oui"),
        ("Contact [EMAIL] now", "contact email now"),
        ("", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_exact_match_ignores_case_punctuation_and_whitespace() -> None:
    assert exact_match("Hello, World!", "hello   world") == 1.0
    assert exact_match("hello", "hello there") == 0.0
    assert exact_match("", "   ") == 1.0


def test_token_f1_partial_overlap() -> None:
    # overlap {the, cat, sat} = 3; precision 3/3, recall 3/6 -> 2 * 1 * 0.5 / 1.5
    assert token_f1("The cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)


def test_token_f1_counts_repeated_tokens_once_per_occurrence() -> None:
    # overlap min(3, 1) = 1; precision 1/3, recall 1/2 -> 2 * (1/6) / (5/6) = 0.4
    assert token_f1("the the the", "the cat") == pytest.approx(0.4)


def test_token_f1_edge_cases() -> None:
    assert token_f1("completely different", "nothing shared") == 0.0
    assert token_f1("same words here", "Same words, here.") == 1.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "something") == 0.0
    assert token_f1("something", "") == 0.0


def test_rouge_l_uses_longest_common_subsequence() -> None:
    # LCS("the cat sat on the mat", "the cat on the mat") = 5; P = 5/6, R = 5/5 -> F = 10/11
    assert rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(10 / 11)


def test_rouge_l_is_order_sensitive_unlike_token_f1() -> None:
    # LCS("a b c d", "d c b a") = 1; P = R = 1/4 -> F = 1/4, while the bag of words is identical
    assert rouge_l("a b c d", "d c b a") == pytest.approx(0.25)
    assert token_f1("a b c d", "d c b a") == 1.0


def test_rouge_l_edge_cases() -> None:
    assert rouge_l("", "") == 1.0
    assert rouge_l("x", "") == 0.0
    assert rouge_l("x y", "z") == 0.0
    assert rouge_l("Identical text!", "identical text") == 1.0


def test_percentile_interpolates_linearly() -> None:
    # position (4 - 1) * 0.95 = 2.85 -> 3 + 0.85 * (4 - 3)
    assert percentile([4.0, 1.0, 3.0, 2.0], 95) == pytest.approx(3.85)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
