"""Data drift between the data a model was trained on and the data arriving now.

Measures, per text column: the distribution of lengths (characters and whitespace tokens) by
population stability index (PSI) and the two-sample Kolmogorov-Smirnov statistic; the vocabulary by
PSI over the reference's most frequent tokens (plus one bucket for everything else) and by the share
of current tokens never seen in the reference. For a category column: the share of current rows
whose category the reference never had. Every number is returned with its threshold and whether it
was crossed; nothing about individual rows leaves this module.

Why these: text-length and vocabulary shifts are cheap, model-free signals that inputs no longer
look like the training data (a new product line, a new channel, a changed form), which is when a
fine-tuned assistant degrades first.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

TOKEN = re.compile(r"[\w\[\]]+", re.UNICODE)
EPSILON = 1e-4
VOCABULARY_SIZE = 500


@dataclass(frozen=True)
class Thresholds:
    psi: float = 0.2
    ks: float = 0.2
    oov_rate: float = 0.1
    new_category_share: float = 0.05


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """Population stability index of two distributions given as bucket shares (same buckets)."""
    total = 0.0
    for expected, actual in zip(reference, current, strict=True):
        expected, actual = max(expected, EPSILON), max(actual, EPSILON)
        total += (actual - expected) * math.log(actual / expected)
    return total


def _quantile_edges(values: Sequence[float], buckets: int) -> list[float]:
    import numpy as np

    edges = np.unique(np.quantile(np.asarray(values, dtype=float), np.linspace(0, 1, buckets + 1)))
    return [float(e) for e in edges[1:-1]]  # inner edges; the outer buckets are open-ended


def _shares(values: Sequence[float], edges: list[float]) -> list[float]:
    import numpy as np

    counts = np.bincount(
        np.searchsorted(edges, np.asarray(values, dtype=float), side="right"), minlength=len(edges) + 1
    )
    return (counts / max(len(values), 1)).tolist()


def numeric_psi(reference: Sequence[float], current: Sequence[float], buckets: int = 10) -> float:
    """PSI over buckets cut at the reference's quantiles."""
    if not reference or not current:
        return 0.0
    edges = _quantile_edges(reference, buckets)
    return psi(_shares(reference, edges), _shares(current, edges))


def ks_statistic(reference: Sequence[float], current: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the two empirical CDFs)."""
    if not reference or not current:
        return 0.0
    from scipy.stats import ks_2samp

    return float(ks_2samp(reference, current).statistic)


def vocabulary_shift(reference: Iterable[list[str]], current: Iterable[list[str]]) -> dict[str, float]:
    ref_counts: Counter[str] = Counter()
    for toks in reference:
        ref_counts.update(toks)
    cur_counts: Counter[str] = Counter()
    for toks in current:
        cur_counts.update(toks)
    vocabulary = [t for t, _ in ref_counts.most_common(VOCABULARY_SIZE)]
    ref_total, cur_total = sum(ref_counts.values()) or 1, sum(cur_counts.values()) or 1
    in_vocab = set(vocabulary)
    ref_shares = [ref_counts[t] / ref_total for t in vocabulary]
    cur_shares = [cur_counts[t] / cur_total for t in vocabulary]
    ref_shares.append(sum(c for t, c in ref_counts.items() if t not in in_vocab) / ref_total)
    cur_shares.append(sum(c for t, c in cur_counts.items() if t not in in_vocab) / cur_total)
    unseen = sum(c for t, c in cur_counts.items() if t not in ref_counts)
    return {"vocabulary_psi": psi(ref_shares, cur_shares), "oov_rate": unseen / cur_total}


def text_drift(
    reference: Sequence[str | None], current: Sequence[str | None], thresholds: Thresholds
) -> dict[str, Any]:
    ref = [t for t in reference if isinstance(t, str)]
    cur = [t for t in current if isinstance(t, str)]
    ref_tokens, cur_tokens = [tokens(t) for t in ref], [tokens(t) for t in cur]
    ref_chars, cur_chars = [len(t) for t in ref], [len(t) for t in cur]
    ref_words, cur_words = [len(t) for t in ref_tokens], [len(t) for t in cur_tokens]
    vocab = vocabulary_shift(ref_tokens, cur_tokens)
    metrics = {
        "length_psi": numeric_psi(ref_chars, cur_chars),
        "length_ks": ks_statistic(ref_chars, cur_chars),
        "token_count_psi": numeric_psi(ref_words, cur_words),
        **vocab,
    }
    limits = {
        "length_psi": thresholds.psi,
        "length_ks": thresholds.ks,
        "token_count_psi": thresholds.psi,
        "vocabulary_psi": thresholds.psi,
        "oov_rate": thresholds.oov_rate,
    }
    return {
        "reference_rows": len(ref),
        "current_rows": len(cur),
        "mean_chars": {"reference": _mean(ref_chars), "current": _mean(cur_chars)},
        "metrics": {k: round(v, 4) for k, v in metrics.items()},
        "thresholds": limits,
        "breaches": sorted(k for k, v in metrics.items() if v > limits[k]),
    }


def category_drift(
    reference: Sequence[Any], current: Sequence[Any], thresholds: Thresholds
) -> dict[str, Any]:
    known = {c for c in reference if c is not None}
    present = [c for c in current if c is not None]
    new = [c for c in present if c not in known]
    share = len(new) / len(present) if present else 0.0
    ref_counts, cur_counts = Counter(c for c in reference if c is not None), Counter(present)
    categories = sorted(known | set(present), key=str)
    ref_total, cur_total = max(sum(ref_counts.values()), 1), max(len(present), 1)
    distribution_psi = psi(
        [ref_counts[c] / ref_total for c in categories], [cur_counts[c] / cur_total for c in categories]
    )
    return {
        "new_category_share": round(share, 4),
        "new_categories": len(set(new)),  # how many, not which: values may be free text
        "distribution_psi": round(distribution_psi, 4),
        "thresholds": {
            "new_category_share": thresholds.new_category_share,
            "distribution_psi": thresholds.psi,
        },
        "breaches": sorted(
            k
            for k, v, limit in (
                ("new_category_share", share, thresholds.new_category_share),
                ("distribution_psi", distribution_psi, thresholds.psi),
            )
            if v > limit
        ),
    }


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None
