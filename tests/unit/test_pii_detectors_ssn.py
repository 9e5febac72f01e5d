"""US social security numbers without dashes: found after a cue, and only there."""

from __future__ import annotations

import pytest

from llmops.privacy.pii import scan_text


def ssns(text: str) -> list[str]:
    return [text[s.start : s.end] for s in scan_text(text) if s.pii_type == "us_ssn"]


@pytest.mark.parametrize(
    ("text", "ssn"),
    [
        ("My SSN is 123 45 6789, please update the file", "123 45 6789"),
        ("SSN: 123456789", "123456789"),
        ("my social security number is 234-56-7890.", "234-56-7890"),
        ("Social Security no. 123 45 6789 on the W-2", "123 45 6789"),
        ("SS# 345678901 for payroll", "345678901"),
        ("taxpayer id 456 78 9012 (individual)", "456 78 9012"),
        ("order 4411 shipped; ssn 123-45-6789", "123-45-6789"),
    ],
)
def test_cued_ssn_positive(text: str, ssn: str) -> None:
    """Expect spaced and unseparated numbers after a cue to be SSNs, dashed ones anywhere."""
    assert ssns(text) == [ssn]


@pytest.mark.parametrize(
    "text",
    [
        "order 123456789 shipped",  # no cue
        "tracking 123 45 6789 arrives Monday",  # no cue
        "SSN 666 12 3456 is not issued",  # area 666
        "SSN: 900123456",  # area 9xx
        "SSN 123 00 4567",  # group 00
        "SSN on file. Your order number, placed much later in the week, is 123456789",  # too far
        "SSN 1234567890 has ten digits",
        "SSN 123 456 789 is grouped 3-3-3",
        "SSN 123-45 6789 mixes separators",
    ],
)
def test_cued_ssn_negative(text: str) -> None:
    """Expect no SSN without a cue, beyond the cue's reach, or against the SSA rules."""
    assert ssns(text) == []
