"""Phone numbers in international and national formats, with libphonenumber where the rules are unsure."""

from __future__ import annotations

import pytest

from llmops.privacy.pii import scan_text


def phones(text: str) -> list[str]:
    return [text[s.start : s.end] for s in scan_text(text) if s.pii_type == "phone"]


@pytest.mark.parametrize(
    ("text", "phone"),
    [
        ("call 07700 900123 now", "07700 900123"),
        ("E.164: +447700900123.", "+447700900123"),
        ("ring +44(0)7911 123456 today", "+44(0)7911 123456"),
        ("Berlin office +49 (0)30 1234567", "+49 (0)30 1234567"),
        ("mi móvil es 626 172 268", "626 172 268"),
        ("cellulare 347 1234567", "347 1234567"),
    ],
)
def test_phone_found(text: str, phone: str) -> None:
    """Expect international forms and national forms that libphonenumber validates to be phones."""
    assert phones(text) == [phone]


@pytest.mark.parametrize(
    "text",
    [
        "Reference 4857 0442 1381 4384 from the payment terminal",
        "Order number 483320271 still shows as processing.",
        "The validator rejects 71 805 291 365, it has a wrong check digit.",
        "app crashes on version 10.0.19041.1",
        "delivered on 12.03.2024",
        "Your form rejects 000-08-1712 as an SSN",
        "Postcode 12 345 678 is wrong",
        "Tracking number 9400 2362 4759 3544 0169 99",
    ],
)
def test_not_a_phone(text: str) -> None:
    """Expect references, order numbers, IDs, versions and dates not to be phones."""
    assert phones(text) == []
