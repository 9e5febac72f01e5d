"""The credential detector: provider tokens, JWTs, private keys, URL passwords and cued passwords,
found in ticket prose, with prose after a cue ("password: please reset it") left alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmops.privacy.credentials import looks_secret
from llmops.privacy.pii import redact_text, scan_many, scan_text

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n"
    "-----END RSA PRIVATE KEY-----"
)


def credentials(text: str) -> list[str]:
    return [text[s.start : s.end] for s in scan_text(text) if s.pii_type == "credential"]


@pytest.mark.parametrize(
    ("template", "secret"),
    [
        ("our key AKIAIOSFODNN7EXAMPLE stopped working", "AKIAIOSFODNN7EXAMPLE"),
        ("temporary creds ASIAY34FZKBOKMUTVV7A expire at noon", "ASIAY34FZKBOKMUTVV7A"),
        (
            "aws_secret_access_key = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        (
            "AWS secret key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY (rotated yesterday)",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        (
            "pushed with 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, it failed",
            "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",
        ),
        (
            "oauth token gho_16C7e42F292c6912E7710c838347Ae178B4a now",
            "gho_16C7e42F292c6912E7710c838347Ae178B4a",
        ),
        (
            "PAT github_pat_11ABCDEFG0abcdefghijkl_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456 in CI",
            "github_pat_11ABCDEFG0abcdefghijkl_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456",
        ),
        ("Stripe says sk_live_4eC39HqLyjWDarjtT1zdp7dc is invalid", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("restricted rk_live_4eC39HqLyjWDarjtT1zdp7dc leaked", "rk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("publishable pk_live_4eC39HqLyjWDarjtT1zdp7dc in the page", "pk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        (
            "bot token xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx was revoked",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        ),
        (
            "maps key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY returns 403",
            "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
        ),
        (f"the API returns 401 for Bearer {JWT} since Monday", JWT),
        ("connect to postgres://app:S3cr3t-Pa55@db.internal:5432/shop fails", "S3cr3t-Pa55"),
        ("password: Welcome2024!", "Welcome2024!"),
        ("My password is hunter2, can you reset it?", "hunter2"),
        ("DB_PASSWORD=tr0ub4dor&3 in the .env file", "tr0ub4dor&3"),
        ("pwd=Zx9#kLm2 was rejected", "Zx9#kLm2"),
        ("the passcode is 482913.", "482913"),
        ('config has api_key: "9f8e7d6c5b4a39281706f5e4d3c2b1a0"', "9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
        ("API key: 3kF9-xq2P-77Lm-Rz0w and it still fails", "3kF9-xq2P-77Lm-Rz0w"),
        ("Passwort: Sommer2024 funktioniert nicht", "Sommer2024"),
        ("mot de passe : Soleil!77", "Soleil!77"),
    ],
)
def test_credential_positive(template: str, secret: str) -> None:
    """Expect exactly the secret, not its cue or surroundings, to be the credential span."""
    assert credentials(template) == [secret]


def test_private_key_block_is_covered_from_begin_to_end() -> None:
    """Expect the whole PEM block, and nothing after it, to be one credential."""
    text = f"Here is the key we use:\n{PEM}\nThanks, Anna"
    assert credentials(text) == [PEM]


def test_truncated_private_key_is_covered_to_the_end_of_its_row_only() -> None:
    """Expect a key without its END line to be masked to the end of its own row, not the next."""
    rows = ["key below\n" + PEM.rsplit("\n", 1)[0], "next row: order 48213 shipped"]
    spans = scan_many(rows, ["credential"])
    assert [rows[0][s.start : s.end] for s in spans[0]] == [PEM.rsplit("\n", 1)[0]]
    assert spans[1] == []


@pytest.mark.parametrize(
    "text",
    [
        "password: please reset it",
        "Password: Please reset it",
        "my password is expired again",
        "password reset link: https://example.com/reset?token=abc",
        "the password was changed on 2024-01-02 by support",
        "password: ********",
        "password: <your password>",
        "password = ${DB_PASSWORD}",
        "postgres://user:password@localhost:5432/db is the template",
        "postgres://db.internal:5432/shop has no credentials",
        "secretary: John Smith",
        "the secret is out",
        "AKIAIOSFODNN7EXAMPL is one short",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc is a test key",
        "XAKIAIOSFODNN7EXAMPLE glued to a word",
        "eyJhbGciOiJIUzI1NiJ9.not-base64-json.sig is not a token",
        "eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxIn0.c2ln has no alg",
        "passcode: 12",
        "slot 14:00-16:00, loyalty number 48213, PIN 1234",
        "-----BEGIN PUBLIC KEY----- is fine to share",
        "[CREDENTIAL] and password: [CREDENTIAL] after masking",
        "password: <credential:3fa9c2e81b07> after pseudonymisation",
    ],
)
def test_credential_negative(text: str) -> None:
    """Expect prose, placeholders, masks, near misses and public material to stay unmatched."""
    assert credentials(text) == []


def test_a_credential_wins_over_the_types_it_contains() -> None:
    """Expect a token holding digits and an e-mail-like URL to be masked whole as one credential."""
    text = "use https://anna:Xy7!pQ2w9@example.com and 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"
    masked, counts = redact_text(text, {"credential": "mask", "email": "mask", "phone": "mask"})
    assert masked == "use https://anna:[CREDENTIAL]@example.com and [CREDENTIAL]"
    assert counts == {"credential": 2}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("hunter2", True), ("4821", True), ("Welcome", False), ("reset", False), ("aaaa1111", False)],
)
def test_looks_secret(value: str, expected: bool) -> None:
    assert looks_secret(value) is expected


def test_detect_secrets_is_imported_only_when_the_detector_runs() -> None:
    """Expect reading the type table (as the spec loader does) to leave detect_secrets unimported."""
    code = (
        "import sys; from llmops.privacy import pii_types; pii_types.names(); "
        "assert 'detect_secrets' not in sys.modules; "
        "pii_types.get('credential').detect('x'); assert 'detect_secrets' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
