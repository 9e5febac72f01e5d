"""Dates of birth: a date is personal data of this kind only when a cue before it says so.

Dates are everywhere in tickets (orders, deliveries, meetings), so a plain date is never matched.
The cue ("DOB", "date of birth", "born on", "birthday", "geboren am", "né le") is found first by
literal search; the date must start within a few characters after it and be a real calendar date.
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
            ("january", "jan", "januar", "janvier"),
            ("february", "feb", "februar", "février", "fevrier"),
            ("march", "mar", "märz", "maerz", "mars"),
            ("april", "apr", "avril"),
            ("may", "mai"),
            ("june", "jun", "juni", "juin"),
            ("july", "jul", "juli", "juillet"),
            ("august", "aug", "août", "aout"),
            ("september", "sep", "sept", "septembre"),
            ("october", "oct", "oktober", "okt", "octobre"),
            ("november", "nov", "novembre"),
            ("december", "dec", "dezember", "dez", "décembre"),
        ),
        start=1,
    )
    for name in names
}
_MONTH_NAMES = "|".join(sorted(map(re.escape, _MONTHS), key=len, reverse=True))
_DAY = r"(?P<d>\d{1,2})(?:st|nd|rd|th|\.)?"
_DATE_RX = re.compile(
    r"(?i:(?P<iso_y>\d{4})(?P<iso_s>[\-/.])(?P<iso_m>\d{1,2})(?P=iso_s)(?P<iso_d>\d{1,2})"
    r"|(?P<a>\d{1,2})(?P<s>[./\-])(?P<b>\d{1,2})(?P=s)(?P<y>\d{4}|\d{2})"
    rf"|{_DAY}[ ]+(?:of[ ]+)?(?P<mon>{_MONTH_NAMES})\.?,?[ ]+(?P<dy>\d{{4}})"
    rf"|(?P<mon2>{_MONTH_NAMES})\.?[ ]+(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?,?[ ]+(?P<my>\d{{4}}))"
    r"(?![\w\-]|[./]\d)"
)
cues.define(
    _TYPE,
    "dob",
    "d.o.b",
    "date of birth",
    "birth date",
    "birthdate",
    "born on",
    "born",
    "birthday",
    "geboren am",
    "geburtsdatum",
    "né le",
    "née le",
    "date de naissance",
    "geboortedatum",
    "fecha de nacimiento",
    "data di nascita",
    "date-of-birth",
    "birth",
    "geburtstag",
    "geb.",
)
_CUE_REACH = 12  # ": ", " is ", " was " between the cue and the date


def _year(text: str) -> int:
    year = int(text)
    return year + (1900 if year >= 30 else 2000) if len(text) == 2 else year


def _real_date(m: re.Match[str]) -> bool:
    g = m.groupdict()
    try:
        if g["iso_y"]:
            dt.date(int(g["iso_y"]), int(g["iso_m"]), int(g["iso_d"]))
        elif g["a"]:
            a, b, year = int(g["a"]), int(g["b"]), _year(g["y"])
            try:  # day first (most of the world), else month first (US)
                dt.date(year, b, a)
            except ValueError:
                dt.date(year, a, b)
        elif g["dy"]:
            dt.date(int(g["dy"]), _MONTHS[g["mon"].lower()], int(g["d"]))
        else:
            dt.date(int(g["my"]), _MONTHS[g["mon2"].lower()], int(g["d2"]))
    except (ValueError, KeyError):
        return False
    return True


def detect_date_of_birth(text: str) -> list[Span]:
    """A date (ISO, d/m/y, m/d/y, "12 March 1984", "March 12, 1984") right after a birth cue."""
    return [
        Span(m.start(), m.end(), _TYPE)
        for m in cues.after_cues(text, _TYPE, _DATE_RX, _CUE_REACH)
        if _real_date(m)
    ]
