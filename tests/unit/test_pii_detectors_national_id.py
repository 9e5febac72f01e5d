"""National identification numbers: checksummed shapes found anywhere, all-digit ones after a cue."""

from __future__ import annotations

import pytest

from llmops.privacy.pii import scan_text


def ids(text: str) -> list[tuple[str, str]]:
    return [(text[s.start : s.end], s.pii_type) for s in scan_text(text) if s.pii_type == "national_id"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("My NI number is JG 10 37 21 B", "JG 10 37 21 B"),
        ("national insurance AB123456C on the payslip", "AB123456C"),
        ("Meine Steuer-ID: 36 574 261 809", "36 574 261 809"),
        ("steuerliche Identifikationsnummer 36574261809 liegt vor", "36574261809"),
        ("mon numéro de sécurité sociale est 2 95 10 99 126 111 93", "2 95 10 99 126 111 93"),
        ("NIR 295109912611193 joint", "295109912611193"),
        ("DNI 54362315K, calle Mayor", "54362315K"),
        ("NIE X-2482300-W para el contrato", "X-2482300-W"),
        ("mijn BSN is 111222333", "111222333"),
        ("codice fiscale RCCMNL83S18D969H allegato", "RCCMNL83S18D969H"),
        ("tax id 36574261809 for the invoice", "36574261809"),
    ],
)
def test_national_id_positive(text: str, value: str) -> None:
    """Expect the identifier, and only it, to be reported as a national id."""
    assert ids(text) == [(value, "national_id")]


@pytest.mark.parametrize(
    "text",
    [
        "order 111222333 shipped",  # valid BSN checksum, but no cue
        "ticket 36574261809 closed",  # valid Steuer-ID, but no cue
        "BSN 111222334 has a bad checksum",
        "Steuer-ID 36574261808 mistyped",
        "DNI 54362315A has the wrong letter",
        "codice fiscale RCCMNL83S18D969A wrong check letter",
        "NI number DQ 12 34 56 C uses a D prefix",
        "NI number GB 12 34 56 C is not allocated",
        "part no. QQ123456E has no A-D suffix",
        "SKU ABCDEF12G34H567I is a product code",
    ],
)
def test_national_id_negative(text: str) -> None:
    """Expect no national id without its cue, with a bad checksum or against allocation rules."""
    assert ids(text) == []


def test_national_id_wins_over_phone_and_card() -> None:
    """Expect a cued NIR (15 digits, grouped like a phone number) to be one national id."""
    text = "NIR: 2 95 10 99 126 111 93, merci"
    assert [s.pii_type for s in scan_text(text)] == ["national_id"]
