"""The table of personal-data types: one entry per type, from which the spec's allowed types, the
scanner's detectors and overlap priority, masks and pseudonym normalisation are all derived.

An entry names its detector (a function ``text -> list[Span]``, given directly or as
``"module:function"`` and imported when first used, so the spec loader reads this table without
compiling a single pattern), how a value is normalised before it is pseudonymised (formatting
variants of one value share a token), its mask, and its priority: when spans of two types overlap,
the lower priority number wins. Adding a type is one :func:`register` call with its detector.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable


class Span(NamedTuple):
    """A detected PII occurrence: ``text[start:end]`` is of ``pii_type``."""

    start: int
    end: int
    pii_type: str


def _nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value).strip()


def as_is(value: str) -> str:
    return _nfc(value)


def lowercase(value: str) -> str:
    return _nfc(value).lower()


_OBFUSCATED_AT = re.compile(r"[ ]?[\[(]at[\])][ ]?|[ ]at[ ]", re.IGNORECASE)
_OBFUSCATED_DOT = re.compile(r"[ ]?[\[(]dot[\])][ ]?|[ ]dot[ ]", re.IGNORECASE)


def email_address(value: str) -> str:
    """The canonical "local@domain" (lowercase) of a plain or obfuscated address, so that
    "Anna [at] Example [dot] com" and "anna@example.com" share a pseudonym."""
    value = _nfc(value)
    if "@" not in value:
        value = _OBFUSCATED_DOT.sub(".", _OBFUSCATED_AT.sub("@", value, count=1))
    return value.lower()


def digits_only(value: str) -> str:
    return "".join(ch for ch in _nfc(value) if ch.isdigit())


def compact_upper(value: str) -> str:
    return "".join(_nfc(value).split()).upper()


def ip_address(value: str) -> str:
    import ipaddress

    value = _nfc(value)
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return value.lower()


def casefolded_words(value: str) -> str:
    return " ".join(_nfc(value).split()).casefold()


@dataclass(frozen=True)
class PiiType:
    """One kind of personal data the scanner finds."""

    name: str
    detector: Callable[[str], list[Span]] | str = field(compare=False)
    priority: int
    normaliser: Callable[[str], str] = field(default=as_is, compare=False)
    mask: str = ""
    description: str = ""

    @property
    def mask_text(self) -> str:
        return self.mask or f"[{self.name.upper()}]"

    def detect(self, text: str) -> list[Span]:
        return _resolve_detector(self)(text)


_DETECTORS: dict[str, Callable[[str], list[Span]]] = {}


def _resolve_detector(pii_type: PiiType) -> Callable[[str], list[Span]]:
    found = _DETECTORS.get(pii_type.name)
    if found is None:
        if callable(pii_type.detector):
            found = pii_type.detector
        else:
            module, _, name = pii_type.detector.partition(":")
            found = getattr(importlib.import_module(module), name)
        _DETECTORS[pii_type.name] = found
    return found


REGISTRY: dict[str, PiiType] = {}


def register(pii_type: PiiType) -> PiiType:
    """Add a type (its name must be new, lowercase, and not collide with another's priority)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", pii_type.name):
        raise ValueError(f"PII type {pii_type.name!r}: lowercase letters, digits and '_' only")
    if pii_type.name in REGISTRY:
        raise ValueError(f"PII type {pii_type.name!r} is already registered")
    taken = {t.priority: t.name for t in REGISTRY.values()}
    if pii_type.priority in taken:
        raise ValueError(
            f"PII type {pii_type.name!r}: priority {pii_type.priority} is {taken[pii_type.priority]}'s"
        )
    REGISTRY[pii_type.name] = pii_type
    return pii_type


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)
    _DETECTORS.pop(name, None)


def names() -> tuple[str, ...]:
    """Every type, highest priority first (the order overlaps are resolved in)."""
    return tuple(t.name for t in sorted(REGISTRY.values(), key=lambda t: t.priority))


def get(name: str) -> PiiType:
    return REGISTRY[name]


def masks() -> dict[str, str]:
    return {name: REGISTRY[name].mask_text for name in names()}


_DETECTOR_MODULE = "llmops.privacy.detectors"
# Checksum-validated types come before looser ones, so a card number is never reported as a phone;
# a credential comes first of all (a token can contain anything, and must be removed whole).
for _entry in (
    PiiType(
        "credential",
        "llmops.privacy.credentials:detect_credential",
        5,
        as_is,
        mask="[CREDENTIAL]",
        description="secret: API key, token, private key or password",
    ),
    PiiType("email", f"{_DETECTOR_MODULE}:detect_email", 10, email_address, description="e-mail address"),
    PiiType(
        "iban", f"{_DETECTOR_MODULE}:detect_iban", 20, compact_upper, description="IBAN (ISO 13616 mod-97)"
    ),
    PiiType(
        "national_id",
        "llmops.privacy.national_ids:detect_national_id",
        25,  # checksum and cue: before cards and phones, which its digits could also pass for
        compact_upper,
        mask="[NATIONAL_ID]",
        description="national identification number (UK NINO, DE Steuer-ID, FR NIR, ES DNI/NIE, NL BSN, IT CF)",
    ),
    PiiType(
        "payment_card",
        f"{_DETECTOR_MODULE}:detect_payment_card",
        30,
        digits_only,
        description="card number (Luhn)",
    ),
    PiiType(
        "us_ssn",
        f"{_DETECTOR_MODULE}:detect_us_ssn",
        40,
        digits_only,
        description="US social security number",
    ),
    PiiType(
        "ip_address",
        f"{_DETECTOR_MODULE}:detect_ip_address",
        50,
        ip_address,
        description="IPv4 or IPv6 address",
    ),
    PiiType(
        "date_of_birth",
        "llmops.privacy.birth_dates:detect_date_of_birth",
        55,  # a cued date is never a phone number
        as_is,
        mask="[DATE_OF_BIRTH]",
        description="date of birth (a date after a birth cue)",
    ),
    PiiType("phone", f"{_DETECTOR_MODULE}:detect_phone", 60, digits_only, description="phone number"),
    PiiType(
        "person_name",
        "llmops.privacy.names:detect_person_name",
        70,
        casefolded_words,
        description="person name (gazetteer and cues)",
    ),
):
    register(_entry)
