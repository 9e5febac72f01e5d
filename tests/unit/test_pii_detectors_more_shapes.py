"""More shapes of the cue-based and token detectors: birth dates in more formats and cue positions,
national IDs with more layouts and cue phrasings, more provider tokens and cued random tokens, names
after role words, and the hard negatives each must leave alone (order numbers, ISBNs, UUIDs, tracking
numbers, Luhn-invalid numbers, version strings, product and brand names, wrong checksums)."""

from __future__ import annotations

import pytest

from llmops.privacy.credentials import random_token
from llmops.privacy.pii import scan_text


def found(text: str, pii_type: str) -> list[str]:
    return [text[s.start : s.end] for s in scan_text(text) if s.pii_type == pii_type]


# ------------------------------------------------------------------------------- dates of birth


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("born 3 March 1985 in Leeds", "3 March 1985"),
        ("DOB: 1985-03-03", "1985-03-03"),
        ("d.o.b. 03/03/85 per the form", "03/03/85"),
        ("DoB 03-Mar-1985", "03-Mar-1985"),
        ("DOB 12MAR1985, allergies none", "12MAR1985"),
        ("DOB = 3-mar-1985", "3-mar-1985"),
        ("DOB 19850303", "19850303"),
        ("born 12 Jan. '85", "12 Jan. '85"),
        ("geb. 3. März 1985", "3. März 1985"),
        ("né le 1er mars 1985 à Lyon", "1er mars 1985"),
        ("Jan Jansen, geboren op 3 maart 1985", "3 maart 1985"),
        ("nacido el 3 de marzo de 1985", "3 de marzo de 1985"),
        ("nata il 3 marzo 1985 a Milano", "3 marzo 1985"),
        ("Jane Doe (b. 12 March 1985)", "12 March 1985"),
        ("Date of birth (dd/mm/yyyy): 03/03/1985", "03/03/1985"),
        ("the date of birth we have on file is 03/03/1985", "03/03/1985"),
        ("my birthday is actually on 14 March 1987", "14 March 1987"),
        ("John Smith, 03/03/1985 (DOB)", "03/03/1985"),
        ("03.03.1985 is my date of birth", "03.03.1985"),
        ("12 March 1985, my date of birth", "12 March 1985"),
        ("12/03/1985 is when I was born", "12/03/1985"),
        ('{"dateOfBirth": "1985-03-12"}', "1985-03-12"),
        ("date_of_birth=12/03/1985", "12/03/1985"),
    ],
)
def test_date_of_birth_more_shapes(text: str, date: str) -> None:
    """Expect the date next to a birth cue, in any supported format, language or cue position."""
    assert found(text, "date_of_birth") == [date]


@pytest.mark.parametrize(
    "text",
    [
        "birthday party planned for 12/05/2025",  # an event after "birthday", a recent date
        "shipped 12/03/2024, the birthday present",
        "On 12/03/2020 the DOB field was empty",  # a date before a cue but not linked to it
        "DOB: 2031-01-01",  # in the future
        "DOB 1885-01-01",  # before 1900
        "DOB 12345678",  # no date
        "born in 1985, order 20240303",
        "date of birth unknown. Order placed 03/03/2024",  # another sentence
        "DOB 3 Mar 85:00",
        "version 1.12.1985 released",  # a version string, no cue
        "order 03/03/1985 shipped",  # a date without a cue
    ],
)
def test_date_of_birth_more_negatives(text: str) -> None:
    """Expect no date of birth without a birth cue linked to a real past date."""
    assert found(text, "date_of_birth") == []


# -------------------------------------------------------------------------------- national IDs


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("DNI 12.345.678-Z", "12.345.678-Z"),
        ("NI number AB 123456 C", "AB 123456 C"),
        ("codice fiscale rccmnl83s18d969h", "rccmnl83s18d969h"),
        ("CF RCCMNL83S18D9SNS (omocodia)", "RCCMNL83S18D9SNS"),
        ("NINO: jg103721b", "jg103721b"),
        ("my tax ID is 36574261809", "36574261809"),
        ("Tax ID: 36 574 261 809", "36 574 261 809"),
        ("TIN 36574261809", "36574261809"),
        ("Steuer-Identifikationsnummer 36574261809", "36574261809"),
        ("social security number 2 95 10 99 126 111 93", "2 95 10 99 126 111 93"),
        (
            "NIR 2\u202f95\u202f10\u202f99\u202f126\u202f111\u202f93",
            "2\u202f95\u202f10\u202f99\u202f126\u202f111\u202f93",
        ),
        ("BSN-nummer 1112.22.333", "1112.22.333"),
        ("persoonsnummer 111222333", "111222333"),
        ("111222333 (BSN)", "111222333"),
        ("36574261809, that's my Steuer-ID", "36574261809"),
        ("111222333 was the BSN on the old contract", "111222333"),
        ('{"taxId": "36574261809"}', "36574261809"),
        ("the form reads 2 95 10 99 126 111 93", "2 95 10 99 126 111 93"),  # official NIR grouping
        ("ref 36 574 261 809 attached", "36 574 261 809"),  # official Steuer-ID grouping
    ],
)
def test_national_id_more_shapes(text: str, value: str) -> None:
    """Expect the identifier in more layouts, with more cue phrasings and cue positions."""
    assert found(text, "national_id") == [value]


@pytest.mark.parametrize(
    "text",
    [
        "social security number 078-05-1120",  # a US SSN: only the NIR checksum is tried here
        "order 111222333 (shipped)",
        "order 111222333 was shipped, BSN unknown",
        "order 111222333 the BSN",
        "ISBN 978-3-16-148410-0",
        "UUID 123e4567-e89b-12d3-a456-426614174000",
        "tracking 1Z999AA10123456784",
        "ID no 111222334",  # 11-test fails
        "tax ID 36574261808",  # ISO 7064 check digit wrong
        "call 36 574 261 808",  # official grouping, wrong check digit
        "version 36.574.261.809",
        "CF abcdefghijklmnop",
        "card 4111 1111 1111 1112 declined",  # Luhn-invalid card number
    ],
)
def test_national_id_more_negatives(text: str) -> None:
    """Expect no national id without a valid checksum next to a cue (or an official grouping)."""
    assert found(text, "national_id") == []


# --------------------------------------------------------------------------------- credentials

GITLAB = "glpat-xK3pQ9vR2mT7wY4zL8nB"
OPENAI = "sk-proj-" + "aB3dE5fG7hJ9kL2mN4pQ6rS8tU0vW1xY3zA5bC7dE9fG"
NPM = "npm_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
HF = "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH"
STRIPE_LONG = "sk_live_" + "s7AwstLUZ0HqUTgs9P7JfURwzS9dRYtIqo3OtQUQwyZHqkJBsZgpkiKwaXYai5FNdDe2"
BARE = "VOU21T59044L9HjpO2tz5kPWeJWrjhzQ4oTs7PfN"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"our CI uses {GITLAB} to push", GITLAB),
        (f"OPENAI_API_KEY={OPENAI}", OPENAI),
        (f"the publish step reads {NPM}", NPM),
        (f"model download with {HF} fails", HF),
        (f"Stripe key {STRIPE_LONG} and more", STRIPE_LONG),
        (f"Our monitoring leaked this token in a log line: {BARE}", BARE),
        ("mysql://admin:Falcon9579?@prod-db-1.example.com/app", "Falcon9579?"),
        ("token=+LdUYe45azsDTvz/aVxv7tyojB3CaP2yMPCjrxUK", "+LdUYe45azsDTvz/aVxv7tyojB3CaP2yMPCjrxUK"),
        (
            "API credentials: KVUzEbuT8B5HWorExXbZmF86bPrcbBnj47MWHN5Y",
            "KVUzEbuT8B5HWorExXbZmF86bPrcbBnj47MWHN5Y",
        ),
        ("new password Tiger_Mango7, please", "Tiger_Mango7"),
        ("password: Sunflower2695?", "Sunflower2695?"),
    ],
)
def test_credential_more_shapes(text: str, secret: str) -> None:
    """Expect provider tokens beyond detect-secrets' plugins, and a long random token after a
    sentence that names a token."""
    assert found(text, "credential") == [secret]


@pytest.mark.parametrize(
    "text",
    [
        "the token in the log line: 123e4567-e89b-12d3-a456-426614174000",  # a UUID
        "the key in the log line: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # a hash
        "the token field reads: please_contact_support_for_a_new_one",
        "key for the order: ORD-2024-454733",
        "sk-learn is a library, sk-proj-short is not a key",
        "glpat-aaaaaaaaaaaaaaaaaaaaaaaa is a placeholder",
        "http://example.com:8080?q=a@b",  # a port, not a password
        "the secret of the product: TrailBackpack Pro 2",
        "password reset link sent",
        "Forgot password? Click here",
        "Password 2 times wrong, account locked",
    ],
)
def test_credential_more_negatives(text: str) -> None:
    """Expect no credential in identifiers, hashes, placeholders or prose after a token word."""
    assert found(text, "credential") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (BARE, True),
        ("9f86d081884c7d659a2feaa0c55ad015", False),  # hex: one letter case, low entropy
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", False),
        ("version_1_2_3_release_candidate", False),
        ("Short1", False),
    ],
)
def test_random_token(value: str, expected: bool) -> None:
    assert random_token(value) is expected


# ------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Customer Oluwaseun Abernathy reports a broken zip.", "Oluwaseun Abernathy"),
        ("Contact Thandiwe Okafor on the usual number.", "Thandiwe Okafor"),
        ("Oluwaseun Abernathy here: please cancel the order.", "Oluwaseun Abernathy"),
    ],
)
def test_person_name_after_role_words(text: str, name: str) -> None:
    """Expect an unknown full name after a role word or before "here:"."""
    assert found(text, "person_name") == [name]


@pytest.mark.parametrize(
    "text",
    [
        "This is Unacceptable, order 45883 is 29 days late.",
        "Customer Experience is reviewing the case.",
        "Contact Support if the parcel does not arrive.",
        "I saw an ad for Dr. Martens on your checkout page.",
        "Order Status here: shipped.",
    ],
)
def test_person_name_more_negatives(text: str) -> None:
    """Expect no name in emphasis after "this is", a role word before a common word, or a brand."""
    assert found(text, "person_name") == []


@pytest.mark.parametrize(
    ("entity", "kept"),
    [
        ("Oluwaseun Abernathy", True),
        ("Femke Park", True),
        ("Order #80324", False),  # digits
        ("Postcode SW1A", False),
        ("Email", False),  # one common word
        ("Unacceptable", False),  # ends like an adjective
        ("Customer Service", False),  # common words only
        ("Victoria Station", False),  # a place
        ("Hugo Boss", False),  # a listed brand
        ("ingrid", False),  # not capitalised
    ],
)
def test_spacy_person_entities_filtered(entity: str, kept: bool) -> None:
    """Expect the spaCy engine to keep a PERSON entity only when it can be a name."""
    pytest.importorskip("spacy")
    from llmops.privacy.name_engines import _plausible_person

    assert _plausible_person(entity) is kept
