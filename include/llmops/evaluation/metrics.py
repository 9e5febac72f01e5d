"""Text-overlap metrics for generated completions, in pure Python.

Dependency-free so that gates can be recomputed anywhere (CI, the Airflow worker) and the
numbers are not at the mercy of a metrics library's changing defaults. Normalisation is the
SQuAD convention minus article stripping: lower-case, punctuation removed, whitespace
collapsed; tokens are whitespace-separated words.
"""

from __future__ import annotations

import string
import unicodedata
from collections import Counter

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
