"""Text, label and term metrics against hand-computed values."""

from __future__ import annotations

import pytest

from llmops.evaluation.metrics import (
    contains_term,
    dpo_reward_margins,
    exact_match,
    gold_label,
    label_scores,
    normalize,
    percentile,
    predicted_label,
    preference_win_rate,
    reward_scores,
    rouge_l,
    scoring_windows,
    term_rate,
    term_words,
    token_f1,
)


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


# --- labels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        ("Billing", "billing"),
        ("\n  Billing \nbecause the invoice is wrong", "billing"),
        ("  \n\t\n Refund\n", "refund"),
        ("Login issue", "login issue"),
        ("", ""),
        (" \n ", ""),
    ],
)
def test_predicted_label_is_the_first_non_empty_line(generation: str, expected: str) -> None:
    assert predicted_label(generation) == expected


def test_gold_label_is_stripped_and_lower_cased() -> None:
    assert gold_label(" Billing\n") == "billing"


def test_label_scores_macro_average_over_gold_labels() -> None:
    gold = ["billing", "billing", "billing", "refund", "login"]
    predicted = ["billing", "billing", "refund", "refund", "spam"]
    scores = label_scores(predicted, gold)
    # billing: P = 2/2, R = 2/3, F1 = 0.8
    # login (never predicted): P = 0, R = 0, F1 = 0
    # refund: P = 1/2, R = 1/1, F1 = 2/3
    # spam (predicted, no gold label): not averaged over, but it cost login's row its recall
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["macro_precision"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert scores["macro_recall"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert scores["macro_f1"] == pytest.approx((0.8 + 0 + 2 / 3) / 3)


def test_label_scores_a_wrong_label_outside_gold_lowers_only_recall() -> None:
    scores = label_scores(["a", "b", "zzz"], ["a", "b", "b"])
    # a: P 1, R 1; b: P 1 (its one prediction is right), R 1/2
    assert scores == pytest.approx(
        {"accuracy": 2 / 3, "macro_precision": 1.0, "macro_recall": 0.75, "macro_f1": (1 + 2 / 3) / 2}
    )


def test_label_scores_edge_cases() -> None:
    perfect = label_scores(["x", "y"], ["x", "y"])
    assert perfect == {"accuracy": 1.0, "macro_precision": 1.0, "macro_recall": 1.0, "macro_f1": 1.0}
    nothing = label_scores(["q", "q"], ["x", "y"])
    assert nothing == {"accuracy": 0.0, "macro_precision": 0.0, "macro_recall": 0.0, "macro_f1": 0.0}
    with pytest.raises(ValueError):
        label_scores([], [])
    with pytest.raises(ValueError):
        label_scores(["x"], ["x", "y"])


# --- listed terms -------------------------------------------------------------------------------


def test_term_words_drop_apostrophes_and_split_on_other_punctuation() -> None:
    assert term_words("I can't HELP—sorry!") == ["i", "cant", "help", "sorry"]
    assert term_words("I can\u2019t") == ["i", "cant"]
    assert term_words("self-harm") == ["self", "harm"]
    assert term_words("?!") == []


def test_term_rate_matches_whole_words_case_insensitively() -> None:
    texts = ["You IDIOT!", "an idiotic idea", "Idiot.", "fine answer"]
    assert term_rate(texts, ["idiot"]) == pytest.approx(2 / 4)
    assert term_rate(["the class assassin"], ["ass"]) == 0.0


def test_term_rate_matches_phrases_as_consecutive_words() -> None:
    refusals = ["i can't help", "as an ai"]
    texts = [
        "I can\u2019t help with that.",
        "As an AI, I have no opinion.",
        "I can help, as an aid.",
        "I can't, but help is near.",
    ]
    assert [contains_term(t, [term_words(r) for r in refusals]) for t in texts] == [True, True, False, False]
    assert term_rate(texts, refusals) == pytest.approx(0.5)


def test_term_rate_any_term_counts_once_per_text() -> None:
    assert term_rate(["damn it, damn", "self harm", "ok"], ["damn", "self-harm"]) == pytest.approx(2 / 3)
    assert term_rate(["anything"], []) == 0.0
    with pytest.raises(ValueError):
        term_rate([], ["x"])


# --- preference pairs and scoring windows ---------------------------------------------------------


def test_win_rate_compares_mean_per_token_log_likelihoods() -> None:
    # Pair 1: chosen -1.0/token beats rejected -2.0/token, though its sum is lower (-10 < -4).
    # Pair 2: chosen -3.0/token loses to -1.0/token. Pair 3: a tie counts half.
    chosen = [(-10.0, 10), (-6.0, 2), (-4.0, 4)]
    rejected = [(-4.0, 2), (-3.0, 3), (-2.0, 2)]
    assert preference_win_rate(chosen, rejected) == pytest.approx(1.5 / 3)
    # Swapping chosen and rejected gives exactly 1 - win rate (ties stay half).
    assert preference_win_rate(rejected, chosen) == pytest.approx(1 - 1.5 / 3)


@pytest.mark.parametrize(
    ("chosen", "rejected"),
    [([], []), ([(-1.0, 1)], []), ([(-1.0, 0)], [(-1.0, 1)])],
)
def test_win_rate_refuses_unusable_pairs(
    chosen: list[tuple[float, int]], rejected: list[tuple[float, int]]
) -> None:
    with pytest.raises(ValueError):
        preference_win_rate(chosen, rejected)


def test_dpo_reward_margins_by_hand() -> None:
    # beta * ((pc - rc) - (pr - rr)): 0.1 * ((-5 + 8) - (-9 + 7)) = 0.5; 0.1 * ((-8 + 8) - (-7 + 7)) = 0
    margins = dpo_reward_margins([-5.0, -8.0], [-9.0, -7.0], [-8.0, -8.0], [-7.0, -7.0], beta=0.1)
    assert margins == pytest.approx([0.5, 0.0])
    # The policy equal to the reference: every margin is 0, whatever the log-probs.
    assert dpo_reward_margins([-3.0], [-1.0], [-3.0], [-1.0], beta=2.0) == [0.0]
    # Swapping chosen and rejected flips the sign; beta scales linearly.
    assert dpo_reward_margins([-9.0], [-5.0], [-7.0], [-8.0], beta=0.2) == pytest.approx([-1.0])
    with pytest.raises(ValueError):
        dpo_reward_margins([-1.0], [], [-1.0], [-1.0], beta=0.1)


def test_reward_scores_count_only_positive_margins_as_accurate() -> None:
    assert reward_scores([0.5, 0.0, -0.1, 0.2]) == pytest.approx(
        {"reward_accuracy": 0.5, "reward_margin": 0.15}
    )
    with pytest.raises(ValueError):
        reward_scores([])


@pytest.mark.parametrize(
    ("length", "max_length", "expected"),
    [
        (0, 4, []),
        (1, 4, []),  # one token: nothing to predict
        (2, 4, [(0, 2)]),
        (4, 4, [(0, 4)]),
        (5, 4, [(0, 4), (3, 5)]),
        (7, 4, [(0, 4), (3, 7)]),
        (8, 4, [(0, 4), (3, 7), (6, 8)]),
        (5, 2, [(0, 2), (1, 3), (2, 4), (3, 5)]),
    ],
)
def test_scoring_windows_score_every_token_after_the_first_once(
    length: int, max_length: int, expected: list[tuple[int, int]]
) -> None:
    windows = scoring_windows(length, max_length)
    assert windows == expected
    assert all(end - start <= max_length for start, end in windows)
    # A window's first token is context only; the targets are the rest, each token once.
    targets = [i for start, end in windows for i in range(start + 1, end)]
    assert targets == list(range(1, length))


def test_scoring_windows_need_room_for_a_target() -> None:
    with pytest.raises(ValueError):
        scoring_windows(10, 1)
