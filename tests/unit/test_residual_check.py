"""The residual check is a second engine: it must catch what the redacting detectors let through, and
must not count what the policy itself wrote (masks, pseudonym tokens)."""

from __future__ import annotations

import pandas as pd
import pytest

from llmops.privacy import pii_types
from llmops.privacy.name_engines import DEFAULT_SPACY_MODEL, spacy_installed
from llmops.privacy.pii import Pseudonymiser, apply_privacy_policy, scan_text
from llmops.privacy.residual import check_residual, scan_structured
from llmops.specs.schema import PrivacySpec

ALL = ("email", "phone", "payment_card", "iban", "us_ssn", "ip_address")


@pytest.mark.parametrize(
    ("text", "pii_type"),
    [
        ("mail bob@example.com", "email"),
        ("card 4111 1111 1111 1111 please", "payment_card"),
        ("IBAN DE89 3704 0044 0532 0130 00", "iban"),
        ("my ssn is 123-45-6789", "us_ssn"),
        ("from 10.0.0.1 at noon", "ip_address"),
        ("call +44 7911 123456", "phone"),
        ("call (212) 555-1234", "phone"),
    ],
)
def test_finds_each_structured_type(text: str, pii_type: str) -> None:
    assert scan_structured([text]) == {pii_type: 1}


@pytest.mark.parametrize(
    "text",
    [
        "see <phone:123456789012> and <email:0a1b2c3d4e5f>",
        "[EMAIL] [PHONE] [PAYMENT_CARD] [REDACTED]",
        "version v1.2.3.4 of the app",
        "order 4829301755 shipped 2024-05-06 at 10:30",
        "card 4111 1111 1111 1112 was declined",  # Luhn-invalid
        "ref DE00 3704 0044 0532 0130 00",  # bad IBAN checksum
    ],
)
def test_policy_output_and_look_alikes_are_not_counted(text: str) -> None:
    assert scan_structured([text]) == {}


def test_catches_what_the_redacting_detector_lets_through(monkeypatch: pytest.MonkeyPatch) -> None:
    # The redacting phone detector regresses (finds nothing): the independent engine still sees it.
    monkeypatch.setitem(pii_types._DETECTORS, "phone", lambda text: [])
    text = "call me on +44 7911 123456 tonight"
    assert scan_text(text, ["phone"]) == []
    df = pd.DataFrame({"body": [text, "fine"]})
    policy = PrivacySpec.model_validate({"free_text": {"columns": ["body"], "types": {"phone": "mask"}}})
    out, _ = apply_privacy_policy(df, policy)
    report = check_residual(out, ["body"], ["phone"])
    assert report.found == {"phone": 1} and report.by_column == {"body": {"phone": 1}}


def test_redacted_output_is_clean_and_counts_only_reach_the_report() -> None:
    df = pd.DataFrame(
        {"body": ["Mail anna@example.com, call +49 30 1234567, card 4111 1111 1111 1111.", None]}
    )
    policy = PrivacySpec.model_validate(
        {
            "free_text": {
                "columns": ["body"],
                "types": {"email": "pseudonymise", "phone": "mask", "payment_card": "mask"},
            }
        }
    )
    out, _ = apply_privacy_policy(df, policy, Pseudonymiser(b"k" * 32))
    assert check_residual(df, ["body"], ALL).found == {"email": 1, "phone": 1, "payment_card": 1}
    report = check_residual(out, ["body"], ALL)
    assert report.found == {} and "anna" not in str(report.to_dict())


def test_only_the_types_asked_for_are_judged() -> None:
    df = pd.DataFrame({"body": ["mail bob@example.com or call +44 7911 123456"]})
    assert check_residual(df, ["body"], ["phone"]).found == {"phone": 1}


@pytest.mark.skipif(not spacy_installed(DEFAULT_SPACY_MODEL), reason="spaCy pipeline not installed")
def test_names_are_reported_as_suspected_from_a_sample() -> None:
    df = pd.DataFrame({"body": ["I already met Oluwaseun Abernathy yesterday.", "[PERSON_NAME] called."]})
    report = check_residual(df, ["body"], ["person_name"], DEFAULT_SPACY_MODEL)
    assert report.suspected_names == {"body": 1} and report.found == {}
    assert report.name_rows_read == 2
