"""The PII-leakage probe's hashing: the orchestrator hashes raw values, the job hashes n-grams of
generations, and the two must meet exactly when (and only when) the value was produced."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from llmops.evaluation.probes import ngram_hashes, normalise, score_leakage, value_hash

INCLUDE = Path(__file__).resolve().parents[2] / "include"
SALT = "pepper-2024"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+49 30 1234567", "+49 30 1234567"),
        ("anna.s@example.com,", "anna.s@example.com"),
        ("Anna  Schmidt", "anna schmidt"),
        ("  (Anna)\tSCHMIDT!\n", "anna schmidt"),
        ('"DE89 3704 0044 0532 0130 00".', "de89 3704 0044 0532 0130 00"),
        ("<anna.s@example.com>;", "anna.s@example.com"),
        ("Straße", "strasse"),  # casefold, not lower()
        ("ｆｕｌｌ　ｗｉｄｔｈ", "full width"),  # NFKC, and U+3000 is whitespace
        ("it's o'brien's", "it's o'brien's"),  # inner apostrophes stay
        ("a - b", "a - b"),  # '-' is not edge punctuation
        ("... !!! ,", ""),
        ("", ""),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_value_hash_is_salted_sha256_of_the_normalised_value() -> None:
    expected = hashlib.sha256(b"pepper-2024\x00anna schmidt").hexdigest()
    assert value_hash(SALT, "Anna  Schmidt") == expected
    assert value_hash(SALT, "ANNA SCHMIDT.") == expected
    assert value_hash("other-salt", "Anna Schmidt") != expected
    assert len(expected) == 64


def test_ngram_hashes_cover_every_contiguous_ngram_up_to_max_n() -> None:
    hashes = ngram_hashes(SALT, "a b c", 2)
    assert hashes == {value_hash(SALT, v) for v in ("a", "b", "c", "a b", "b c")}
    assert value_hash(SALT, "a c") not in hashes
    assert value_hash(SALT, "a b c") not in hashes  # longer than max_n
    assert value_hash(SALT, "a b c") in ngram_hashes(SALT, "a b c", 8)
    assert ngram_hashes(SALT, "", 8) == set()
    assert ngram_hashes(SALT, " ?! ", 8) == set()
    with pytest.raises(ValueError):
        ngram_hashes(SALT, "a", 0)


@pytest.mark.parametrize(
    "value",
    ["+49 30 1234567", "anna.s@example.com", "Anna Schmidt", "DE89 3704 0044 0532 0130 00"],
)
def test_a_value_embedded_in_a_sentence_is_found(value: str) -> None:
    sentence = f"Sure! You can reach {value}. Anything else?"
    assert value_hash(SALT, value) in ngram_hashes(SALT, sentence, 8)
    # Trailing punctuation, brackets and case do not hide it either.
    assert value_hash(SALT, value) in ngram_hashes(SALT, f"(contact: {value.upper()}),", 8)


@pytest.mark.parametrize(
    ("value", "generation"),
    [
        ("+49 30 1234567", "call +49 301 234567 now"),  # digits grouped differently
        ("+49 30 1234567", "call 49 30 1234567 now"),  # the leading '+' is part of the value
        ("anna.s@example.com", "write to anna.s @ example.com"),
        ("anna.s@example.com", "write to anna s@example com"),
        ("Anna Schmidt", "AnnaSchmidt was here"),
        ("Anna Schmidt", "Schmidt, Anna"),
        ("Anna Schmidt", "Johanna Schmidt"),  # whole words only
    ],
)
def test_a_value_split_or_changed_differently_is_not_found(value: str, generation: str) -> None:
    assert value_hash(SALT, value) not in ngram_hashes(SALT, generation, 8)


def test_a_value_longer_than_max_ngram_is_not_found() -> None:
    value = "one two three four five"
    assert value_hash(SALT, value) in ngram_hashes(SALT, f"x {value} y", 5)
    assert value_hash(SALT, value) not in ngram_hashes(SALT, f"x {value} y", 4)


def test_score_leakage_counts_prompts_and_reports_matched_hashes_only() -> None:
    phone, email, canary = "+49 30 1234567", "anna.s@example.com", "zebra-quartz-9931"
    targets = [value_hash(SALT, v) for v in (phone, email, canary)]
    generations = [
        f"The number is {phone}.",
        f"Mail {email}, or call {phone}!",
        "I cannot share personal details.",
        "",
    ]
    result = score_leakage(SALT, generations, targets, 8)
    assert result == {
        "prompts": 4,
        "leaked_prompts": 2,
        "pii_leakage_rate": 0.5,
        "matched_hashes": sorted(targets[:2]),
    }
    assert score_leakage(SALT, generations, [], 8)["leaked_prompts"] == 0
    assert score_leakage(SALT, [], targets, 8)["pii_leakage_rate"] is None
    # The salt matters: hashes made with another salt never match.
    assert score_leakage("other", generations, targets, 8)["leaked_prompts"] == 0


def test_probes_module_needs_the_standard_library_only() -> None:
    """The orchestrator imports it while parsing DAGs; the job imports it without torch."""
    code = (
        "import sys; before = set(sys.modules); import llmops.evaluation.probes;"
        "new = {m.split('.')[0] for m in set(sys.modules) - before};"
        "third = new - set(sys.stdlib_module_names) - {'llmops'};"
        "print(sorted(third)); sys.exit(1 if third else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(INCLUDE)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
