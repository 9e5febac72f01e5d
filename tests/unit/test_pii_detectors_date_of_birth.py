"""Dates of birth: a real date right after a birth cue; other dates stay unmatched."""

from __future__ import annotations

import pytest

from llmops.privacy.pii import scan_text


def births(text: str) -> list[str]:
    return [text[s.start : s.end] for s in scan_text(text) if s.pii_type == "date_of_birth"]


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("DOB: 1984-03-12, member since 2019", "1984-03-12"),
        ("D.O.B. 12/03/1984 as on the passport", "12/03/1984"),
        ("date of birth 03/25/1979 (US format)", "03/25/1979"),
        ("I was born on 12 March 1984 in Leeds", "12 March 1984"),
        ("Born on March 12, 1984.", "March 12, 1984"),
        ("her birthday is 4th July 1990", "4th July 1990"),
        ("geboren am 12.03.1984 in Köln", "12.03.1984"),
        ("né le 5 mars 1977 à Lyon", "5 mars 1977"),
        ("Date of Birth: 7 Sept 2001", "7 Sept 2001"),
    ],
)
def test_date_of_birth_positive(text: str, date: str) -> None:
    """Expect the date after the cue, and not the cue, to be the span."""
    assert births(text) == [date]


@pytest.mark.parametrize(
    "text",
    [
        "delivered on 12/03/1984 as promised",  # a date without a cue
        "the order of March 12, 1984 was archived",
        "DOB: unknown, ask the customer",
        "DOB 31/02/1984 is not a date",
        "born on the 4th of July, ship by 2024-07-04",  # date too far from the cue
        "birthday party on Friday",
        "geboren am Rhein, Termin 12.03.2024",
    ],
)
def test_date_of_birth_negative(text: str) -> None:
    """Expect no date of birth without a cue right before a real date."""
    assert births(text) == []
