"""The residual check after redaction: a second engine, independent of the one that redacted.

Why independent: re-running the redacting detectors over their own output can only agree with them,
so a check built that way cannot fail. This engine shares no pattern or validator with
:mod:`llmops.privacy.detectors`: candidates come from deliberately loose patterns, and validation
from other libraries - libphonenumber's own matcher (``phonenumbers.PhoneNumberMatcher``) for phones,
python-stdnum for IBANs and card checksums, the standard library for IP addresses - and, for names,
the spaCy named-entity recogniser when it is installed.

It looks for the structured types (email, phone, payment_card, iban, us_ssn, ip_address), whose
validated matches are precise enough to stop a pipeline. Person names found by the recogniser are
reported as *suspected* (its own false alarms are common) and stop nothing. Masks and pseudonym
tokens the policy wrote are blanked before the scan, so they never count.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import pandas as pd

from llmops.privacy.name_engines import spacy_installed

log = logging.getLogger(__name__)

#: Types this engine can judge on its own.
CHECKED_TYPES = ("email", "phone", "payment_card", "iban", "us_ssn", "ip_address")
#: Rows the recogniser reads per column for suspected names (it is slow; a sample bounds the cost).
NAME_SAMPLE_ROWS = 200
_JOIN = "\n\x00\n"
_BATCH_CHARS = 1 << 20
# What the policy writes: "<email:0123456789ab>", "[EMAIL]", "[REDACTED]".
_OWN_MARKS = re.compile(r"<[a-z_]+:[0-9a-f]{12}>|\[[A-Z_]+\]")

_LOOSE_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_LOOSE_SSN = re.compile(r"(?<![\d\-])\d{3}-\d{2}-\d{4}(?![\d\-])")
_LOOSE_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])")
_LOOSE_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_LOOSE_CARD = re.compile(r"(?<![\d\-])\d(?:[ \-]?\d){12,18}(?![\d\-])")
_LOOSE_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")


@dataclass
class ResidualReport:
    """Counts only: what the independent engine still found, per type and per column."""

    found: dict[str, int] = field(default_factory=dict)
    by_column: dict[str, dict[str, int]] = field(default_factory=dict)
    suspected_names: dict[str, int] = field(default_factory=dict)
    name_rows_read: int = 0
    engine: str = "independent: loose patterns + libphonenumber + python-stdnum"

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": dict(sorted(self.found.items())),
            "by_column": {c: dict(sorted(t.items())) for c, t in sorted(self.by_column.items())},
            "suspected_names": dict(sorted(self.suspected_names.items())),
            "name_rows_read": self.name_rows_read,
            "engine": self.engine,
        }


def _card_ok(candidate: str) -> bool:
    from stdnum import luhn

    digits = re.sub(r"\D", "", candidate)
    return 13 <= len(digits) <= 19 and luhn.is_valid(digits)


def _iban_ok(candidate: str) -> bool:
    from stdnum import iban

    return iban.is_valid(candidate)


def _ip_ok(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _ssn_ok(candidate: str) -> bool:
    area = candidate[:3]
    return area not in ("000", "666") and not area.startswith("9") and candidate[4:6] != "00"


_CHECKS = (
    ("email", _LOOSE_EMAIL, None),
    ("us_ssn", _LOOSE_SSN, _ssn_ok),
    ("ip_address", _LOOSE_IPV4, _ip_ok),
    ("ip_address", _LOOSE_IPV6, _ip_ok),
    ("payment_card", _LOOSE_CARD, _card_ok),
    ("iban", _LOOSE_IBAN, _iban_ok),
)


def _phones(text: str) -> int:
    """Valid phone numbers libphonenumber's matcher finds, written with a "+" or separators (numbers
    with a country code anywhere; national formats of a few common regions)."""
    import phonenumbers

    found = set()
    for region in ("US", "GB", "DE", "FR"):
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            raw = match.raw_string
            # A bare digit run is as likely an order or account number: only written phones count.
            if "\x00" not in raw and not raw.isdigit():
                found.add(match.start)
    return len(found)


def _batches(texts: Sequence[str]) -> Iterable[str]:
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= _BATCH_CHARS:
            yield _JOIN.join(batch)
            batch, size = [], 0
    if batch:
        yield _JOIN.join(batch)


def scan_structured(texts: Sequence[str], types: Iterable[str] = CHECKED_TYPES) -> dict[str, int]:
    """Validated matches per type in ``texts`` (masks and pseudonyms blanked first)."""
    wanted = set(types) & set(CHECKED_TYPES)
    counts: Counter[str] = Counter()
    for joined in _batches(texts):
        blanked = _OWN_MARKS.sub(lambda m: " " * len(m.group()), joined)
        for pii_type, rx, ok in _CHECKS:
            if pii_type in wanted:
                counts[pii_type] += sum(1 for m in rx.finditer(blanked) if ok is None or ok(m.group()))
        if "phone" in wanted:
            counts["phone"] += _phones(blanked)
    return {t: n for t, n in counts.items() if n}


def _suspected_names(texts: Sequence[str], model: str) -> int:
    from llmops.privacy.name_engines import load_spacy

    nlp = load_spacy(model)
    blanked = [_OWN_MARKS.sub(lambda m: " " * len(m.group()), t) for t in texts]
    return sum(1 for doc in nlp.pipe(blanked, batch_size=64) for ent in doc.ents if ent.label_ == "PERSON")


def check_residual(
    df: pd.DataFrame,
    columns: Iterable[str],
    types: Iterable[str],
    name_model: str | None = None,
) -> ResidualReport:
    """Scan the redacted ``columns`` of ``df`` with the independent engine, for ``types`` the policy
    handles; names (``person_name`` in ``types``) are read on a sample when ``name_model`` is installed."""
    wanted = set(types)
    report = ResidualReport()
    for column in columns:
        texts = [v if isinstance(v, str) else str(v) for v in df[column].dropna().tolist()]
        found = scan_structured(texts, wanted)
        if found:
            report.by_column[column] = found
            for t, n in found.items():
                report.found[t] = report.found.get(t, 0) + n
        if "person_name" in wanted and name_model and spacy_installed(name_model):
            sample = texts[:NAME_SAMPLE_ROWS]
            report.name_rows_read += len(sample)
            n = _suspected_names(sample, name_model)
            if n:
                report.suspected_names[column] = n
    return report
