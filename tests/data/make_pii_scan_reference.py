"""Capture the reference findings of the PII scan: texts and the spans found in them, per type set.

Why: the scan loop (llmops.privacy.pii / detectors / cues) is optimised for throughput, and an
optimisation must never change what is found. tests/unit/test_pii_scan_equivalence.py compares the
scan with this file. The texts are stored in the file (not regenerated), so edits to the corpus or
ticket generators do not move the reference.

Texts: the development corpus (tests/data/pii_corpus.jsonl), PII-dense demo tickets and realistic
support tickets from bench/pii_scan.py. Type sets: every type, the six structured types, and each
type alone (restricting types also restricts overlap resolution).

Re-capture only when a detector's findings are meant to change (a new format or cue), from the
commit that changes them, and say so in that commit:

    python tests/data/make_pii_scan_reference.py
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("pii_scan_reference.json.gz")
STRUCTURED = ("email", "iban", "payment_card", "us_ssn", "ip_address", "phone")
SAMPLE_MB = 0.12


def texts() -> dict[str, list[str]]:
    sys.path.insert(0, str(PROJECT / "bench"))
    import pii_scan

    corpus = [json.loads(line)["text"] for line in (PROJECT / "tests/data/pii_corpus.jsonl").open()]
    return {
        "corpus": corpus,
        "dense": pii_scan.generate_tickets(SAMPLE_MB),
        "realistic": pii_scan.generate_realistic(SAMPLE_MB),
    }


def type_sets() -> dict[str, tuple[str, ...] | None]:
    from llmops.privacy import pii_types

    return {"all": None, "structured": STRUCTURED, **{t: (t,) for t in pii_types.names()}}


def findings(samples: dict[str, list[str]]) -> dict[str, dict[str, list[list[list[int | str]]]]]:
    """sample -> type set -> per text, its spans as [start, end, type]."""
    from llmops.privacy import pii

    return {
        name: {
            label: [[list(s) for s in spans] for spans in pii.scan_many(rows, types)]
            for label, types in type_sets().items()
        }
        for name, rows in samples.items()
    }


def main() -> None:
    samples = texts()
    payload = {"texts": samples, "findings": findings(samples)}
    with gzip.open(OUT, "wt", encoding="utf-8") as f:
        json.dump(payload, f, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    n = sum(len(v) for v in samples.values())
    print(f"wrote {OUT.relative_to(PROJECT)}: {n} texts, {len(type_sets())} type sets")


if __name__ == "__main__":
    main()
