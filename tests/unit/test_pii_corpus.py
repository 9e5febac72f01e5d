"""Precision and recall of the PII detectors on the labelled corpus in tests/data/pii_corpus.jsonl
(the development part; the held-out part, pii_corpus_heldout.jsonl, is for bench/pii_quality.py).

Scoring rules are in tests/pii_scoring.py, shared with the benchmark: a gold span is recalled when
one predicted span of the same type covers it completely; a predicted span is correct when it
overlaps a gold span of the same type.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pii_scoring import Score, format_scores, load_corpus, score_spans

from llmops.privacy.pii import scan_text
from llmops.privacy.pii_types import names as pii_type_names

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS = DATA / "pii_corpus.jsonl"
HELDOUT = DATA / "pii_corpus_heldout.jsonl"
# Types the corpus labels; the last three may not be registered yet (their detectors are landing).
CORPUS_TYPES = {*pii_type_names(), "credential", "national_id", "date_of_birth"}

# Floors sit about 0.01-0.03 below what the development corpus measures (person names: 0.990 recall
# with the gazetteer; the misses are unknown first names with no cue, ambiguous first names such as
# "Will" or "Rose" alone, an unknown lowercase name; phone: bare 10-digit US numbers are left alone
# on purpose).
MIN_RECALL = {
    "email": 0.97,
    "payment_card": 0.99,
    "iban": 0.99,
    "us_ssn": 0.99,
    "ip_address": 0.99,
    "phone": 0.95,
    "person_name": 0.97,
    "credential": 0.98,
    "national_id": 0.98,
    "date_of_birth": 0.98,
}
STRUCTURED = ("email", "phone", "payment_card", "iban", "us_ssn", "ip_address")
MIN_PRECISION = {t: 0.95 for t in STRUCTURED} | {
    "credential": 0.98,
    "national_id": 0.98,
    "date_of_birth": 0.98,
}


def _load() -> list[dict]:
    return load_corpus(CORPUS)


def score_corpus(records: list[dict]) -> dict[str, Score]:
    return score_spans(records, (scan_text(r["text"]) for r in records), pii_type_names())


@pytest.fixture(scope="module")
def scores() -> dict[str, Score]:
    return score_corpus(_load())


@pytest.mark.parametrize("part", ["dev", "heldout"])
def test_corpus_is_reproducible_from_its_generator(part: str) -> None:
    spec = importlib.util.spec_from_file_location("make_pii_corpus", DATA / "make_pii_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = {"dev": CORPUS, "heldout": HELDOUT}[part]
    assert path.read_text(encoding="utf-8") == module.render(module.build(part=module.PARTS[part])), (
        f"tests/data/{path.name} is stale: run python tests/data/make_pii_corpus.py"
    )


def test_corpus_shape() -> None:
    records = _load()
    assert len(records) >= 300
    negatives = [r for r in records if not r["spans"]]
    assert len(negatives) >= 50
    for record in records:
        for span in record["spans"]:
            assert span["type"] in CORPUS_TYPES
            assert 0 <= span["start"] < span["end"] <= len(record["text"])
            value = record["text"][span["start"] : span["end"]]
            assert value == value.strip()
    seen = {s["type"] for r in records for s in r["spans"]}
    assert seen == CORPUS_TYPES


@pytest.mark.parametrize("pii_type", sorted(MIN_RECALL))
def test_recall(scores: dict[str, Score], pii_type: str) -> None:
    assert scores[pii_type].recall >= MIN_RECALL[pii_type], format_scores(scores)


@pytest.mark.parametrize("pii_type", sorted(MIN_PRECISION))
def test_precision_structured(scores: dict[str, Score], pii_type: str) -> None:
    assert scores[pii_type].precision >= MIN_PRECISION[pii_type], format_scores(scores)


def test_person_name_precision_regression_guard(scores: dict[str, Score]) -> None:
    # Names are heuristic (gazetteer + cues); this guards against regressions, it is no guarantee.
    assert scores["person_name"].precision >= 0.98, format_scores(scores)
