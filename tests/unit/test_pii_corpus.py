"""Precision and recall of the PII detectors on the labelled corpus in tests/data/pii_corpus.jsonl.

Scoring, chosen for what redaction needs:
- a gold span is *recalled* when one predicted span of the same type covers it completely (a name
  found without its surname still leaks the surname, so it counts as a miss);
- a predicted span is *correct* when it overlaps a gold span of the same type (anything else would be
  over-redaction of text that is not PII of that type).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmops.privacy.pii import scan_text
from llmops.privacy.pii_types import names as pii_type_names

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS = DATA / "pii_corpus.jsonl"

MIN_RECALL = {
    "email": 0.99,
    "payment_card": 0.99,
    "iban": 0.99,
    "us_ssn": 0.99,
    "ip_address": 0.99,
    "phone": 0.95,
    "person_name": 0.85,
}
STRUCTURED = ("email", "phone", "payment_card", "iban", "us_ssn", "ip_address")
MIN_PRECISION = {t: 0.95 for t in STRUCTURED}


@dataclass
class Score:
    gold: int = 0
    recalled: int = 0
    predicted: int = 0
    correct: int = 0
    exact: int = 0

    @property
    def recall(self) -> float:
        return self.recalled / self.gold if self.gold else 1.0

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 1.0


def _load() -> list[dict]:
    with CORPUS.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def score_corpus(records: list[dict]) -> dict[str, Score]:
    scores = {t: Score() for t in pii_type_names()}
    for record in records:
        gold = [(s["start"], s["end"], s["type"]) for s in record["spans"]]
        predicted = scan_text(record["text"])
        for start, end, pii_type in gold:
            score = scores[pii_type]
            score.gold += 1
            if any(p.pii_type == pii_type and p.start <= start and p.end >= end for p in predicted):
                score.recalled += 1
            if any(p.pii_type == pii_type and p.start == start and p.end == end for p in predicted):
                score.exact += 1
        for p in predicted:
            score = scores[p.pii_type]
            score.predicted += 1
            if any(t == p.pii_type and s < p.end and p.start < e for s, e, t in gold):
                score.correct += 1
    return scores


def format_scores(scores: dict[str, Score]) -> str:
    lines = [f"{'type':<13} {'gold':>5} {'recall':>7} {'exact':>7} {'pred':>5} {'precision':>9}"]
    for t, s in scores.items():
        exact = s.exact / s.gold if s.gold else 1.0
        lines.append(
            f"{t:<13} {s.gold:>5} {s.recall:>7.3f} {exact:>7.3f} {s.predicted:>5} {s.precision:>9.3f}"
        )
    return "\n".join(lines)


@pytest.fixture(scope="module")
def scores() -> dict[str, Score]:
    return score_corpus(_load())


def test_corpus_is_reproducible_from_its_generator() -> None:
    spec = importlib.util.spec_from_file_location("make_pii_corpus", DATA / "make_pii_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert CORPUS.read_text(encoding="utf-8") == module.render(module.build()), (
        "tests/data/pii_corpus.jsonl is stale: run python tests/data/make_pii_corpus.py"
    )


def test_corpus_shape() -> None:
    records = _load()
    assert len(records) >= 300
    negatives = [r for r in records if not r["spans"]]
    assert len(negatives) >= 50
    for record in records:
        for span in record["spans"]:
            assert span["type"] in pii_type_names()
            assert 0 <= span["start"] < span["end"] <= len(record["text"])
            value = record["text"][span["start"] : span["end"]]
            assert value == value.strip()
    seen = {s["type"] for r in records for s in r["spans"]}
    assert seen == set(pii_type_names())


@pytest.mark.parametrize("pii_type", sorted(MIN_RECALL))
def test_recall(scores: dict[str, Score], pii_type: str) -> None:
    assert scores[pii_type].recall >= MIN_RECALL[pii_type], format_scores(scores)


@pytest.mark.parametrize("pii_type", sorted(MIN_PRECISION))
def test_precision_structured(scores: dict[str, Score], pii_type: str) -> None:
    assert scores[pii_type].precision >= MIN_PRECISION[pii_type], format_scores(scores)


def test_person_name_precision_regression_guard(scores: dict[str, Score]) -> None:
    # Names are heuristic (gazetteer + cues); this guards against regressions, it is no guarantee.
    assert scores["person_name"].precision >= 0.9, format_scores(scores)
