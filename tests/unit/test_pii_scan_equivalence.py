"""The optimised scan finds exactly what it found before, and what a plain per-row scan finds.

Two references:

* tests/data/pii_scan_reference.json.gz: texts (development corpus, PII-dense demo tickets,
  realistic support tickets) and the spans the scan found in them before its throughput work, per
  type set (every type, the six structured types, each type alone). Re-captured by
  tests/data/make_pii_scan_reference.py only when findings are meant to change.
* the per-row path: every requested type's detector run over each whole row, then the same overlap
  resolution. It holds whatever the detectors find, so it stays valid as detectors gain formats.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from llmops.privacy import pii, pii_types

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "pii_scan_reference.json.gz"
STRUCTURED = ("email", "iban", "payment_card", "us_ssn", "ip_address", "phone")


@cache
def _reference() -> dict:
    with gzip.open(REFERENCE, "rt", encoding="utf-8") as f:
        return json.load(f)


def _type_set(label: str) -> tuple[str, ...] | None:
    return None if label == "all" else STRUCTURED if label == "structured" else (label,)


def _per_row(text: str, types: tuple[str, ...] | None) -> list[list[int | str]]:
    wanted = pii._check_types(types)
    spans = [s for t in wanted for s in pii_types.get(t).detect(text)]
    return [list(s) for s in pii._resolve(spans)]


def _labels() -> list[str]:
    return ["all", "structured", *pii_types.names()]


@pytest.mark.parametrize("sample", ["corpus", "dense", "realistic"])
@pytest.mark.parametrize("label", _labels())
def test_scan_matches_captured_reference(sample: str, label: str) -> None:
    ref = _reference()
    texts = ref["texts"][sample]
    expected = ref["findings"][sample].get(label)
    if expected is None:
        pytest.skip(f"type {label} was not registered when the reference was captured")
    found = [[list(s) for s in spans] for spans in pii.scan_many(texts, _type_set(label))]
    diff = [i for i, (a, b) in enumerate(zip(found, expected, strict=True)) if a != b]
    assert not diff, f"{len(diff)} rows differ, first {diff[:5]}: {found[diff[0]]} != {expected[diff[0]]}"


@pytest.mark.parametrize("sample", ["corpus", "dense", "realistic"])
@pytest.mark.parametrize("label", ["all", "structured"])
def test_scan_matches_per_row_detectors(sample: str, label: str) -> None:
    texts = _reference()["texts"][sample]
    types = _type_set(label)
    found = [[list(s) for s in spans] for spans in pii.scan_many(texts, types)]
    expected = [_per_row(t, types) for t in texts]
    diff = [i for i, (a, b) in enumerate(zip(found, expected, strict=True)) if a != b]
    assert not diff, f"{len(diff)} rows differ, first {diff[:5]}: {found[diff[0]]} != {expected[diff[0]]}"


def test_redacted_text_matches_reference() -> None:
    """Same spans give the same replacement text; checked end to end on the realistic sample."""
    ref = _reference()
    texts = ref["texts"]["realistic"]
    actions = dict.fromkeys(pii_types.names(), "mask")
    counts: Counter[str] = Counter()
    got = [pii.redact_text(t, actions)[0] for t in texts]
    want = [
        pii._apply_spans(t, [pii_types.Span(*s) for s in spans], actions, None, counts)
        for t, spans in zip(texts, ref["findings"]["realistic"]["all"], strict=True)
    ]
    assert got == want


def test_rows_in_any_batch_layout_give_the_same_findings() -> None:
    """Splitting a column into batches differently (tiny batches, one row each) changes nothing."""
    texts = _reference()["texts"]["dense"][:300]
    whole = pii.scan_many(texts)
    assert [pii.scan_many(texts[i : i + 7]) for i in range(0, len(texts), 7)] == [
        whole[i : i + 7] for i in range(0, len(texts), 7)
    ]
