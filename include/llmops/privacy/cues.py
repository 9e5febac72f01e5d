"""Context cues: find a literal cue ("SSN", "date of birth", "BSN") first, then look for a value
shortly after it.

Why cue first: the values these detectors want (9 digits, a date) are everywhere in text and are
personal data only when a cue names them. Cues are literals, found with ``str.find`` at memchr speed;
the value pattern then runs on a short window after each cue, never over the whole text, and never
past the end of the row (rows of a batch are joined with NUL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import re
    from collections.abc import Iterable, Iterator

_SEP = "\x00"
_VALUE_CHARS = 40  # the longest value a cue may introduce


def spellings(*cues: str) -> tuple[str, ...]:
    """Each cue as written, capitalised, in capitals and as a headline ("Date of Birth")."""
    out: dict[str, None] = {}
    for cue in cues:
        headline = " ".join(w[:1].upper() + w[1:] if len(w) > 2 else w for w in cue.split(" "))
        for variant in (cue, cue[:1].upper() + cue[1:], cue.upper(), cue.title(), headline):
            out[variant] = None
    return tuple(out)


def after_cues(text: str, cues: Iterable[str], value: re.Pattern[str], reach: int) -> Iterator[re.Match[str]]:
    """Matches of ``value`` starting within ``reach`` characters after the end of any cue.

    A value found after two cues is yielded once.
    """
    seen: set[int] = set()
    for cue in cues:
        pos = 0
        while (i := text.find(cue, pos)) >= 0:
            pos = i + len(cue)
            stop = text.find(_SEP, pos, pos + reach + _VALUE_CHARS)
            m = value.search(text, pos, pos + reach + _VALUE_CHARS if stop < 0 else stop)
            if m is not None and m.start() <= pos + reach and m.start() not in seen:
                seen.add(m.start())
                yield m
