"""Formats of birth dates and national identifiers written the way people write them in tickets."""

from __future__ import annotations

import pytest

from llmops.privacy.pii import scan_text


def found(text: str, pii_type: str) -> list[str]:
    return [text[s.start : s.end] for s in scan_text(text) if s.pii_type == pii_type]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("DOB 1984/03/12, please update it", "1984/03/12"),
        ("date of birth: 1984.03.12", "1984.03.12"),
        ("born on 12 March, 1984 in Leeds", "12 March, 1984"),
        ("Geboortedatum: 12-03-1984", "12-03-1984"),
        ("fecha de nacimiento 12/03/1984", "12/03/1984"),
        ("data di nascita: 12.03.1984", "12.03.1984"),
    ],
)
def test_birth_dates_in_more_formats_and_languages(text: str, value: str) -> None:
    assert found(text, "date_of_birth") == [value]


@pytest.mark.parametrize(
    "text",
    ["the invoice of 1984/03/12 is attached", "delivered 12 March, 2024", "birth certificate copy attached"],
)
def test_dates_without_a_birth_cue_are_not_birth_dates(text: str) -> None:
    assert found(text, "date_of_birth") == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("DNI 12345678 Z for the contract", "12345678 Z"),
        ("my NIE is X 1234567 L", "X 1234567 L"),
        ("sofinummer 111222333 staat op de brief", "111222333"),
        ("citizen service number: 111222333", "111222333"),
    ],
)
def test_national_ids_with_spaces_and_more_cues(text: str, value: str) -> None:
    assert found(text, "national_id") == [value]


def test_a_bsn_shaped_number_without_a_cue_is_not_a_national_id() -> None:
    assert found("order 111222333 shipped", "national_id") == []
