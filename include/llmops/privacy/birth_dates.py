"""Dates of birth: a date is personal data of this kind only when a cue next to it says so.

Dates are everywhere in tickets (orders, deliveries, meetings), so a plain date is never matched.
The cue ("DOB", "d.o.b.", "date of birth", "born on", "birthday", "geb.", "geboren am", "né le",
"nacido el", "nata il", "geboren op") is found first by literal search; the date must start within a
few characters after it ("DOB: ", "born on the "), or a few words after it with nothing but words
between ("date of birth we have on file is"), or end right before a trailing cue ("12/03/1984
(DOB)", "... is my date of birth"). It must be a real calendar date in the past (from 1900 on).

Formats: year-month-day (ISO, slashes, dots, or the 8 compact digits), day-month-year and US
month-day-year with slashes, dots or dashes, and month names or their abbreviations in English,
German, French, Dutch, Spanish and Italian ("3 March 1985", "3rd of March, 1985", "March 3rd, 1985",
"03-Mar-1985", "3. März 1985", "1er mars 1985", "3 de marzo de 1985"). A two-digit year is accepted
because a cue always stands next to the date ("DOB 03/03/85", "3 Mar 85").
"""

from __future__ import annotations

import datetime as dt
import re

from llmops.privacy import cues
from llmops.privacy.pii_types import Span

_TYPE = "date_of_birth"
_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan", "januar", "jänner", "janvier", "janv", "januari", "enero", "ene", "gennaio", "gen"),
            ("february", "feb", "februar", "février", "fevrier", "févr", "fevr", "februari", "febrero",
             "febbraio"),
            ("march", "mar", "märz", "maerz", "mars", "maart", "mrt", "marzo"),
            ("april", "apr", "avril", "avr", "abril", "abr", "aprile"),
            ("may", "mai", "mei", "mayo", "maggio", "mag"),
            ("june", "jun", "juni", "juin", "junio", "giugno", "giu"),
            ("july", "jul", "juli", "juillet", "juil", "julio", "luglio", "lug"),
            ("august", "aug", "août", "aout", "augustus", "agosto", "ago"),
            ("september", "sep", "sept", "septembre", "septiembre", "setiembre", "settembre", "set"),
            ("october", "oct", "oktober", "okt", "octobre", "octubre", "ottobre", "ott"),
            ("november", "nov", "novembre", "noviembre"),
            ("december", "dec", "dezember", "dez", "décembre", "decembre", "déc", "diciembre", "dic",
             "dicembre"),
        ),
        start=1,
    )
    for name in names
}  # fmt: skip
_MONTH_NAMES = cues.trie_pattern(_MONTHS)  # a trie: cheap to try at every position
_MON = rf"(?:{_MONTH_NAMES})\.?"
_ORDINAL = r"(?:st|nd|rd|th|er|º|°|\.)?"
_YEAR = r"\d{4}|['’]?\d{2}(?![\d:])"  # "85" and "'85", but not the hour of "85:00"
_SP = r"[ \u00a0]+"
_DATE = (
    r"(?<!\w)(?i:"
    r"(?P<iso_y>\d{4})(?P<iso_s>[\-/.])(?P<iso_m>\d{1,2})(?P=iso_s)(?P<iso_d>\d{1,2})"
    r"|(?P<c_y>(?:19|20)\d{2})(?P<c_m>0[1-9]|1[0-2])(?P<c_d>0[1-9]|[12]\d|3[01])"
    r"|(?P<a>\d{1,2})(?P<s>[./\-])(?P<b>\d{1,2})(?P=s)(?P<y>\d{4}|\d{2})"
    # 3 March 1985, 3rd of March, 1985, 3. März 1985, 1er mars 1985, 3 de marzo de 1985, 3 Mar 85
    rf"|(?P<d>\d{{1,2}}){_ORDINAL}{_SP}(?:(?:of|de|di){_SP})?(?P<mon>{_MON}),?{_SP}(?:de{_SP})?(?P<dy>{_YEAR})"
    # 03-Mar-1985, 3/Mar/85, 03MAR1985
    rf"|(?P<d3>\d{{1,2}})(?P<s3>[\-/]?)(?P<mon3>{_MON})(?P=s3)(?P<dy3>{_YEAR})"
    # March 3, 1985, Mar. 3rd 1985
    rf"|(?P<mon2>{_MON})(?:{_SP}|-)(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?(?:,?{_SP}|-)(?P<my>\d{{4}}))"
    r"(?![\w\-]|[./]\d)"
)
_DATE_RX = re.compile(_DATE)
_CUES = (
    "dob",
    "DoB",
    "d.o.b",
    "d.o.b.",
    "date of birth",
    "birth date",
    "birth-date",
    "birthdate",
    "born on",
    "born",
    "birthday",
    "date-of-birth",
    "birth",
    "geboren am",
    "geboren",
    "geburtsdatum",
    "geburtstag",
    "geb.",
    "geb",
    "né le",
    "née le",
    "né(e) le",
    "né",
    "née",
    "date de naissance",
    "geboortedatum",
    "geboren op",
    "fecha de nacimiento",
    "nacido el",
    "nacida el",
    "data di nascita",
    "nato il",
    "nata il",
    "(b.",
    "b.",
    "geb.-datum",
    "geb.datum",
    "bday",
    "b-day",
    # Field names of pasted records and payloads: date_of_birth=..., "birthDate": "...".
    "date_of_birth",
    "birth_date",
    "dateOfBirth",
    "birthDate",
    "DateOfBirth",
    # Other European languages (numeric dates).
    "data de nascimento",
    "data urodzenia",
    "födelsedatum",
    "fødselsdato",
    "syntymäaika",
    "datum narození",
    "doğum tarihi",
)
cues.define(_TYPE, *_CUES)
_CUE_REACH = 12  # ": ", " is ", " was ", " on the " between the cue and the date: anything goes
# Further from the cue, only words (no digits, no sentence or clause break), optionally a short
# parenthesis: "date of birth we have on file is", "DOB (dd/mm/yyyy):".
_WORDS_REACH = 60


def _year(text: str) -> int:
    text = text.lstrip("'’")
    year = int(text)
    if len(text) == 2:
        year += 2000 if year <= dt.date.today().year % 100 else 1900
    return year


def _month(name: str) -> int:
    return _MONTHS[name.lower().rstrip(".")]


def _birth_date(m: re.Match[str]) -> dt.date | None:
    """The calendar date ``m`` spells, or None when it is no real date."""
    g = m.groupdict()
    try:
        if g["iso_y"]:
            return dt.date(int(g["iso_y"]), int(g["iso_m"]), int(g["iso_d"]))
        if g["c_y"]:
            return dt.date(int(g["c_y"]), int(g["c_m"]), int(g["c_d"]))
        if g["a"]:
            a, b, year = int(g["a"]), int(g["b"]), _year(g["y"])
            try:  # day first (most of the world), else month first (US)
                return dt.date(year, b, a)
            except ValueError:
                return dt.date(year, a, b)
        if g["mon"]:
            return dt.date(_year(g["dy"]), _month(g["mon"]), int(g["d"]))
        if g["mon3"]:
            return dt.date(_year(g["dy3"]), _month(g["mon3"]), int(g["d3"]))
        return dt.date(int(g["my"]), _month(g["mon2"]), int(g["d2"]))
    except (ValueError, KeyError):
        return None


def _plausible(m: re.Match[str]) -> bool:
    date = _birth_date(m)
    return date is not None and 1900 <= date.year and date <= dt.date.today()


_SHORT_CUE = re.compile(
    rf"(?<!\w)(?i:{cues.trie_pattern(c.lower() for c in _CUES)})(?![^\W\d_])[^\x00]{{0,{_CUE_REACH}}}\Z"
)
# "birthday" and "birth" also name events ("birthday party planned for ..."): no words in between.
_NOUN_CUES = tuple(c.lower() for c in _CUES if c.lower() not in {"birthday", "birth", "geburtstag"})
_CUE_THEN_WORDS = re.compile(
    rf"(?<!\w)(?i:{cues.trie_pattern(_NOUN_CUES)})[.]?(?:[ \t]*\([^()\n\x00]{{1,15}}\))?"
    r"(?:[ \t]+[^\W\d_]+(?:['’][^\W\d_]+)?){0,10}[ \t]*[:=]?[ \t]*\Z"
)


_EVENT_CUE_THEN_WORDS = re.compile(
    r"(?<!\w)(?i:birthday|birth|geburtstag)(?:[ \t]+[^\W\d_]+(?:['’][^\W\d_]+)?){1,10}[ \t]*[:=]?[ \t]*\Z"
)
_EVENT_MIN_AGE_DAYS = 5 * 365


def _near_cue(text: str, m: re.Match[str]) -> bool:
    """Whether a cue ends at most a few characters before ``m``, or only words stand between them
    (after "birthday", which also names a party or a gift, only for a date at least 5 years back)."""
    start = m.start()
    if _SHORT_CUE.search(text, max(0, start - _CUE_REACH - 30), start) is not None:
        return True
    if _CUE_THEN_WORDS.search(text, max(0, start - _WORDS_REACH - 30), start) is not None:
        return True
    if _EVENT_CUE_THEN_WORDS.search(text, max(0, start - _WORDS_REACH - 30), start) is None:
        return False
    date = _birth_date(m)
    return date is not None and (dt.date.today() - date).days >= _EVENT_MIN_AGE_DAYS


# A date right before a cue ("12/03/1984 (DOB)", "12 March 1984, my date of birth") or a few words
# before it, linked by a verb ("12/03/1984 is when I was born", "... that's the date of birth on my
# passport"). "birthday" is left out: "12/05/2025 is my birthday" names this year's one. Searched
# backwards from each cue's end, which is where the pattern must end.
_EMPTY = re.compile("")
_WORD = r"[^\W\d_]+(?:['’][^\W\d_]+)?[ \t]+"
_DATE_THEN_CUE = re.compile(
    rf"(?P<date>{_DATE})[ \t]*(?:"
    r"[,\-–—][ \t]*(?:(?:my|his|her|their|the|a)[ \t]+)?|(?=\()"
    rf"|(?:[,(\-–—][ \t]*)?(?:{_WORD}){{0,2}}(?:is|was|as|are|were|being|that['’]s|it['’]s)[ \t]+(?:{_WORD}){{0,4}}"
    rf")\(?(?i:{cues.trie_pattern((*_NOUN_CUES, 'born'))})\Z"
)


def _dates_before_cues(text: str) -> list[Span]:
    out: list[Span] = []
    for cue in cues.after_cues(text, _TYPE, _EMPTY, 0):
        m = _DATE_THEN_CUE.search(text, max(0, cue.start() - 90), cue.start())
        if m is not None and _plausible(m):
            out.append(Span(m.start("date"), m.end("date"), _TYPE))
    return out


def detect_date_of_birth(text: str) -> list[Span]:
    """A real past date next to a birth cue: after it ("DOB: 1984-03-12", "born on 12 March 1984",
    "date of birth on file is 03/12/1984") or right before a trailing one ("12.03.1984 (DOB)")."""
    out = [
        Span(m.start(), m.end(), _TYPE)
        for m in cues.after_cues(text, _TYPE, _DATE_RX, _WORDS_REACH)
        if _plausible(m) and _near_cue(text, m)
    ]
    return out + _dates_before_cues(text)
