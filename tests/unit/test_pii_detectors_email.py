"""Obfuscated e-mail addresses: found like plain ones, and normalised to the same "local@domain"."""

from __future__ import annotations

import pytest

from llmops.privacy import pii_types
from llmops.privacy.pii import scan_text


def emails(text: str) -> list[str]:
    return [text[s.start : s.end] for s in scan_text(text) if s.pii_type == "email"]


@pytest.mark.parametrize(
    ("text", "email"),
    [
        ("write to anna.k3 at example dot com today", "anna.k3 at example dot com"),
        ("anna [at] example [dot] com", "anna [at] example [dot] com"),
        ("mail anna(at)example(dot)com.", "anna(at)example(dot)com"),
        ("reach anna at example.com if it fails", "anna at example.com"),
        ("reach anna AT example DOT com if it fails", "anna AT example DOT com"),
        ("s.lopez AT mail DOT example DOT org", "s.lopez AT mail DOT example DOT org"),
        ("jack.gupta(at)company(dot)co(dot)uk please", "jack.gupta(at)company(dot)co(dot)uk"),
        ("ahmed1984 at company dot co dot uk, thanks", "ahmed1984 at company dot co dot uk"),
        ("x.y [at] uni-hamburg.de", "x.y [at] uni-hamburg.de"),
        ("plain anna@example.com stays", "anna@example.com"),
    ],
)
def test_obfuscated_email_found(text: str, email: str) -> None:
    """Expect bracketed and spelled-out "at" / "dot" addresses to be found whole."""
    assert emails(text) == [email]


@pytest.mark.parametrize(
    "text",
    [
        "look at this dot com bubble",
        "meet at home",
        "I'm at work dot",
        "visit us at example.com for details",
        "Look at example.com first",
        "we met at 10.30 today",
        "stay at home. Then call",
        "the team at example dot comedy",
        "WE ARE AT HOME DOT COM",
    ],
)
def test_prose_with_at_is_not_email(text: str) -> None:
    """Expect English sentences with "at" and "dot" not to be taken for addresses."""
    assert emails(text) == []


@pytest.mark.parametrize(
    "value",
    [
        "anna.k3@example.com",
        "Anna.K3@Example.com",
        "anna.k3 at example dot com",
        "anna.k3 [at] example [dot] com",
        "anna.k3(at)example(dot)com",
        "anna.k3 AT example DOT com",
        "anna.k3 at example.com",
    ],
)
def test_obfuscated_email_normalises_to_plain_address(value: str) -> None:
    """Expect every spelling of one address to normalise alike, so pseudonyms agree."""
    assert pii_types.get("email").normaliser(value) == "anna.k3@example.com"
