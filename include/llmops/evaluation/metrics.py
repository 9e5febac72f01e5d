"""Text-overlap metrics for generated completions, in pure Python.

Dependency-free so that gates can be recomputed anywhere (CI, the Airflow worker) and the
numbers are not at the mercy of a metrics library's changing defaults. Normalisation is the
SQuAD convention minus article stripping: lower-case, punctuation removed, whitespace
collapsed; tokens are whitespace-separated words.

Also here: classification scores for label-style completions (accuracy, macro precision/recall/F1),
the share of generations that contain a listed term (toxicity and refusal rates), the arithmetic
of preference metrics (win rate, DPO's implicit reward) on log-likelihoods the runner measured,
and how a long text is cut into windows the model can score.
"""

from __future__ import annotations

import string
import unicodedata
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

_ASCII_PUNCT = frozenset(string.punctuation)


def normalize(text: str) -> str:
    """Lower-case, drop punctuation (ASCII and Unicode P* categories), collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).lower()
    kept = (c for c in text if c not in _ASCII_PUNCT and not unicodedata.category(c).startswith("P"))
    return " ".join("".join(kept).split())


def tokens(text: str) -> list[str]:
    """Normalised whitespace tokens."""
    return normalize(text).split()


def exact_match(pred: str, ref: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return 1.0 if normalize(pred) == normalize(ref) else 0.0


def token_f1(pred: str, ref: str) -> float:
    """Harmonic mean of token precision and recall (multiset overlap).

    Two empty texts agree (1.0); one empty text scores 0.0.
    """
    p, r = tokens(pred), tokens(ref)
    if not p or not r:
        return 1.0 if p == r else 0.0
    overlap = sum((Counter(p) & Counter(r)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(p), overlap / len(r)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence length, O(len(a)*len(b)) time, O(len(b)) memory."""
    if len(b) > len(a):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure (beta=1) from the token LCS; same empty-text rules as token_f1."""
    p, r = tokens(pred), tokens(ref)
    if not p or not r:
        return 1.0 if p == r else 0.0
    lcs = _lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    if not values:
        raise ValueError("percentile of an empty list")
    if not 0 <= q <= 100:
        raise ValueError("q must be within [0, 100]")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- labels -------------------------------------------------------------------------------------


def predicted_label(generation: str) -> str:
    """The label a generation names: its first non-empty line, stripped and lower-cased."""
    for line in generation.splitlines():
        if line.strip():
            return line.strip().lower()
    return ""


def gold_label(completion: str) -> str:
    """The reference label: the completion stripped and lower-cased."""
    return completion.strip().lower()


def label_scores(predicted: Sequence[str], gold: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 over the labels that occur in ``gold``.

    Labels are compared as given (see :func:`predicted_label`). Each gold label weighs the same
    however rare it is; a gold label never predicted has precision 0, and a predicted label that
    is no gold label is not averaged over but still costs the recall of the row's true label.
    Macro F1 is the mean of the per-label F1 scores (not the F1 of the macro means).
    """
    if len(predicted) != len(gold):
        raise ValueError("predicted and gold labels differ in number")
    if not gold:
        raise ValueError("label scores of no rows")
    hits = Counter(p for p, g in zip(predicted, gold, strict=True) if p == g)
    predicted_count = Counter(predicted)
    gold_count = Counter(gold)
    precisions, recalls, f1s = [], [], []
    for label in sorted(gold_count):
        precision = hits[label] / predicted_count[label] if predicted_count[label] else 0.0
        recall = hits[label] / gold_count[label]
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "accuracy": sum(hits.values()) / len(gold),
        "macro_precision": sum(precisions) / len(precisions),
        "macro_recall": sum(recalls) / len(recalls),
        "macro_f1": sum(f1s) / len(f1s),
    }


# --- listed terms (toxicity, refusals) ------------------------------------------------------------

_APOSTROPHES = frozenset("'\u2019\u02bc")


def term_words(text: str) -> list[str]:
    """Words for term matching: NFKC, casefold, apostrophes dropped, other punctuation a separator.

    So "can't" and "can\u2019t" are one word, and "self-harm" matches "self harm".
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    out = []
    for c in text:
        if c in _APOSTROPHES:
            continue
        out.append(" " if c in _ASCII_PUNCT or unicodedata.category(c).startswith("P") else c)
    return "".join(out).split()


def contains_term(text: str, terms: Iterable[Sequence[str]]) -> bool:
    """True when one of ``terms`` (each as :func:`term_words`) occurs as whole consecutive words."""
    words = term_words(text)
    for term in terms:
        n = len(term)
        if n and any(words[i : i + n] == list(term) for i in range(len(words) - n + 1)):
            return True
    return False


def term_rate(texts: Sequence[str], terms: Iterable[str]) -> float:
    """Share of ``texts`` containing any of ``terms`` (case-insensitive, whole words or phrases)."""
    if not texts:
        raise ValueError("term rate of no texts")
    split = [term_words(t) for t in terms]
    return sum(contains_term(text, split) for text in texts) / len(texts)


# --- preference pairs ------------------------------------------------------------------------------


def preference_win_rate(chosen: Sequence[tuple[float, int]], rejected: Sequence[tuple[float, int]]) -> float:
    """Share of pairs whose chosen answer has the higher mean per-token log-likelihood.

    Each item is ``(summed log-prob, token count)`` of one answer. The mean, not the sum, so a
    short answer does not win by being short; no reference model, so any two models compare.
    Ties count half: swapping chosen and rejected then gives exactly ``1 - win rate``.
    """
    if len(chosen) != len(rejected):
        raise ValueError("chosen and rejected differ in number")
    if not chosen:
        raise ValueError("win rate of no pairs")
    wins = 0.0
    for (lp_c, n_c), (lp_r, n_r) in zip(chosen, rejected, strict=True):
        if n_c <= 0 or n_r <= 0:
            raise ValueError("an answer with no tokens has no mean log-likelihood")
        mean_c, mean_r = lp_c / n_c, lp_r / n_r
        wins += 1.0 if mean_c > mean_r else 0.5 if mean_c == mean_r else 0.0
    return wins / len(chosen)


def dpo_reward_margins(
    policy_chosen: Sequence[float],
    policy_rejected: Sequence[float],
    reference_chosen: Sequence[float],
    reference_rejected: Sequence[float],
    beta: float,
) -> list[float]:
    """DPO's implicit reward margin per pair: ``beta * ((pi_c - ref_c) - (pi_r - ref_r))``.

    Arguments are summed completion log-probs (as DPO's loss uses them). Positive: the model moved
    towards the chosen answer, relative to the rejected one, away from the reference.
    """
    columns = (policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    if len({len(c) for c in columns}) != 1:
        raise ValueError("policy and reference log-probs differ in number")
    return [
        beta * ((pc - rc) - (pr - rr))
        for pc, pr, rc, rr in zip(
            policy_chosen, policy_rejected, reference_chosen, reference_rejected, strict=True
        )
    ]


def reward_scores(margins: Sequence[float]) -> dict[str, float]:
    """``reward_accuracy`` (share of margins > 0, as TRL counts it) and ``reward_margin`` (mean)."""
    if not margins:
        raise ValueError("reward scores of no pairs")
    return {
        "reward_accuracy": sum(1 for m in margins if m > 0) / len(margins),
        "reward_margin": sum(margins) / len(margins),
    }


# --- long texts --------------------------------------------------------------------------------------


def scoring_windows(length: int, max_length: int) -> list[tuple[int, int]]:
    """``(start, end)`` slices that score every token of a ``length``-token text after the first.

    A causal model predicts each token from the ones before it within a window of at most
    ``max_length`` tokens; consecutive windows overlap by one token (the next window's first,
    unscored context token is the previous one's last target), so every token is a target exactly
    once. A text of fewer than two tokens has nothing to predict.
    """
    if max_length < 2:
        raise ValueError("a scoring window needs at least two tokens")
    stride = max_length - 1
    return [(start, min(start + max_length, length)) for start in range(0, max(length - 1, 0), stride)]
