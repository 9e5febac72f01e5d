"""The PII type table: a type registered from a test module is found, masked, pseudonymised and
accepted by the spec, without any core file changing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from llmops.privacy import pii_types
from llmops.privacy.pii import Pseudonymiser, redact_text, scan_text
from llmops.privacy.pii_types import PiiType, Span
from llmops.specs import SpecError, parse_spec

PROJECT = Path(__file__).resolve().parents[2]
EMPLOYEE_ID = re.compile(r"\bEMP-?(\d{6})\b")


def detect_employee_id(text: str) -> list[Span]:
    return [Span(m.start(), m.end(), "employee_id") for m in EMPLOYEE_ID.finditer(text)]


@pytest.fixture
def employee_id():
    registered = pii_types.register(
        PiiType(
            "employee_id",
            detect_employee_id,
            priority=65,  # after phone: a phone number wins an overlap
            normaliser=lambda value: EMPLOYEE_ID.sub(r"EMP\1", value.strip().upper()),
            description="company employee number",
        )
    )
    try:
        yield registered
    finally:
        pii_types.unregister("employee_id")


def _raw_spec() -> dict:
    return yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())


def test_a_registered_type_is_found_masked_pseudonymised_and_allowed_in_specs(employee_id) -> None:
    """Expect the scanner to find it, its mask to be derived from its name, formatting variants to
    share one pseudonym, and the spec's free-text policy to accept it."""
    text = "Escalated by EMP-004211, copy to anna@example.com"
    assert [(text[s.start : s.end], s.pii_type) for s in scan_text(text)] == [
        ("EMP-004211", "employee_id"),
        ("anna@example.com", "email"),
    ]
    masked, counts = redact_text(text, {"employee_id": "mask"})
    assert masked == "Escalated by [EMPLOYEE_ID], copy to anna@example.com"
    assert counts == {"employee_id": 1}
    tokens = Pseudonymiser(b"k" * 32)
    assert tokens.token("EMP-004211", "employee_id") == tokens.token("emp004211", "employee_id")

    raw = _raw_spec()
    raw["privacy"]["free_text"]["types"]["employee_id"] = "pseudonymise"
    assert parse_spec(raw).privacy.free_text.types["employee_id"] == "pseudonymise"


def test_without_the_registration_the_type_is_unknown_to_specs_and_scans() -> None:
    """Expect the spec and the scanner to refuse the type when nothing registered it."""
    raw = _raw_spec()
    raw["privacy"]["free_text"]["types"]["employee_id"] = "mask"
    with pytest.raises(
        SpecError, match="unknown PII type\\(s\\) 'employee_id'; known: credential, email, iban"
    ):
        parse_spec(raw)
    with pytest.raises(ValueError, match="unknown PII type"):
        scan_text("EMP-004211", ["employee_id"])


@pytest.mark.parametrize(("priority", "winner"), [(1, "mailbox"), (65, "email")])
def test_priority_decides_overlaps(priority: int, winner: str) -> None:
    """Expect the type with the lower priority number to win when two detectors claim one text."""

    def detect_mailbox(text: str) -> list[Span]:  # the local part of an address, as its own type
        return [Span(m.start(), m.end(), "mailbox") for m in re.finditer(r"[a-z]+@", text)]

    pii_types.register(PiiType("mailbox", detect_mailbox, priority=priority))
    try:
        (span,) = scan_text("write to anna@example.com")
    finally:
        pii_types.unregister("mailbox")
    assert span.pii_type == winner


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (PiiType("Employee", detect_employee_id, priority=99), "lowercase"),
        (PiiType("email", detect_employee_id, priority=99), "already registered"),
        (PiiType("badge", detect_employee_id, priority=10), "priority 10 is email's"),
    ],
)
def test_bad_registrations_are_refused(entry: PiiType, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        pii_types.register(entry)
