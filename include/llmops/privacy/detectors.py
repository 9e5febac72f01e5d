"""Detectors of personal data in text, one function per type of llmops.privacy.pii_types.

Structured identifiers are found with candidate patterns plus validation (Luhn for cards, ISO 13616
mod-97 for IBANs, SSA rules for SSNs, octet ranges for IPs), which keeps precision high. Person names
are in :mod:`llmops.privacy.names`.

Every pattern is compiled once, when this module is first imported (by the first scan, not by the
spec loader). Python code runs per candidate match, never per character.

Each ``detect_*`` function scans a whole text. The batched scan (:mod:`llmops.privacy.pii`) runs the
same patterns, validators and search loops through :func:`windowed` instead, only in the few windows of
a batch that can hold a value of the type (:mod:`llmops.privacy.windows`), and finds exactly the same
spans.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import TYPE_CHECKING

from llmops.privacy import cues, windows
from llmops.privacy.pii_types import Span

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from llmops.privacy.windows import Windows

# --------------------------------------------------------------------------------------------------
# Structured detectors
# --------------------------------------------------------------------------------------------------

# Every pattern below starts by consuming one character from a small class, so the regex engine can
# skip ahead in C to the next possible start; the context checks that would naturally come first are
# look-behinds placed after that character (hence their two-character width).


def _num_start(first: str) -> str:
    """A number must not be glued to a preceding token: "#48213", "ID-5551234", "$1 234 567", "1.555"."""
    return rf"{first}(?<![\w+#@&=/\\$€£¥]{first})(?<!\d[.,:\-]{first})(?<![^\W\d_]-{first})"


# ...nor continue into one: "555-123-4567x", "4111...1111.5", "10:30".
_NUM_END = r"(?![\w@]|[.,:/\-]\d)"

# Emails are anchored on "@" (rare) instead of on every word start: see detect_email.
_EMAIL_LOCAL = re.compile(r"(?<![\w.%+\-])[\w%+\-](?:[\w.%+\-]{0,62}[\w%+\-])?\Z")
_EMAIL_DOMAIN = re.compile(r"(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}(?![\w\-])")

# Obfuscated addresses: "anna [at] example [dot] com", "anna(at)example(dot)com", "anna.k3 at example dot
# com", "anna AT example DOT com", "anna at example.com". Anchored on the rare tokens: a bracketed
# "at" (strong evidence) or " at " / " AT " followed at once by a whole domain; the spaced forms then
# also need a top-level domain from _TLDS and a local part that looks like one (see _spaced_local_ok).
_TLDS = frozenset(
    """
    com org net edu gov mil int info biz name pro app dev io ai co me tv cc eu uk de fr es it nl be at ch
    se no dk fi is ie pt pl cz sk hu ro bg gr hr si rs ua ru tr il ae sa in pk cn jp kr tw hk sg my th
    vn id ph au nz ca us mx br ar cl pe za ng ke eg ma lu li ee lv lt cloud online shop store tech email
    """.split()
)
# Atomic labels and a possessive repetition: no backtracking when " at " is followed by ordinary words.
_LABEL = r"(?>[^\W_][\w\-]{0,62})"
_DOT_WORD = r"(?:[ ]?(?:\[dot\]|\(dot\)|\[DOT\]|\(DOT\))[ ]?|[ ]dot[ ]|[ ]DOT[ ])"
_OBFUSCATED_DOMAIN = rf"(?P<domain>{_LABEL}(?:(?:\.|{_DOT_WORD}){_LABEL})++)"
_LAST_LABEL = re.compile(r"[^ .\])]+\Z")
_DOMAIN_END = rf"(?![\w\-@]|\.[^\W_]|{_DOT_WORD}[^\W_])"
# One pattern per opening literal: the engine finds a literal prefix fast, a character class slowly.
# With each, the literals every match starts with (the windowed scan finds them all in one pass).
_EMAIL_OBFUSCATED_RXS = tuple(
    (re.compile(rf"{anchor}{'' if spaced else '[ ]?'}{_OBFUSCATED_DOMAIN}{_DOMAIN_END}"), spaced, literals)
    for anchor, spaced, literals in (
        (r"\((?:at|AT)\)", False, ("(at)", "(AT)")),
        (r"\[(?:at|AT)\]", False, ("[at]", "[AT]")),
        (" at ", True, (" at ",)),
        (" AT ", True, (" AT ",)),
    )
)

# Phone candidates: optional "+", digit groups separated by one space, dash, dot or slash, optional
# parenthesised area code. The look-ahead demands about 7 digits before any Python code runs.
_PHONE_GROUP = r"(?:\(\d{1,5}\)[ ]?)?\d{1,15}"
_PHONE_RX = re.compile(
    _num_start(r"[+(\d]")
    + r"(?=[ ()]{0,2}(?:[ ().\-/]{0,3}\d){6})"
    + rf"(?:(?<=\+)[ ]?(?:\d{{1,4}}[ ]?\(0\)[ ]?)?{_PHONE_GROUP}|(?<=\()\d{{1,5}}\)[ ]?\d{{1,15}}|(?<=\d)\d{{0,14}})"
    + rf"(?:(?:[ ]?[\-./][ ]?|[ ]){_PHONE_GROUP}){{0,7}}"
    + _NUM_END
)
_PHONE_ITEM = re.compile(r"\(\d+\)|\d+")
# Regions whose national formats libphonenumber is asked about when the rules above are unsure.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN")
_PHONE_SEPARATORS = re.compile(r"[^\d()]+")
_DIGITS = re.compile(r"\d+")
_SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}(?!\d)")
_DATE_PREFIX = re.compile(r"(?:\d{4}([\-./])\d{1,2}\1\d{1,2}|\d{1,2}([\-./])\d{1,2}\2\d{2,4})(?![\-./]?\d)")

_CARD_RX = re.compile(_num_start(r"\d") + r"(?:[ \-]?\d){12,18}" + _NUM_END)
_CARD_FIRST_DIGITS = frozenset("23456")  # Mastercard 2/5, Amex/Diners 3, Visa 4, Discover/UnionPay 6

# The start of an IBAN-shaped token right before a candidate: the digits of an IBAN whose checksum
# failed are not a card or a phone number either.
_IBAN_HEAD = re.compile(r"(?<![^\W_])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){0,7}[ ]?\Z")
_IBAN_RX = re.compile(r"[A-Z](?<![^\W_][A-Z])[A-Z]\d{2}(?:[ ]?[A-Z0-9]){11,30}")
# ISO 13616 registry lengths; countries not listed fall back to trying every length 15..34.
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TL": 23, "TN": 24, "TR": 26, "UA": 29,
    "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

# Anchored on its first dash (far rarer than a digit, so the engine skips to it in C); the look-behinds
# are _num_start's, shifted by the three digits before the dash. The match starts at that dash.
_SSN_RX = re.compile(
    r"-(?<=\d\d\d-)(?<![\w+#@&=/\\$€£¥]\d\d\d-)(?<!\d[.,:\-]\d\d\d-)(?<![^\W\d_]-\d\d\d-)"
    r"\d\d-\d{4}" + _NUM_END
)
_SSN_NEVER_ISSUED = frozenset({"078051120", "219099999"})  # SSA-voided numbers once seen in ads
# Spaced or unseparated SSNs are only SSNs after a cue (a bare 9-digit run is an order number as often).
_SSN_CUED_RX = re.compile(r"(?<![\w\-])(\d{3})([ ]?)(\d{2})\2(\d{4})(?![\w\-]|[.,]\d)")
cues.define(
    "us_ssn", "ssn", "ss#", "ss #", "social security", "soc. sec.", "taxpayer id", "taxpayer identification"
)
_SSN_CUE_REACH = 40

_IPV4_RX = re.compile(r"\d(?<![\w.\-]\d)\d{0,2}(?:\.\d{1,3}){3}(?![\w\-]|\.\d)")
_IPV6_RX = re.compile(
    r"[0-9A-Fa-f:](?<![\w:.][0-9A-Fa-f:])"
    r"(?:(?<=:):(?:[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){0,6}"
    r"|(?<!:)[0-9A-Fa-f]{0,3}(?::[0-9A-Fa-f]{0,4}){2,7})"
    r"(?:\.\d{1,3}){0,3}(?![\w:])"
)
_HEX = frozenset("0123456789abcdefABCDEF")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(compact: str) -> bool:
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def _scan_with(
    rx: re.Pattern[str], text: str, validate: Callable[[str, re.Match[str]], tuple[int, int] | None]
) -> list[tuple[int, int]]:
    """Search loop that lets a validator shorten or reject a candidate; rejection retries one char on."""
    out: list[tuple[int, int]] = []
    pos = 0
    search = rx.search
    while True:
        m = search(text, pos)
        if m is None:
            return out
        hit = validate(text, m)
        if hit is None:
            pos = m.start() + 1
        else:
            out.append(hit)
            pos = hit[1]


def _phone_digits_ok(cand: str) -> bool:
    """Plausibility rules: precision over recall for bare or unusual groupings (see module tests)."""
    runs = _DIGITS.findall(cand)
    digits = "".join(runs)
    n = len(digits)
    if not 7 <= n <= 15:
        return False
    if cand.startswith("+"):
        return digits[0] != "0"
    if _DATE_PREFIX.match(cand):
        return False
    if _SSN_SHAPE.match(cand) or digits.startswith("000"):
        return False
    lens = [len(r) for r in runs]
    if runs[0].startswith("0"):  # national trunk prefix or 00 international prefix
        return n >= 9 and (len(runs) > 1 or n in (10, 11))
    if lens in ([3, 3, 4], [3, 7]) and runs[0][0] in "23456789":  # NANP
        return True
    if lens == [1, 3, 3, 4] and runs[0] == "1" and runs[1][0] in "23456789":  # 1-800-555-0199
        return True
    return lens == [5, 5] and runs[0][0] in "6789"  # Indian mobile 98765 43210


@functools.lru_cache(maxsize=1 << 14)
def _valid_in_a_region(digits: str) -> bool:
    """Whether libphonenumber knows ``digits`` (a national number as written) in one of PHONE_REGIONS.

    The numbers are built directly (a full ``phonenumbers.parse`` costs ~30 µs per region): the
    region's trunk prefix is dropped, Italy keeps its leading zero.
    """
    import phonenumbers
    from phonenumbers import PhoneMetadata, PhoneNumber

    for region in PHONE_REGIONS:
        meta = PhoneMetadata.metadata_for_region(region)
        if meta is None:
            continue
        national = digits
        trunk = meta.national_prefix or ""
        if trunk and national.startswith(trunk):
            national = national[len(trunk) :]
        elif trunk == "0" and national.startswith("0"):
            continue
        if not national or len(national) > 15:
            continue
        number = PhoneNumber(country_code=meta.country_code, national_number=int(national))
        if region == "IT" and national.startswith("0"):
            number.italian_leading_zero = True
        if phonenumbers.is_valid_number(number):
            return True
    return False


def _phone_shaped(cand: str, runs: list[str]) -> bool:
    """Groupings worth asking libphonenumber about: 2-3 groups, 8-11 digits, one kind of separator, and
    not the 4-4 of card and reference numbers (longer groupings are IDs, cards, IPs or versions)."""
    n = sum(map(len, runs))
    if not 2 <= len(runs) <= 3 or not 8 <= n <= 11 or all(len(r) == 4 for r in runs):
        return False
    return len(set(_PHONE_SEPARATORS.findall(cand.replace("(", "").replace(")", " ")))) == 1


_IBAN_HEAD_REACH = 42


def _inside_iban(text: str, start: int, w: Windows | None = None) -> bool:
    if w is not None and not w.iban_head_before(start, _IBAN_HEAD_REACH):
        return False  # no IBAN can start close enough before: the pattern below cannot match
    return _IBAN_HEAD.search(text, max(0, start - _IBAN_HEAD_REACH), start) is not None


def _validate_phone(text: str, m: re.Match[str], w: Windows | None = None) -> tuple[int, int] | None:
    start = m.start()
    # The tail of a longer digit chain whose head was no phone ("Reference 4857 0442 1381 4384",
    # "1 58 05 06 489 503 89") is none either.
    if start > 1 and text[start].isdigit() and text[start - 1] in " -./" and text[start - 2].isdigit():
        return None
    if _inside_iban(text, start, w):
        return None
    length = _phone_length(m.group())
    return None if length is None else (start, start + length)


@functools.lru_cache(maxsize=1 << 16)
def _phone_length(cand: str) -> int | None:
    """How much of a phone candidate is a phone number, or None: its own text decides (the context
    checks are the caller's), so the answer is kept per candidate (dates and references recur)."""
    ends = [it.end() for it in _PHONE_ITEM.finditer(cand)]
    for end in reversed(ends):  # try dropping trailing groups: "+49 30 1234567 2026"
        if _phone_digits_ok(cand[:end]):
            return end
    runs = _DIGITS.findall(cand)
    if (
        not cand.startswith("+")
        and _phone_shaped(cand, runs)
        and not _DATE_PREFIX.match(cand)
        and not _SSN_SHAPE.match(cand)
        and _valid_in_a_region("".join(runs))
    ):
        return len(cand)
    return None


def _card_grouping_ok(lens: list[int]) -> bool:
    """Printed card groupings: 4-4-4-4(-3), 4-4-4-1, 4-6-5 (Amex), 4-6-4 (Diners) or one run."""
    if len(lens) == 1:
        return True
    if lens[:2] == [4, 6]:
        return len(lens) == 3 and lens[2] in (4, 5)
    return all(n == 4 for n in lens[:-1]) and 1 <= lens[-1] <= 4


def _validate_card(text: str, m: re.Match[str], w: Windows | None = None) -> tuple[int, int] | None:
    if _inside_iban(text, m.start(), w):
        return None
    length = _card_length(m.group())
    return None if length is None else (m.start(), m.start() + length)


@functools.lru_cache(maxsize=1 << 14)
def _card_length(cand: str) -> int | None:
    """How much of a card candidate is a card number (its own text decides), or None."""
    runs = list(_DIGITS.finditer(cand))
    seps = {cand[a.end() : b.start()] for a, b in zip(runs, runs[1:], strict=False)}
    if len(seps) > 1:
        return None
    for k in range(len(runs), 0, -1):  # longest group-aligned prefix first: "4111 ... 1111 12/27"
        digits = "".join(r.group() for r in runs[:k])
        if len(digits) < 13:
            break
        if (
            len(digits) <= 19
            and digits[0] in _CARD_FIRST_DIGITS
            and _card_grouping_ok([len(r.group()) for r in runs[:k]])
            and _luhn_ok(digits)
        ):
            return runs[k - 1].end()
    return None


def _validate_iban(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    cand = m.group()
    positions = [i for i, ch in enumerate(cand) if ch != " "]
    compact = cand.replace(" ", "")
    country = compact[:2]
    lengths: Iterable[int] = (
        (_IBAN_LENGTHS[country],) if country in _IBAN_LENGTHS else range(min(34, len(compact)), 14, -1)
    )
    for length in lengths:
        if length > len(compact):
            continue
        end = m.start() + positions[length - 1] + 1
        if end < len(text) and (text[end].isalnum() or text[end] == "_"):
            continue
        if _iban_ok(compact[:length]):
            return m.start(), end
    return None


def _validate_ipv6(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    cand = m.group()
    while cand:
        if any(ch in _HEX for ch in cand):
            try:
                ipaddress.IPv6Address(cand)
            except ValueError:
                pass
            else:
                return m.start(), m.start() + len(cand)
        if cand[-1] not in ":.":
            return None
        cand = cand[:-1]
    return None


def _spaced_local_ok(local: str, at_word: str) -> bool:
    """A spaced " at " needs a local part no sentence has before "at": one with a digit or one of
    ``._+-%`` ("anna.k3", "sipho1973"), a known first name ("anna at example.com"), or, before a
    capitalised "AT", any word not itself in capitals ("anna AT example DOT com")."""
    if any(not ch.isalpha() for ch in local):
        return True
    if at_word == "AT" and not local.isupper():
        return True
    from llmops.privacy.names import load_first_names

    return local[:1].upper() + local[1:].lower() in load_first_names()[0]


def _literal_finditer(rx: re.Pattern[str], text: str, starts: Iterable[int]) -> Iterator[re.Match[str]]:
    """``rx.finditer(text)`` for a pattern that can match only at ``starts`` (sorted)."""
    pos = 0
    for i in starts:
        if i >= pos and (m := rx.match(text, i)) is not None:
            yield m
            pos = max(m.end(), i + 1)


def _obfuscated_emails(
    text: str, rx: re.Pattern[str], spaced: bool, matches: Iterable[re.Match[str]] | None = None
) -> list[Span]:
    out: list[Span] = []
    for m in rx.finditer(text) if matches is None else matches:
        start = m.start()
        if not spaced and start and text[start - 1] == " ":
            start -= 1  # "anna [at] example.com"
        local = _EMAIL_LOCAL.search(text, max(0, start - 64), start)
        if local is None:
            continue
        tld = _LAST_LABEL.search(m.group("domain"))
        if tld is None or not (2 <= len(tld.group()) <= 63 and tld.group().isalpha()):
            continue
        if spaced and not (
            tld.group().lower() in _TLDS
            and _spaced_local_ok(local.group(), text[m.start() + 1 : m.start() + 3])
        ):
            continue
        out.append(Span(local.start(), m.end(), "email"))
    return out


def detect_email(text: str) -> list[Span]:
    """Email addresses (Unicode local parts and internationalised domains included), plain or
    obfuscated ("anna [at] example [dot] com", "anna.k3 at example dot com", "anna AT example DOT com")."""
    out = [span for rx, spaced, _ in _EMAIL_OBFUSCATED_RXS for span in _obfuscated_emails(text, rx, spaced)]
    return out + _plain_emails(text)


def _plain_emails(text: str) -> list[Span]:
    out: list[Span] = []
    pos = 0
    while (at := text.find("@", pos)) >= 0:
        pos = at + 1
        local = _EMAIL_LOCAL.search(text, max(0, at - 64), at)
        domain = _EMAIL_DOMAIN.match(text, at + 1) if local else None
        if local and domain:
            out.append(Span(local.start(), domain.end(), "email"))
            pos = domain.end()
    return out


def detect_phone(text: str) -> list[Span]:
    """Phone numbers with 7-15 digits in international or common national formats.

    Accepted: anything starting with "+" (country code); numbers with a leading 0 trunk prefix
    (020 7946 0958, 06 12 34 56 78, 030/1234567); NANP 3-3-4 / (3) 3-4 / 1-3-3-4; Indian 5-5 mobiles.
    Rejected on purpose: dates, times, short and 5-digit numbers, #order numbers, and bare digit runs
    that do not start with 0 (5551234567 is as likely an account number as a phone).
    """
    return [Span(s, e, "phone") for s, e in _scan_with(_PHONE_RX, text, _validate_phone)]


def detect_payment_card(text: str) -> list[Span]:
    """Card numbers: 13-19 digits, optional consistent space/dash grouping, valid IIN start and Luhn."""
    return [Span(s, e, "payment_card") for s, e in _scan_with(_CARD_RX, text, _validate_card)]


def detect_iban(text: str) -> list[Span]:
    """IBANs, compact or in groups, checked against the registry length and the mod-97 checksum."""
    return [Span(s, e, "iban") for s, e in _scan_with(_IBAN_RX, text, _validate_iban)]


def _ssn_ok(area: str, group: str, serial: str) -> bool:
    return (
        area not in ("000", "666")
        and area[0] != "9"
        and group != "00"
        and serial != "0000"
        and area + group + serial not in _SSN_NEVER_ISSUED
    )


def _ipv4_ok(candidate: str) -> bool:
    return all(int(o) <= 255 and (o == "0" or o[0] != "0") for o in candidate.split("."))


def detect_us_ssn(text: str) -> list[Span]:
    """US SSNs: AAA-GG-SSSS anywhere; "AAA GG SSSS" and "AAAGGSSSS" only within ~40 characters after
    a cue ("SSN", "social security (number)", "SS#", "taxpayer id"). SSA rules exclude areas
    000/666/900-999, group 00 and serial 0000."""
    spans = [
        Span(m.start() - 3, m.end(), "us_ssn")
        for m in _SSN_RX.finditer(text)
        if _ssn_ok(text[m.start() - 3 : m.start()], *m.group()[1:].split("-"))
    ]
    spans += [
        Span(m.start(), m.end(), "us_ssn")
        for m in cues.after_cues(text, "us_ssn", _SSN_CUED_RX, _SSN_CUE_REACH)
        if _ssn_ok(m.group(1), m.group(3), m.group(4))
    ]
    return spans


def detect_ip_address(text: str) -> list[Span]:
    """IPv4 (octets 0-255, no leading zeros) and IPv6 (validated by the stdlib ipaddress module)."""
    spans = [Span(m.start(), m.end(), "ip_address") for m in _IPV4_RX.finditer(text) if _ipv4_ok(m.group())]
    spans += [Span(s, e, "ip_address") for s, e in _scan_with(_IPV6_RX, text, _validate_ipv6)]
    return spans


# --------------------------------------------------------------------------------------------------
# Windowed forms, run by the batched scan (see llmops.privacy.windows)
# --------------------------------------------------------------------------------------------------


def _email_in(text: str, w: Windows) -> list[Span]:
    out = [
        span
        for rx, spaced, literals in _EMAIL_OBFUSCATED_RXS
        for span in _obfuscated_emails(
            text,
            rx,
            spaced,
            _literal_finditer(rx, text, sorted(i for lit in literals for i in w.at_words[lit])),
        )
    ]
    return out + _plain_emails(text)


def _phone_in(text: str, w: Windows) -> list[Span]:
    validate = functools.partial(_validate_phone, w=w)
    return [Span(s, e, "phone") for s, e in windows.search(_PHONE_RX, text, w.phone, validate)]


def _card_in(text: str, w: Windows) -> list[Span]:
    validate = functools.partial(_validate_card, w=w)
    return [Span(s, e, "payment_card") for s, e in windows.search(_CARD_RX, text, w.card, validate)]


def _iban_in(text: str, w: Windows) -> list[Span]:
    return [Span(s, e, "iban") for s, e in windows.search(_IBAN_RX, text, w.iban, _validate_iban)]


def _ssn_in(text: str, w: Windows) -> list[Span]:
    spans = [
        Span(m.start() - 3, m.end(), "us_ssn")
        for m in windows.finditer(_SSN_RX, text, w.ssn)
        if _ssn_ok(text[m.start() - 3 : m.start()], *m.group()[1:].split("-"))
    ]
    rows = windows.rows_with(_SSN_CUED_RX, text, w.ssn_cued)
    spans += [
        Span(m.start(), m.end(), "us_ssn")
        for m in cues.after_cues_in_rows(text, "us_ssn", _SSN_CUED_RX, _SSN_CUE_REACH, rows)
        if _ssn_ok(m.group(1), m.group(3), m.group(4))
    ]
    return spans


def _ip_address_in(text: str, w: Windows) -> list[Span]:
    spans = [
        Span(m.start(), m.end(), "ip_address")
        for m in windows.finditer(_IPV4_RX, text, w.ipv4)
        if _ipv4_ok(m.group())
    ]
    spans += [Span(s, e, "ip_address") for s, e in windows.search(_IPV6_RX, text, w.ipv6, _validate_ipv6)]
    return spans


_WINDOWED: dict[Callable[[str], list[Span]], Callable[[str, Windows], list[Span]]] = {
    detect_email: _email_in,
    detect_phone: _phone_in,
    detect_payment_card: _card_in,
    detect_iban: _iban_in,
    detect_us_ssn: _ssn_in,
    detect_ip_address: _ip_address_in,
}


def windowed(detector: Callable[[str], list[Span]]) -> Callable[[str, Windows], list[Span]] | None:
    """The windowed form of ``detector`` if it is one of this module's, else None (a detector
    registered in its place runs as it is)."""
    return _WINDOWED.get(detector)
