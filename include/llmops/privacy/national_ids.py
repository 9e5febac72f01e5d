"""National identification numbers of European countries, validated with python-stdnum.

Shaped identifiers whose letters and checksum make chance matches rare are found anywhere: the
Italian codice fiscale, Spanish DNI and NIE, and the UK National Insurance number (stdnum has no
NINO module, so that one is its shape plus HMRC's allocation rules: no D, F, I, Q, U, V as either
prefix letter, no O second, none of the prefixes BG, GB, KN, NK, NT, TN, ZZ, suffix A-D; it carries no
checksum; written "AB123456C", "AB 12 34 56 C" or "AB 123456 C"). The DNI may be grouped with dots
("12.345.678-Z"); an omocodic codice fiscale (digits written as letters L-V) is one too. All-digit
identifiers (German Steuer-ID, French NIR, Dutch BSN) are found only next to a cue naming them, after
it ("Steuer-ID: 36 574 261 809") or right before a trailing one ("111222333 (BSN)", "... is my tax
ID"): their checksums pass for one random digit run in ten or eleven. After an English "social
security" cue only the NIR's checksum is tried (a US SSN would pass the BSN's one time in eleven).
Lowercase codici fiscali and NINOs count only after their own cue.

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
    # Omocodic codes (a clash of two people's codes) write digits as the letters L-V.
    r"(?P<cf>[A-Z]{5}[\dLMNP-V]{2}[A-EHLMPRST][\dLMNP-V]{2}[A-Z][\dLMNP-V]{3}[A-Z])"
    r"|(?P<nie>(?<=[XYZ])[\- ]?\d{7}[\- ]?[A-Z])"
    r"|(?P<nino>[A-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D])"
    r")(?![^\W_])"
)
# One pass over digits for two shapes. The DNI: 8 digits, or grouped with dots as on the card
# ("12.345.678-Z"), then the check letter. The NIR and the Steuer-ID in their official grouping
# ("1 85 05 78 006 084 36", "36 574 261 809"): grouping and checksum (mod 97; ISO 7064 plus the
# Steuer-ID's one-repeated-digit rule) together are rare enough by chance to be found without a cue;
# compact or otherwise grouped, they still need one.
_DIGIT_START_RX = re.compile(
    r"\d(?<![\w.\-/]\d)(?:"
    r"(?P<dni>(?:\d{7}|\d\.\d{3}\.\d{3})[\- ]?[A-Z](?![^\W_]))"
    r"|(?<!,\d)(?P<grouped>(?<=[12]) \d{2} \d{2} \d{2} \d{3} \d{3} \d{2}|\d \d{3} \d{3} \d{3})(?![\w\-]|[.,]\d| \d)"
    r")"
)
_NINO_BAD_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
_NINO_LAYOUTS = re.compile(r"[A-Z]{2}(?:\d{6}|(?: \d{2}){3} | \d{6} ?)[A-D]")
# Lowercase codice fiscale and NINO, after their own cue only ("codice fiscale rssmra85t10a562s").
_LOWER_CF_RX = re.compile(
    r"(?i:[a-z]{6}[\dlmnp-v]{2}[a-ehlmprst][\dlmnp-v]{2}[a-z][\dlmnp-v]{3}[a-z])(?![^\W_])"
)
_LOWER_NINO_RX = re.compile(r"[a-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[a-d](?![^\W_])")
# Digits, optionally grouped by single spaces, dots or dashes: "36 574 261 809", "2 84 12 76 451 089 46".
# French grouping uses (narrow) no-break spaces: "2 95 10 99 126 111 93" with U+00A0 or U+202F.
_DIGITS_RX = re.compile(r"(?<![\w\-])\d(?:[ .\-\u00a0\u202f]?\d){8,14}(?![\w\-]|[.,]\d)")
_CUE_REACH = 40
# Digits right before a cue ("111222333 (BSN)", "36574261809, my tax ID") or a few words before it,
# linked by a verb ("36574261809, that's my Steuer-ID", "111222333 was the BSN on the old contract").
# Searched backwards from each cue's end, which is where the pattern must end.
_EMPTY = re.compile("")
_SPECIFIC_CUES = (
    "steuer-id", "steuer-idnr", "steuerid", "idnr", "steueridentifikationsnummer", "identifikationsnummer",
    "steuer-identifikationsnummer", "tax id", "tax identification number", "bsn", "burgerservicenummer",
    "sofinummer", "citizen service number", "nir", "insee", "numéro de sécurité sociale", "sécurité sociale",
)  # fmt: skip
_WORD = r"[^\W\d_]+(?:['’][^\W\d_]+)?[ \t]+"
_DIGITS_THEN_CUE = re.compile(
    r"(?P<id>(?<![\w\-])\d(?:[ .\-\u00a0\u202f]?\d){8,14})[ \t]*(?:"
    r"[,\-–—][ \t]*(?:(?:my|his|her|their|the|a)[ \t]+)?|(?=\()"
    rf"|,?[ \t]*(?:{_WORD}){{0,2}}(?:is|was|as|are|were|being|that['’]s|it['’]s)[ \t]+(?:{_WORD}){{0,4}}"
    rf")\(?(?i:{cues.trie_pattern(_SPECIFIC_CUES)})\Z"
)
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
    "tax ID",
    "tax ID number",
    "tax ID no",
    "TIN",
    "Steuer ID",
    "Steuer-Nr",
    "Steueridentnummer",
    "Steuer-Identifikationsnummer",
    "SteuerID",
    "SteuerIdNr",
    "tax-id",
    "Tax-ID",
    "Identifikationsnr",
    "national ID",
    "national identity number",
    "national identification number",
    "personal ID",
    "personal number",
    "ID no",
    "ID-Nr",
    "BSN-nummer",
    "burger service nummer",
    "burgerservicenr",
    "persoonsnummer",
    "numéro NIR",
    "numero NIR",
    "numéro de sécu",
    "numero de secu",
    "carte vitale",
    "n° SS",
    "ID no.",
    "ID #",
    "ID card number",
    "identity card number",
    "identification no",
    # Field names of pasted records and payloads: tax_id=..., "nationalId": "...".
    "tax_id",
    "taxId",
    "national_id",
    "nationalId",
    "id_number",
    "steuer_id",
)
# A social security number after an English cue is a US SSN unless it is a French NIR (15 digits,
# mod 97): these cues try the NIR checksum only, so a US number never passes the BSN 11-test here.
_NIR_ONLY = "national_id:nir"
# ("social security" is also the US SSN's cue: one spelling, two groups; a longer one would hide it.)
cues.define(_NIR_ONLY, "social security", "social insurance number", "securite sociale")
_LOWER_CUES = "national_id:lower"
cues.define(_LOWER_CUES, "codice fiscale", "CF", "C.F.", "NINO", "NI number", "national insurance number")


def _nino_ok(value: str) -> bool:
    prefix = value[:2]
    return (
        prefix[0] not in "DFIQUV"
        and prefix[1] not in "DFIOQUV"
        and prefix not in _NINO_BAD_PREFIXES
        and _NINO_LAYOUTS.fullmatch(value) is not None
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


def _cued_spans(text: str, ok: dict[str, Callable[[str], bool]]) -> list[Span]:
    """All-digit IDs after (or right before) a cue, lowercase CF and NINO after their own cue."""
    out: list[Span] = []
    for group, kinds in ((_TYPE, ("idnr", "nir", "bsn")), (_NIR_ONLY, ("nir",))):
        for m in cues.after_cues(text, group, _DIGITS_RX, _CUE_REACH):
            digits = re.sub(r"\D", "", m.group())
            if any(ok[kind](digits) for kind in kinds):
                out.append(Span(m.start(), m.end(), _TYPE))
    for cue in cues.after_cues(text, _TYPE, _EMPTY, 0):
        m = _DIGITS_THEN_CUE.search(text, max(0, cue.start() - 90), cue.start())
        if m is not None and any(
            ok[kind](re.sub(r"\D", "", m.group("id"))) for kind in ("idnr", "nir", "bsn")
        ):
            out.append(Span(m.start("id"), m.end("id"), _TYPE))
    for rx, kind in ((_LOWER_CF_RX, "cf"), (_LOWER_NINO_RX, "nino")):
        for m in cues.after_cues(text, _LOWER_CUES, rx, _CUE_REACH):
            if m.group().islower() and ok[kind](m.group().upper()):
                out.append(Span(m.start(), m.end(), _TYPE))
    return out


def detect_national_id(text: str) -> list[Span]:
    """IT codice fiscale, ES DNI/NIE, UK NINO anywhere; DE Steuer-ID, FR NIR, NL BSN next to a cue."""
    ok = _validators()
    out: list[Span] = []
    for m in _SHAPED_RX.finditer(text):
        kind = m.lastgroup or ""
        value = text[m.start() : m.end()]
        if ok[kind](value):
            out.append(Span(m.start(), m.end(), _TYPE))
    for m in _DIGIT_START_RX.finditer(text):
        if m.group("dni"):
            valid = ok["dni"](m.group().replace(".", ""))
        else:
            digits = m.group().replace(" ", "")
            valid = ok["nir" if len(digits) == 15 else "idnr"](digits)
        if valid:
            out.append(Span(m.start(), m.end(), _TYPE))
    return out + _cued_spans(text, ok)
