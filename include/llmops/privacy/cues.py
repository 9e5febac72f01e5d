"""Context cues: find a literal cue ("SSN", "date of birth", "BSN") first, then look for a value
shortly after it.

Why cue first: the values these detectors want (9 digits, a date) are everywhere in text and are
personal data only when a cue names them. The value pattern runs on a short window after each cue,
never over the whole text, and never past the end of the row (rows of a batch are joined with NUL).

Why one pass: every cue-based detector registers its cue words here (:func:`define`), and the cues
of all of them are found together by one trie-shaped regex, once per text (a batch is scanned for
each type in turn; the hits of the last text are kept). The alternation holds each case variant
as a literal instead of using ``(?i)``, so the engine skips in C to the characters a cue can start
with; searching each spelling with ``str.find`` instead costs one pass over the text per spelling.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

SEP = "\x00"  # joins the rows of a batch
_VALUE_CHARS = 40  # the longest value a cue may introduce


def spellings(*cues: str) -> tuple[str, ...]:
    """Each cue as written, capitalised, in capitals and as a headline ("Date of Birth")."""
    out: dict[str, None] = {}
    for cue in cues:
        headline = " ".join(w[:1].upper() + w[1:] if len(w) > 2 else w for w in cue.split(" "))
        for variant in (cue, cue[:1].upper() + cue[1:], cue.upper(), cue.title(), headline):
            out[variant] = None
    return tuple(out)


def trie_pattern(words: Iterable[str]) -> str:
    """One regex alternation shaped as a trie: matching cost depends on word length, not list size."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        terminal = "" in node
        alts = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        if len(alts) == 1 and not terminal:
            return alts[0]
        return "(?:" + "|".join(alts) + ")" + ("?" if terminal else "")

    return build(trie)


# Cue spelling -> the groups (detectors) it belongs to; the compiled pattern follows the table.
_GROUPS: dict[str, set[str]] = {}
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"rx": None, "last": None}


def define(group: str, *cues: str) -> None:
    """Register the cues of one detector (every :func:`spellings` variant of each)."""
    with _LOCK:
        for spelling in spellings(*cues):
            _GROUPS.setdefault(spelling, set()).add(group)
        _STATE["rx"] = None
        _STATE["last"] = None


def _pattern() -> re.Pattern[str]:
    rx = _STATE["rx"]
    if rx is None:
        with _LOCK:
            rx = re.compile(trie_pattern(_GROUPS))
            _STATE["rx"] = rx
    return rx


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _find_cues(text: str, start: int = 0, end: int | None = None) -> dict[str, list[int]]:
    """Per group, the end offsets of its cues in ``text[start:end]`` (a cue must not be part of a
    longer word). ``start`` must begin a row: the cue search is then where a search of the whole text
    would be (no cue spans a NUL), so both find the same cues in the row."""
    rx = _pattern()
    found: dict[str, list[int]] = {}
    size = len(text)
    for m in rx.finditer(text, start, size if end is None else end):
        first, last = m.span()
        if (first and _is_word_char(text[first - 1])) or (last < size and text[last].isalpha()):
            continue
        for group in _GROUPS[m.group()]:
            found.setdefault(group, []).append(last)
    return found


def _cue_ends(text: str) -> dict[str, list[int]]:
    """:func:`_find_cues` over the whole text, kept for the next detector that asks about it."""
    last = _STATE["last"]
    if last is not None and last[0] is text:
        return last[1]
    found = _find_cues(text)
    _STATE["last"] = (text, found)  # holds the text, so its identity cannot be reused meanwhile
    return found


def _values_after(
    text: str, ends: Iterable[int], value: re.Pattern[str], reach: int, seen: set[int]
) -> Iterator[re.Match[str]]:
    for pos in ends:
        stop = text.find(SEP, pos, pos + reach + _VALUE_CHARS)
        m = value.search(text, pos, pos + reach + _VALUE_CHARS if stop < 0 else stop)
        if m is not None and m.start() <= pos + reach and m.start() not in seen:
            seen.add(m.start())
            yield m


def after_cues(text: str, group: str, value: re.Pattern[str], reach: int) -> Iterator[re.Match[str]]:
    """Matches of ``value`` starting within ``reach`` characters after the end of a cue of ``group``.

    A value found after two cues is yielded once.
    """
    yield from _values_after(text, _cue_ends(text).get(group, ()), value, reach, set())


def after_cues_in_rows(
    text: str, group: str, value: re.Pattern[str], reach: int, rows: Iterable[tuple[int, int]]
) -> Iterator[re.Match[str]]:
    """:func:`after_cues` for the given rows of ``text`` only (``(start, end)`` of rows between NULs,
    in order): what after_cues yields in those rows, in the same order. For a caller that knows the
    rows where ``value`` can match, so that cues are looked for in those rows alone."""
    seen: set[int] = set()
    for start, end in rows:
        yield from _values_after(text, _find_cues(text, start, end).get(group, ()), value, reach, seen)
