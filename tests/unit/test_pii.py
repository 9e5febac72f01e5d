"""PII detectors, redaction, pseudonyms and DataFrame privacy policies."""

from __future__ import annotations

import json
import logging
import re

import pandas as pd
import pytest

from llmops.privacy import pii, pii_types
from llmops.privacy.names import load_first_names
from llmops.privacy.pii import (
    Pseudonymiser,
    Span,
    apply_privacy_policy,
    detect_column_type,
    redact_text,
    scan_many,
    scan_text,
)
from llmops.specs.schema import PrivacySpec

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def found(text: str, types: list[str] | None = None) -> list[tuple[str, str]]:
    return [(text[s.start : s.end], s.pii_type) for s in scan_text(text, types)]


def only(value: str, pii_type: str, template: str = "see {} here") -> None:
    text = template.format(value)
    assert found(text) == [(value, pii_type)], found(text)


# ------------------------------------------------------------------------------------ detectors


@pytest.mark.parametrize(
    "value",
    ["anna.schmidt@example.com", "Anna.Schmidt@Example.COM", "jörg+orders@exämple.de", "x_y-z@mail.co.uk"],
)
def test_email_positive(value: str) -> None:
    only(value, "email", "mail {}.")


@pytest.mark.parametrize(
    "text", ["user@localhost", "@handle on social", "a@b", "email me @ home", "foo@.com"]
)
def test_email_negative(text: str) -> None:
    assert found(text, ["email"]) == []


@pytest.mark.parametrize(
    "value",
    [
        "+49 30 1234567",
        "+1 (555) 123-4567",
        "555-123-4567",
        "(555) 123-4567",
        "555.123.4567",
        "1-800-555-0199",
        "020 7946 0958",
        "+44 20 7946 0958",
        "+49 (0)30 1234567",
        "(030) 1234567",
        "0171/2345678",
        "+33 6 12 34 56 78",
        "06 12 34 56 78",
        "06.12.34.56.78",
        "+91 98765 43210",
        "98765 43210",
        "+4917200404240",
        "07700900123",
    ],
)
def test_phone_positive(value: str) -> None:
    only(value, "phone", "please call {} after lunch")


@pytest.mark.parametrize(
    "text",
    [
        "delivered on 2026-01-05 as promised",
        "delivered on 05.01.2026 10:30 as promised",
        "on 01/05/2026 at 14:45:00",
        "order #48213 is late",
        "order 48213 is late",
        "ticket 1234567 was closed",
        "we sold 1 234 567 units, or 1.234.567 in German notation",
        "revenue was $1,234,567.89",
        "Windows 10.0.19041.1 and Chrome 120.0.6099.109",
        "order ORD-2024-118723 and invoice INV-2025-00042",
        "slot 14:00-16:00, loyalty number 48213, PIN 1234",
        "SSN-shaped but invalid 000-12-3456",
    ],
)
def test_phone_negative(text: str) -> None:
    assert found(text) == []


def test_bare_ten_digit_numbers_are_not_phones_by_design() -> None:
    # A bare digit run is as likely an account or order number; precision wins (documented gap).
    assert found("my number is 5551234567", ["phone"]) == []


@pytest.mark.parametrize(
    "value",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5500 0000 0000 0004",
        "3782 822463 10005",
        "6011 1111 1111 1117",
        "4222222222222",
    ],
)
def test_payment_card_positive(value: str) -> None:
    only(value, "payment_card", "card {} was declined")


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 was declined",  # Luhn-invalid
        "card 4111111111111112 was declined",
        "ref 0000 0000 0000 0000",  # Luhn-valid but no card network starts with 0
        "run 41111111111111111111111",  # too long
        "odd grouping 41 11 11 11 11 11 11 11",
        "mixed separators 4111 1111-1111 1111",
    ],
)
def test_payment_card_negative(text: str) -> None:
    assert found(text, ["payment_card"]) == []


def test_card_with_trailing_expiry_is_found() -> None:
    assert found("card 4111 1111 1111 1111 12/27") == [("4111 1111 1111 1111", "payment_card")]


def test_card_is_not_reported_as_phone() -> None:
    text = "card 4111 1111 1111 1111 or 3782 822463 10005"
    assert [t for _, t in found(text)] == ["payment_card", "payment_card"]


@pytest.mark.parametrize(
    "value",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
        "BE68 5390 0754 7034",
    ],
)
def test_iban_positive(value: str) -> None:
    only(value, "iban", "IBAN: {}, thanks")


@pytest.mark.parametrize(
    "text",
    [
        "IBAN DE89 3704 0044 0532 0130 01 is wrong",  # checksum
        "IBAN DE88370400440532013000 is wrong",
        "IBAN DE8937040044053201300012 has digits glued on",  # longer than a German IBAN
        "IBAN GB82 WEST 1234 5698 7654 33 is wrong",
    ],
)
def test_iban_negative_and_no_fallback_to_card_or_phone(text: str) -> None:
    assert found(text) == []


def test_iban_followed_by_a_word() -> None:
    text = "send to DE89 3704 0044 0532 0130 00 THANKS"
    assert found(text) == [("DE89 3704 0044 0532 0130 00", "iban")]


@pytest.mark.parametrize("value", ["123-45-6789", "001-01-0001", "899-99-9999", "665-12-3456"])
def test_us_ssn_positive(value: str) -> None:
    only(value, "us_ssn", "SSN {}.")


@pytest.mark.parametrize(
    "value",
    ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567", "123-45-0000", "078-05-1120"],
)
def test_us_ssn_invalid_areas_groups_serials(value: str) -> None:
    assert found(f"SSN {value}.") == []


def test_us_ssn_needs_the_dashed_format_or_a_cue() -> None:
    assert found("ref 123456789", ["us_ssn"]) == []
    assert found("id ABC-123-45-6789", ["us_ssn"]) == []


@pytest.mark.parametrize(
    "value",
    [
        "192.168.1.10",
        "8.8.8.8",
        "255.255.255.0",
        "2001:db8::1",
        "fe80::1ff:fe23:4567:890a",
        "::1",
        "::ffff:192.0.2.128",
    ],
)
def test_ip_address_positive(value: str) -> None:
    only(value, "ip_address", "from {} at noon")


def test_ip_address_in_url() -> None:
    assert found("open http://10.0.0.1:8080/admin") == [("10.0.0.1", "ip_address")]


@pytest.mark.parametrize(
    "text",
    [
        "256.1.1.1",
        "version 1.2.3",
        "01.02.03.04",
        "at 10:30:00",
        "MAC 00:1A:2B:3C:4D:5E",
        "1.2.3.4.5",
        "std::vector and Foo::bar",
        "separator :: here",
    ],
)
def test_ip_address_negative(text: str) -> None:
    assert found(text, ["ip_address"]) == []


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Anna Schmidt called yesterday", "Anna Schmidt"),
        ("I spoke with Łukasz Kowalski", "Łukasz Kowalski"),
        ("I spoke with Lukasz Kowalski", "Lukasz Kowalski"),
        ("ask José García about it", "José García"),
        ("ask Jose Garcia about it", "Jose Garcia"),
        ("Jean-Pierre Dubois wrote", "Jean-Pierre Dubois"),
        ("Anna de la Cruz and", "Anna de la Cruz"),
        ("Priya O'Brien-Smith wrote", "Priya O'Brien-Smith"),
        ("my name is Thaddeus Okonkwo", "Thaddeus Okonkwo"),
        ("My name is Thaddeus.", "Thaddeus"),
        ("I'm Siobhan Murphy, the owner", "Siobhan Murphy"),
        ("I’m Siobhan", "Siobhan"),
        ("Hello, this is Kwame from Accra", "Kwame"),
        ("Hi Ngozi, thanks", "Ngozi"),
        ("Dear Aoife,\nplease", "Aoife"),
        ("Regards,\nTadhg", "Tadhg"),
        ("Kind regards,\n\nTadhg Byrne", "Tadhg Byrne"),
        ("Thanks, Mark", "Mark"),
        ("Will Smith called", "Will Smith"),
        ("Dear Mr O'Brien,", "O'Brien"),
        ("as Ms. de Vries said", "de Vries"),
    ],
)
def test_person_name_positive(text: str, name: str) -> None:
    assert found(text) == [(name, "person_name")]


@pytest.mark.parametrize(
    "text",
    [
        "Will you refund me?",
        "May I ask why?",
        "Mark the ticket as urgent.",
        "June invoice is wrong.",
        "Grace period ends soon.",
        "Hope this helps.",
        "Dear Customer, Hi Team, Hello World",
        "Our Paris office and Jordan sneakers",
        "Thanks for the help!",
        "The MacBook and Hi-Fi",
        "Best regards from the support desk",
    ],
)
def test_person_name_negative(text: str) -> None:
    assert found(text) == []


def test_ambiguous_name_followed_by_a_name_is_kept_whole() -> None:
    # Privacy first: "Jack Thomas" must not leak "Jack", so "Will Anna" over-redacts "Will".
    assert found("Jack Thomas and Grace Kelly") == [
        ("Jack Thomas", "person_name"),
        ("Grace Kelly", "person_name"),
    ]
    assert found("Will Anna call?") == [("Will Anna", "person_name")]


def test_name_does_not_swallow_next_sentence() -> None:
    assert found("Hi Anna Thanks for your help") == [("Anna", "person_name")]
    assert found("Regards, Anna\nSupport Team") == [("Anna", "person_name")]


def test_gazetteer_size_and_ambiguous_words() -> None:
    names, ambiguous = load_first_names()
    assert len(names) >= 500
    for word in ("Will", "May", "June", "Mark", "April", "Grace", "Hope", "Bill", "Frank", "Paris", "Jordan"):
        assert word not in names
        assert word in ambiguous
    assert {"Anna", "Łukasz", "Lukasz", "José", "Jose", "Priya", "Wei", "Fatima"} <= names


def test_gazetteer_ships_with_the_package() -> None:
    from importlib import resources

    data = resources.files("llmops.privacy").joinpath("data", "first_names.txt")
    assert data.is_file()


# ------------------------------------------------------------------------------ overlaps, scan


def test_overlaps_resolved_by_priority_then_length() -> None:
    spans = [
        Span(0, 10, "phone"),
        Span(5, 20, "payment_card"),
        Span(18, 25, "person_name"),
        Span(30, 35, "person_name"),
        Span(30, 40, "person_name"),
        Span(50, 55, "email"),
    ]
    assert pii._resolve(list(spans)) == [
        Span(5, 20, "payment_card"),
        Span(30, 40, "person_name"),
        Span(50, 55, "email"),
    ]
    assert pii._resolve(list(reversed(spans))) == pii._resolve(list(spans))


def test_email_wins_over_name_inside_it() -> None:
    assert found("write to Anna.Schmidt@example.com") == [("Anna.Schmidt@example.com", "email")]


def test_cue_and_gazetteer_do_not_duplicate() -> None:
    assert found("Regards, Anna Schmidt") == [("Anna Schmidt", "person_name")]


def test_scan_text_types_filter_and_validation() -> None:
    text = "Anna: anna@example.com, +49 30 1234567"
    assert found(text, ["phone"]) == [("+49 30 1234567", "phone")]
    with pytest.raises(ValueError, match="unknown PII type"):
        scan_text(text, ["passport"])


def test_scan_many_equals_per_row_scan() -> None:
    rows = [
        "",
        "Anna Schmidt, anna@example.com",
        "+49 30 1234567\x00DE89 3704 0044 0532 0130 00",
        "ends with a number 030 1234567",
        "Regards,",
        "Tadhg and 10.0.0.1",
        "x" * 100,
    ] * 50
    assert scan_many(rows) == [scan_text(r) for r in rows]
    assert scan_many(rows, ["email"]) == [scan_text(r, ["email"]) for r in rows]


def test_scan_many_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pii, "_BATCH_CHARS", 64)
    rows = [f"call +49 30 12345{i:02d} or mail u{i}@example.com" for i in range(40)]
    result = scan_many(rows)
    assert all(len(spans) == 2 for spans in result)
    assert result == [scan_text(r) for r in rows]


# ------------------------------------------------------------------------- redaction, pseudonyms


def test_redact_text_mask() -> None:
    text = "Mail anna@example.com or call +49 30 1234567, card 4111 1111 1111 1111. Thanks, Anna"
    actions = dict.fromkeys(pii_types.names(), "mask")
    new, counts = redact_text(text, actions)
    assert new == "Mail [EMAIL] or call [PHONE], card [PAYMENT_CARD]. Thanks, [PERSON_NAME]"
    assert counts == {"email": 1, "phone": 1, "payment_card": 1, "person_name": 1}


def test_redact_text_only_touches_listed_types() -> None:
    new, counts = redact_text("anna@example.com from 10.0.0.1", {"ip_address": "mask"})
    assert new == "anna@example.com from [IP_ADDRESS]"
    assert counts == {"ip_address": 1}


def test_redact_text_pseudonymise() -> None:
    p = Pseudonymiser(KEY)
    new, counts = redact_text("Mail Anna@Example.com or anna@example.com", {"email": "pseudonymise"}, p)
    tokens = re.findall(r"<email:[0-9a-f]{12}>", new)
    assert len(tokens) == 2 and tokens[0] == tokens[1]  # normalised: case does not matter
    assert tokens[0] == p.token("anna@example.com", "email")
    assert counts == {"email": 2}
    assert "@" not in new


def test_redact_text_argument_errors() -> None:
    with pytest.raises(ValueError, match="Pseudonymiser is required"):
        redact_text("x", {"email": "pseudonymise"})
    with pytest.raises(ValueError, match="'mask' or 'pseudonymise'"):
        redact_text("x", {"email": "drop"})
    with pytest.raises(ValueError, match="unknown PII type"):
        redact_text("x", {"fax": "mask"})


def test_pseudonymiser_stable_and_keyed() -> None:
    a, b, other = Pseudonymiser(KEY), Pseudonymiser(bytearray(KEY)), Pseudonymiser(OTHER_KEY)
    assert a.token("+49 30 1234567", "phone") == b.token("+49-30-1234567", "phone")
    assert a.token("+49 30 1234567", "phone") != other.token("+49 30 1234567", "phone")
    assert a.token("x", "email")[-13:] != a.token("x", "person_name")[-13:]  # type is part of the MAC
    assert re.fullmatch(r"<phone:[0-9a-f]{12}>", a.token("+49 30 1234567", "phone"))
    assert a.token("DE89 3704 0044 0532 0130 00", "iban") == a.token("de89370400440532013000", "iban")
    assert "k" * 16 not in repr(a)


def test_pseudonymiser_rejects_weak_keys() -> None:
    with pytest.raises(ValueError, match="too short: 15 bytes, need at least 16"):
        Pseudonymiser(b"s" * 15)
    with pytest.raises(TypeError):
        Pseudonymiser("a string key" * 4)  # type: ignore[arg-type]


def test_masks_and_tokens_are_not_detected_again() -> None:
    p = Pseudonymiser(KEY)
    text = " ".join(
        [*pii_types.masks().values(), pii.REDACTED, *(p.token("0301234567", t) for t in pii_types.names())]
    )
    assert scan_text(text) == []


# ------------------------------------------------------------------------------- DataFrame policy


RAW = {
    "ticket_id": ["T1", "T2", "T3"],
    "customer_email": ["Anna@Example.com", "bob.jones@example.org", None],
    "customer_name": ["Anna Schmidt", "Bob Jones", "Wei Chen"],
    "customer_phone": ["+49 30 1234567", None, "020 7946 0958"],
    "category": ["billing", "shipping", "billing"],
    "account_ref": ["A-1", "A-2", "A-3"],
    "body": [
        "Hi, my name is Anna Schmidt, mail anna@example.com or call +49 30 1234567.",
        "Card 4111 1111 1111 1111 was charged twice. Thanks, Bob",
        None,
    ],
}
RAW_VALUES = [
    "Anna",
    "Schmidt",
    "Bob",
    "Jones",
    "example",
    "1234567",
    "7946",
    "4111",
]


def _policy(**overrides: object) -> PrivacySpec:
    raw: dict[str, object] = {
        "columns": {
            "customer_email": {"action": "pseudonymise"},
            "customer_name": {"action": "drop"},
            "customer_phone": {"action": "mask"},
            "category": {"action": "allow", "justification": "ticket category, not personal"},
            "account_ref": {"action": "mask"},
        },
        "free_text": {
            "columns": ["body"],
            "types": {
                "email": "pseudonymise",
                "phone": "mask",
                "payment_card": "mask",
                "person_name": "mask",
            },
        },
    }
    raw.update(overrides)
    return PrivacySpec.model_validate(raw)


def test_apply_privacy_policy() -> None:
    df = pd.DataFrame(RAW)
    original = df.copy()
    p = Pseudonymiser(KEY)
    out, report = apply_privacy_policy(df, _policy(), p)

    pd.testing.assert_frame_equal(df, original)  # input untouched
    assert "customer_name" not in out.columns
    assert list(out["customer_phone"].isna()) == [False, True, False]
    assert out["customer_phone"].dropna().tolist() == ["[PHONE]", "[PHONE]"]
    assert out["account_ref"].tolist() == ["[REDACTED]"] * 3
    assert out["customer_email"][0] == p.token("anna@example.com", "email")
    assert pd.isna(out["customer_email"][2])
    assert out["category"].tolist() == RAW["category"]
    assert out["body"][0] == (
        f"Hi, my name is [PERSON_NAME], mail {p.token('anna@example.com', 'email')} or call [PHONE]."
    )
    # The same person gets the same token in the column and in free text.
    assert out["customer_email"][0] in out["body"][0]
    assert out["body"][1] == "Card [PAYMENT_CARD] was charged twice. Thanks, [PERSON_NAME]"
    assert pd.isna(out["body"][2])

    assert report.rows_scanned == 3
    assert report.columns_dropped == ["customer_name"]
    assert report.allowed_columns == {"category": "ticket category, not personal"}
    assert report.column_types == {"customer_email": "email", "customer_phone": "phone", "account_ref": None}
    assert report.counts_by_type_action == {
        "email": {"pseudonymise": 3},  # 2 column values + 1 span in body
        "phone": {"mask": 3},  # 2 column values + 1 span
        "unclassified": {"mask": 3},
        "person_name": {"mask": 2},
        "payment_card": {"mask": 1},
    }
    assert report.counts_by_column == {"customer_email": 2, "customer_phone": 2, "account_ref": 3, "body": 5}
    assert report.free_text_columns == ["body"]


def test_report_is_json_and_holds_no_raw_values() -> None:
    _, report = apply_privacy_policy(pd.DataFrame(RAW), _policy(), Pseudonymiser(KEY))
    blob = json.dumps(report.to_dict())
    for value in RAW_VALUES:
        assert value not in blob
    assert json.loads(blob)["total_replacements"] == 12


def test_no_raw_values_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="llmops"):
        apply_privacy_policy(pd.DataFrame(RAW), _policy(), Pseudonymiser(KEY))
    assert caplog.records
    for value in RAW_VALUES:
        assert value not in caplog.text


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        ({"columns": {"customer_mail": {"action": "drop"}}}, "customer_mail"),
        ({"free_text": {"columns": ["notes"], "types": {"email": "mask"}}}, "notes"),
    ],
)
def test_policy_naming_missing_column_fails(overrides: dict[str, object], missing: str) -> None:
    with pytest.raises(ValueError, match=f"'{missing}'"):
        apply_privacy_policy(pd.DataFrame(RAW), _policy(**overrides), Pseudonymiser(KEY))


def test_pseudonymise_needs_a_pseudonymiser() -> None:
    with pytest.raises(ValueError, match="Pseudonymiser is required"):
        apply_privacy_policy(pd.DataFrame(RAW), _policy(free_text=None))


def test_pseudonymise_column_of_unknown_type_and_non_string_values() -> None:
    df = pd.DataFrame({"customer_id": [1001, 1002, 1001, None], "phone": [4930123456, None, 4930123456, 1]})
    policy = PrivacySpec.model_validate(
        {"columns": {"customer_id": {"action": "pseudonymise"}, "phone": {"action": "mask"}}}
    )
    out, report = apply_privacy_policy(df, policy, Pseudonymiser(KEY))
    ids = out["customer_id"].tolist()
    assert ids[0] == ids[2] != ids[1] and re.fullmatch(r"<value:[0-9a-f]{12}>", ids[0])
    assert pd.isna(ids[3])
    assert out["phone"].tolist()[0] == "[REDACTED]" and pd.isna(out["phone"][1])
    assert report.column_types == {"customer_id": None, "phone": None}


def test_duplicate_index_labels_and_object_columns() -> None:
    df = pd.DataFrame(
        {"note": ["call 030 1234567", None, "mail a@example.com"]}, index=[7, 7, 8], dtype=object
    )
    policy = PrivacySpec.model_validate(
        {"free_text": {"columns": ["note"], "types": {"phone": "mask", "email": "mask"}}}
    )
    out, _ = apply_privacy_policy(df, policy)
    assert out.index.tolist() == [7, 7, 8]
    assert out["note"].tolist() == ["call [PHONE]", None, "mail [EMAIL]"]


def test_free_text_skips_columns_replaced_as_a_whole() -> None:
    policy = _policy(
        columns={"body": {"action": "mask"}},
        free_text={"columns": ["body"], "types": {"email": "mask"}},
    )
    out, report = apply_privacy_policy(pd.DataFrame(RAW), policy, Pseudonymiser(KEY))
    assert report.free_text_columns == []
    assert out["body"].dropna().tolist() == ["[REDACTED]", "[REDACTED]"]


def test_detect_column_type() -> None:
    assert detect_column_type(["a@example.com", "b@example.org", "n/a"]) == "email"
    assert detect_column_type(["hello", "world"]) is None
    assert detect_column_type([]) is None
