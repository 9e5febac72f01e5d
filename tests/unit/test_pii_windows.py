"""The windowed structured detectors find exactly what the whole-text detectors find.

llmops.privacy.windows runs each structured detector's pattern only in the windows of a batch that can
hold a value. These tests build text from the pieces such values are made of (digit runs, the
separators phone numbers use, country codes, colons, cues, NULs between rows, Latin-1 and wider
letters) so that windows start and end in every awkward place, and compare with the detectors run
over the whole text.
"""

from __future__ import annotations

import random

import pytest

from llmops.privacy import detectors, pii, windows
from llmops.privacy.pii_types import Span

PIECES = (
    " ", " ", " ", "-", ".", "/", "(", ")", "+", ":", "::", "(0)", ", ", "#", "x", "word", "the",
    " at ", "@", "DE", "GB", "NL", "AB", "WEST", "ssn", "SSN: ", "social security ", "Tel ",
    "é", "ł", "Müller", "\n", "$", "12/27", "2026-02-22", "10:30", "v1.2.3", "fe80", "ab", "\x00",
)  # fmt: skip
WHOLE = {
    "phone": detectors.detect_phone,
    "payment_card": detectors.detect_payment_card,
    "iban": detectors.detect_iban,
    "us_ssn": detectors.detect_us_ssn,
    "ip_address": detectors.detect_ip_address,
}


def _digits(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789") for _ in range(rng.choice((1, 2, 3, 3, 4, 4, 5, 7, 9, 10, 16))))


def _text(rng: random.Random, n: int) -> str:
    return "".join(_digits(rng) if rng.random() < 0.45 else rng.choice(PIECES) for _ in range(n))


def _valid_values(rng: random.Random) -> list[str]:
    """Values the detectors accept, so the comparison also covers hits (not only rejections)."""
    return [
        "+49 30 1234567",
        "+1 (415) 555-0199",
        "020 7946 0958",
        "4111 1111 1111 1111",
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "123-45-6789",
        "SSN 123 45 6789",
        "192.168.0.1",
        "2001:db8::1",
        "fe80::1%eth0",
        f"+44 20 {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}",
    ]


def _rows(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        parts = [_text(rng, rng.randrange(1, 40))]
        if rng.random() < 0.5:
            parts.append(rng.choice(_valid_values(rng)))
            parts.append(_text(rng, rng.randrange(0, 10)))
        rows.append(rng.choice(("", " ", "\n")).join(parts).replace("\x00", " "))
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_windowed_detectors_equal_whole_text_detectors(seed: int) -> None:
    text = "\x00".join(_rows(seed, 400))
    found = windows.locate(text)
    assert found is not None
    for name, whole in WHOLE.items():
        fast = detectors.windowed(whole)
        assert fast is not None
        assert sorted(fast(text, found)) == sorted(whole(text)), name


@pytest.mark.parametrize("seed", range(3))
def test_batched_scan_equals_per_row_scan_on_awkward_text(seed: int) -> None:
    rows = _rows(100 + seed, 400)
    types = tuple(WHOLE)
    expected = [pii._resolve([s for t in types for s in WHOLE[t](row)]) for row in rows]
    assert pii.scan_many(rows, types) == expected


def test_text_with_non_ascii_digits_is_scanned_whole() -> None:
    """\\d matches Arabic-Indic digits: no windows, the whole-text detectors run."""
    text = "call +49 30 ١٢٣٤٥٦٧ or +49 30 1234567"
    assert windows.locate(text) is None
    assert pii.scan_text(text, ["phone"]) == detectors.detect_phone(text)
    assert Span(5, 19, "phone") in pii.scan_text(text, ["phone"])  # the digits windows would not see


def test_wide_text_without_other_digits_has_windows() -> None:
    text = "Łukasz: +48 512 345 678, 我的电话 +86 138 1234 5678"
    found = windows.locate(text)
    assert found is not None
    assert sorted(detectors.windowed(detectors.detect_phone)(text, found)) == sorted(
        detectors.detect_phone(text)
    )


def test_a_detector_registered_in_place_of_the_shipped_one_runs_as_it_is() -> None:
    assert detectors.windowed(lambda text: []) is None
