"""Person-name engines: lowercase names after cues (gazetteer), and the spaCy engine run with a real
English pipeline installed from the package index."""

from __future__ import annotations

import pandas as pd
import pytest

from llmops.privacy import name_engines
from llmops.privacy.name_engines import SpacyNames, engine_for
from llmops.privacy.pii import apply_privacy_policy, scan_many, scan_text
from llmops.specs.schema import PrivacySpec

pytest.importorskip("spacy")
if not name_engines.spacy_installed(name_engines.DEFAULT_SPACY_MODEL):
    pytest.skip(f"spaCy pipeline {name_engines.DEFAULT_SPACY_MODEL} not installed", allow_module_level=True)

SPACY = SpacyNames()


def names(text: str, engine: SpacyNames | None = None) -> list[str]:
    return [text[s.start : s.end] for s in scan_text(text, ["person_name"], engine)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cc ingrid abernathy", ["ingrid abernathy"]),
        ("thanks maria, see you tomorrow", ["maria"]),
        ("Best,\njohn", ["john"]),
        ("cc: bob", ["bob"]),
    ],
)
def test_gazetteer_finds_lowercase_names_after_cues(text: str, expected: list[str]) -> None:
    assert names(text) == expected


@pytest.mark.parametrize(
    "text",
    ["thanks a lot!", "thanks so much.", "hi there.", "cc the team", "this is great.", "Thanks for the help"],
)
def test_lowercase_words_after_cues_that_are_not_names(text: str) -> None:
    assert names(text) == []


def test_spacy_engine_finds_names_no_cue_introduces() -> None:
    text = "I already met Oluwaseun Abernathy yesterday about the refund."
    assert names(text) == []  # the gazetteer does not know either word
    assert names(text, SPACY) == ["Oluwaseun Abernathy"]


def test_brands_that_start_with_a_first_name_are_not_names() -> None:
    text = "My Mercedes Benz broke down, Anna Smith said. Mercedes Garcia agreed; a Mercedes-Benz van."
    assert names(text) == ["Anna Smith", "Mercedes Garcia"]
    assert names(text, SPACY) == ["Anna Smith", "Mercedes Garcia"]


def test_spacy_engine_keeps_names_its_small_model_calls_organisations() -> None:
    # en_core_web_sm labels these ORG, GPE and FAC; the gazetteer's or the cue's answer stands.
    for text, name in [
        ("the account holder is Anna Bianchi.", "Anna Bianchi"),
        ("Regards,\nFemke Park", "Femke Park"),
        ("billing contact Marta Rossi, a@example.com.", "Marta Rossi"),
    ]:
        assert names(text, SPACY) == [name]


def test_spacy_engine_keeps_structured_types_and_resolves_overlaps() -> None:
    text = "Please call Oluwaseun Abernathy on +44 20 7946 0958 or mail oluwaseun@example.com."
    spans = scan_text(text, None, SPACY)
    assert [(text[s.start : s.end], s.pii_type) for s in spans] == [
        ("Oluwaseun Abernathy", "person_name"),
        ("+44 20 7946 0958", "phone"),
        ("oluwaseun@example.com", "email"),
    ]


def test_spacy_engine_reads_only_sentences_with_candidates() -> None:
    texts = [
        "The parcel arrived late. It was damaged.\nPlease refund me.",
        "Thanks, Anna Smith",  # cue-introduced: the gazetteer's answer is trusted
        "I met Oluwaseun yesterday.",
    ]
    base = scan_many(texts, ["person_name"])
    work = SPACY.candidates(texts, base)
    assert [(row, sentence) for row, _, sentence in work] == [(2, "I met Oluwaseun yesterday.")]


def test_batched_result_equals_row_by_row() -> None:
    texts = [
        "I already met Oluwaseun Abernathy yesterday.",
        "My Mercedes Benz broke down.",
        "cc ingrid abernathy",
        "",
    ]
    assert scan_many(texts, None, SPACY) == [scan_text(t, None, SPACY) for t in texts]


def test_policy_selects_the_engine_and_reports_it() -> None:
    df = pd.DataFrame({"body": ["I already met Oluwaseun Abernathy yesterday."]})
    policy = {"free_text": {"columns": ["body"], "types": {"person_name": "mask"}}}
    out, report = apply_privacy_policy(df, PrivacySpec.model_validate(policy))
    assert out["body"][0] == "I already met Oluwaseun Abernathy yesterday."
    assert report.name_engine == "gazetteer"
    out, report = apply_privacy_policy(
        df, PrivacySpec.model_validate({**policy, "names": {"engine": "spacy"}})
    )
    assert out["body"][0] == "I already met [PERSON_NAME] yesterday."
    assert report.name_engine == "spacy"


def test_a_missing_spacy_pipeline_is_named() -> None:
    with pytest.raises(RuntimeError, match="'no_such_pipeline' is not installed"):
        scan_text("I met Oluwaseun Abernathy.", None, SpacyNames("no_such_pipeline"))


def test_unknown_engine_is_refused() -> None:
    assert engine_for("gazetteer") is None
    with pytest.raises(ValueError, match="unknown name engine 'nope'"):
        engine_for("nope")
    with pytest.raises(ValueError, match="engine"):
        PrivacySpec.model_validate({"names": {"engine": "nope"}})
