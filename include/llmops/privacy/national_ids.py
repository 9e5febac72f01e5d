"""National identification numbers of European countries, validated with python-stdnum.

Shaped identifiers whose letters and checksum make chance matches rare are found anywhere: the
Italian codice fiscale, Spanish DNI and NIE, and the UK National Insurance number (stdnum has no
NINO module, so that one is its shape plus HMRC's allocation rules: no D, F, I, Q, U, V as either
prefix letter, no O second, none of the prefixes BG, GB, KN, NK, NT, TN, ZZ, suffix A-D; it carries no
checksum). All-digit identifiers (German Steuer-ID, French NIR, Dutch BSN) are found only after a cue
naming them: their checksums pass for one random digit run in ten or eleven.

Candidates are found by literal cues or by patterns that start with one literal-ish character, and
python-stdnum (imported when the detector first runs) decides.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from llmops.privacy import cues
from llmops.privacy.pii_types import Span

if TYPE_CHECKING:
    from collections.abc import Callable

_TYPE = "national_id"
# Uppercase letter not glued to a preceding word: codice fiscale, NIE or NINO starts here.
_LETTER_START = r"[A-Z](?<![^\W_][A-Z])"
_SHAPED_RX = re.compile(
    _LETTER_START + r"(?:"
    r"(?P<cf>[A-Z]{5}\d{2}[A-EHLMPRST]\d{2}[A-Z]\d{3}[A-Z])"
    r"|(?P<nie>(?<=[XYZ])[\- ]?\d{7}[\- ]?[A-Z])"
    r"|(?P<nino>[A-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D])"
    r")(?![^\W_])"
)
_DNI_RX = re.compile(r"\d(?<![\w.\-/]\d)\d{7}[\- ]?[A-Z](?![^\W_])")
_NINO_BAD_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
# Digits, optionally grouped by single spaces, dots or dashes: "36 574 261 809", "2 84 12 76 451 089 46".
_DIGITS_RX = re.compile(r"(?<![\w\-])\d(?:[ .\-]?\d){8,14}(?![\w\-]|[.,]\d)")
_CUE_REACH = 40
cues.define(
    _TYPE,
    "steuer-id",
    "Steuer-ID",
    "steuer-idnr",
    "Steuer-IdNr",
    "identifikationsnummer",
    "IdNr",
    "steueridentifikationsnummer",
    "steuerliche identifikationsnummer",
    "tax id",
    "tax identification number",
    "bsn",
    "burgerservicenummer",
    "nir",
    "insee",
    "numéro de sécurité sociale",
    "numero de securite sociale",
    "sécurité sociale",
    "n° de sécu",
    # Generic wording: the value must still pass one of the three checksums.
    "id number",
    "ID number",
    "identity number",
    "national id",
    "sofinummer",
    "sofi-nummer",
    "numéro insee",
    "numero insee",
    "personal id",
    "personal identification number",
    "identification number",
    "citizen service number",
)


def _nino_ok(value: str) -> bool:
    prefix = value[:2]
    return (
        prefix[0] not in "DFIQUV"
        and prefix[1] not in "DFIOQUV"
        and prefix not in _NINO_BAD_PREFIXES
        and (len(value) == 9 or re.fullmatch(r"[A-Z]{2} \d{2} \d{2} \d{2} [A-D]", value) is not None)
    )


@functools.cache
def _validators() -> dict[str, Callable[[str], bool]]:
    from stdnum.de import idnr
    from stdnum.es import dni, nie
    from stdnum.fr import nir
    from stdnum.it import codicefiscale
    from stdnum.nl import bsn

    return {
        "cf": codicefiscale.is_valid,
        "nie": nie.is_valid,
        "dni": dni.is_valid,
        "nino": _nino_ok,
        # Cued, all digits: tried in turn on the compacted digits.
        "idnr": idnr.is_valid,
        "nir": nir.is_valid,
        "bsn": bsn.is_valid,
    }


def detect_national_id(text: str) -> list[Span]:
    """IT codice fiscale, ES DNI/NIE, UK NINO anywhere; DE Steuer-ID, FR NIR, NL BSN after a cue."""
    ok = _validators()
    out: list[Span] = []
    for m in _SHAPED_RX.finditer(text):
        kind = m.lastgroup or ""
        value = text[m.start() : m.end()]
        if ok[kind](value):
            out.append(Span(m.start(), m.end(), _TYPE))
    for m in _DNI_RX.finditer(text):
        if ok["dni"](m.group()):
            out.append(Span(m.start(), m.end(), _TYPE))
    for m in cues.after_cues(text, _TYPE, _DIGITS_RX, _CUE_REACH):
        digits = re.sub(r"\D", "", m.group())
        if any(ok[kind](digits) for kind in ("idnr", "nir", "bsn")):
            out.append(Span(m.start(), m.end(), _TYPE))
    return out
