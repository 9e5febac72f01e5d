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


def _cue_ends(text: str) -> dict[str, list[int]]:
    """Per group, the end offsets of its cues in ``text`` (a cue must not be part of a longer word)."""
    last = _STATE["last"]
    if last is not None and last[0] is text:
        return last[1]
    rx = _pattern()
    found: dict[str, list[int]] = {}
    size = len(text)
    for m in rx.finditer(text):
        start, end = m.span()
        if (start and _is_word_char(text[start - 1])) or (end < size and text[end].isalpha()):
            continue
        for group in _GROUPS[m.group()]:
            found.setdefault(group, []).append(end)
    _STATE["last"] = (text, found)  # holds the text, so its identity cannot be reused meanwhile
    return found


def after_cues(text: str, group: str, value: re.Pattern[str], reach: int) -> Iterator[re.Match[str]]:
    """Matches of ``value`` starting within ``reach`` characters after the end of a cue of ``group``.

    A value found after two cues is yielded once.
    """
    seen: set[int] = set()
    for pos in _cue_ends(text).get(group, ()):
        stop = text.find(_SEP, pos, pos + reach + _VALUE_CHARS)
        m = value.search(text, pos, pos + reach + _VALUE_CHARS if stop < 0 else stop)
        if m is not None and m.start() <= pos + reach and m.start() not in seen:
            seen.add(m.start())
            yield m
