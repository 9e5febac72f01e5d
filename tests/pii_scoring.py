"""Scoring PII detections against the labelled corpora in tests/data (one scorer for the unit tests
and bench/pii_quality.py, so a threshold and a reported figure always mean the same thing).

Rules, chosen for what redaction needs:
- a gold span is *recalled* when one predicted span of the same type covers it completely (a name
  found without its surname still leaks the surname, so it counts as a miss); *exact* when one
  predicted span of the same type has exactly its bounds;
- a predicted span is *correct* when it overlaps a gold span of the same type (anything else would be
  over-redaction of text that is not PII of that type).

A predicted span is any ``(start, end, pii_type)`` sequence, so llmops' ``Span`` and spans from
another engine (mapped onto llmops' type names) are scored alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

SpanLike = tuple[int, int, str]


@dataclass
class Score:
    gold: int = 0
    recalled: int = 0
    exact: int = 0
    predicted: int = 0
    correct: int = 0

    @property
    def recall(self) -> float:
        return self.recalled / self.gold if self.gold else 1.0

    @property
    def exact_rate(self) -> float:
        return self.exact / self.gold if self.gold else 1.0

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 1.0

    def add(self, other: Score) -> None:
        self.gold += other.gold
        self.recalled += other.recalled
        self.exact += other.exact
        self.predicted += other.predicted
        self.correct += other.correct


def load_corpus(path: Path) -> list[dict[str, Any]]:
    """The records of a corpus file: ``{"text": ..., "spans": [{"start", "end", "type"}]}`` per line."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def score_spans(
    records: Sequence[dict[str, Any]],
    predictions: Iterable[Sequence[Sequence[Any]]],
    types: Iterable[str] = (),
) -> dict[str, Score]:
    """Scores per type for ``predictions`` (one list of spans per record, in record order).

    The result has an entry for each of ``types`` (in that order), then for any other type that is
    in the gold spans or the predictions.
    """
    scores = {t: Score() for t in types}
    for record, predicted in zip(records, predictions, strict=True):
        gold = [(s["start"], s["end"], s["type"]) for s in record["spans"]]
        found = [(int(p[0]), int(p[1]), str(p[2])) for p in predicted]
        for start, end, pii_type in gold:
            score = scores.setdefault(pii_type, Score())
            score.gold += 1
            same = [(s, e) for s, e, t in found if t == pii_type]
            score.recalled += any(s <= start and e >= end for s, e in same)
            score.exact += (start, end) in same
        for start, end, pii_type in found:
            score = scores.setdefault(pii_type, Score())
            score.predicted += 1
            score.correct += any(t == pii_type and s < end and start < e for s, e, t in gold)
    return scores


def overall(scores: dict[str, Score], types: Iterable[str] | None = None) -> Score:
    """The sum over ``types`` (default: all), so recall and precision are micro-averaged."""
    total = Score()
    for t in scores if types is None else types:
        if t in scores:
            total.add(scores[t])
    return total


def format_scores(scores: dict[str, Score]) -> str:
    lines = [f"{'type':<13} {'gold':>5} {'recall':>7} {'exact':>7} {'pred':>5} {'precision':>9}"]
    for t, s in scores.items():
        lines.append(
            f"{t:<13} {s.gold:>5} {s.recall:>7.3f} {s.exact_rate:>7.3f} {s.predicted:>5} {s.precision:>9.3f}"
        )
    return "\n".join(lines)
