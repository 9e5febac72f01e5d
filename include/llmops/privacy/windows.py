"""Windows: where in a batch of rows a structured value (phone, card, SSN, IP, IBAN) can be, and the
search loops that run a detector's pattern there only.

Why: a pattern's search loop spends time at every character a match could start at, and most of a
support ticket is words. One vectorised pass over the character codes of a batch (numpy) finds the
few places that can hold a structured value, and each detector's own pattern, validator and search
loop (:mod:`llmops.privacy.detectors`) then run there only. The findings equal a scan of the whole
text because:

* every match of the digit patterns (phone, card, SSN, IPv4) lies in one digit cluster: digits
  with at most _GAP characters of " ()./+-" between neighbours (a phone's widest gap is " - ("),
  and starts at most _LEAD characters before its first digit ("+ (");
* an IBAN starts with two capitals and two digits; an IPv6 address holds two colons at most five
  characters apart;
* a window's search stops _TAIL characters past its last digit (or colon), beyond anything a match
  attempt that succeeds there reads, and every hit is matched again against the whole text (a cut
  can hide no match and make none); look-behinds and validators read the whole text, since a search
  from a position still sees what lies before it;
* the searches visit the windows in order with the whole-text loops' rules (after a rejected
  candidate, go on one character later; after a hit, at its end), so they meet the same candidates.

Text holding non-ASCII digits (which ``\\d`` matches) has no windows: it is scanned whole.
tests/unit/test_pii_scan_equivalence.py holds the scan to the spans of whole-text detectors.
"""

from __future__ import annotations

import bisect
import functools
import re
from typing import TYPE_CHECKING, Any

from llmops.privacy.cues import SEP

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy

_GAP = 4
_LEAD = 6
_TAIL = 12
_GAP_CHARS = " ()./+-"
_IBAN_READS = 72  # "[A-Z]{2}\d{2}" and up to 30 groups of "[ ]?[A-Z0-9]", plus the look past them
_COLON_GAP = 5
_IPV6_TAIL = 32  # four hex digits and ".ddd" three times after the last colon, plus margin
_ANY_DIGIT = re.compile(r"\d")

Window = tuple[int, int]


# The spelled-out "at" that obfuscated e-mail addresses start with (detectors._EMAIL_OBFUSCATED_RXS).
AT_WORDS = ("(at)", "(AT)", "[at]", "[AT]", " at ", " AT ")


class Windows:
    """The windows of one text (a batch of rows joined with NUL), per detector, sorted and disjoint;
    each kind is worked out when a detector first asks for it.

    Also ``at_words``, the offsets of each of AT_WORDS, and ``iban_heads``, the sorted offsets where an
    IBAN can start: two capitals, not after a letter or digit, then two digits.
    """

    def __init__(self, codes: numpy.ndarray) -> None:
        self._codes = codes

    @functools.cached_property
    def _clusters(self) -> dict[str, numpy.ndarray]:
        return _digit_clusters(self._codes)

    def _around(self, mask: numpy.ndarray) -> list[Window]:
        c = self._clusters
        return _merged(c["start"][mask] - _LEAD, c["end"][mask] + _TAIL, len(self._codes))

    @functools.cached_property
    def phone(self) -> list[Window]:
        return self._around(self._clusters["digits"] >= 6)  # "+" and six digits, or seven digits

    @functools.cached_property
    def card(self) -> list[Window]:
        return self._around(self._clusters["digits"] >= 13)

    @functools.cached_property
    def ssn(self) -> list[Window]:
        return self._around((self._clusters["digits"] >= 9) & (self._clusters["dashes"] >= 2))

    @functools.cached_property
    def ssn_cued(self) -> list[Window]:
        return self._around(self._clusters["digits"] >= 9)

    @functools.cached_property
    def ipv4(self) -> list[Window]:
        return self._around((self._clusters["digits"] >= 4) & (self._clusters["dots"] >= 3))

    @functools.cached_property
    def ipv6(self) -> list[Window]:
        return _ipv6_windows(self._codes)

    @functools.cached_property
    def _iban_heads(self) -> numpy.ndarray:
        return _iban_heads(self._codes, self._clusters["at"])

    @functools.cached_property
    def iban(self) -> list[Window]:
        return _merged(self._iban_heads, self._iban_heads + _IBAN_READS, len(self._codes))

    @functools.cached_property
    def iban_heads(self) -> list[int]:
        return self._iban_heads.tolist()

    @functools.cached_property
    def at_words(self) -> dict[str, list[int]]:
        return _at_words(self._codes)

    def iban_head_before(self, pos: int, reach: int) -> bool:
        """Whether an IBAN can start within ``reach`` characters before ``pos`` and end there."""
        heads = self.iban_heads
        k = bisect.bisect_left(heads, pos - reach)
        return k < len(heads) and heads[k] <= pos - 4


@functools.cache
def _numpy() -> tuple[Any, numpy.ndarray]:
    """numpy (imported by the first batched scan) and the table of the characters of _GAP_CHARS."""
    import numpy as np

    gap_chars = np.zeros(256, dtype=bool)
    gap_chars[[ord(ch) for ch in _GAP_CHARS]] = True
    return np, gap_chars


def _codes(text: str) -> numpy.ndarray | None:
    """One byte per character (characters past Latin-1 become "?"); None when the text holds a digit
    other than an ASCII one."""
    np = _numpy()[0]
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    codes = np.frombuffer(text.encode("latin-1", errors="replace"), dtype=np.uint8)
    # Latin-1 holds no digits beyond ASCII; the characters replaced are among the "?".
    marks = {text[i] for i in np.flatnonzero(codes == 63).tolist()}
    if any(_ANY_DIGIT.match(ch) for ch in marks):
        return None
    return codes


def _merged(starts: numpy.ndarray, ends: numpy.ndarray, size: int) -> list[Window]:
    """Windows [start, end) clipped to the text, overlapping ones merged (starts sorted)."""
    if not len(starts):
        return []
    np = _numpy()[0]
    starts = np.maximum(starts, 0)
    ends = np.minimum(np.maximum.accumulate(ends), size)
    keep = np.flatnonzero(starts[1:] > ends[:-1])
    first = np.concatenate(([0], keep + 1))
    last = np.concatenate((keep, [len(starts) - 1]))
    return list(zip(starts[first].tolist(), ends[last].tolist(), strict=True))


def _digit_clusters(codes: numpy.ndarray) -> dict[str, numpy.ndarray]:
    """Digit clusters: first and past-last offsets, digits, single-dot and single-dash gaps (and "at",
    the offset of every digit)."""
    np, gap_chars = _numpy()
    at = np.flatnonzero((codes - 48) < 10)
    if not len(at):
        empty = np.zeros(0, dtype=np.int64)
        return dict.fromkeys(("at", "start", "end", "digits", "dots", "dashes"), empty)
    gaps = np.diff(at) - 1
    joined = gaps == 0
    narrow = np.flatnonzero((gaps > 0) & (gaps <= _GAP))
    ok = np.ones(len(narrow), dtype=bool)
    last_char = len(codes) - 1
    for offset in range(1, _GAP + 1):
        chars = codes[np.minimum(at[narrow] + offset, last_char)]
        ok &= (gaps[narrow] < offset) | gap_chars[chars]
    joined[narrow] = ok
    single = gaps == 1
    after = codes[np.minimum(at[:-1] + 1, last_char)]
    dots = np.concatenate(([0], np.cumsum(single & (after == 46))))
    dashes = np.concatenate(([0], np.cumsum(single & (after == 45))))
    breaks = np.flatnonzero(~joined)
    first = np.concatenate(([0], breaks + 1))
    last = np.concatenate((breaks, [len(at) - 1]))
    return {
        "at": at,
        "start": at[first],
        "end": at[last] + 1,
        "digits": last - first + 1,
        "dots": dots[last] - dots[first],
        "dashes": dashes[last] - dashes[first],
    }


def _iban_heads(codes: numpy.ndarray, digits: numpy.ndarray) -> numpy.ndarray:
    """Offsets of "[A-Z]{2}\\d{2}" not after an ASCII letter or digit (the IBAN patterns' look-behind
    refuses those), found from the offsets of digits that the next one follows."""
    np = _numpy()[0]
    pairs = digits[:-1][np.diff(digits) == 1]
    pairs = pairs[pairs >= 2]
    at = pairs[((codes[pairs - 2] - 65) < 26) & ((codes[pairs - 1] - 65) < 26)] - 2
    before = codes[np.maximum(at - 1, 0)]
    glued = (at > 0) & (((before - 48) < 10) | (((before | 0x20) - 97) < 26))
    return at[~glued]


def _ipv6_windows(codes: numpy.ndarray) -> list[Window]:
    np = _numpy()[0]
    at = np.flatnonzero(codes == 58)
    if len(at) < 2:
        return []
    breaks = np.flatnonzero(np.diff(at) > _COLON_GAP)
    first = np.concatenate(([0], breaks + 1))
    last = np.concatenate((breaks, [len(at) - 1]))
    pairs = last > first
    return _merged(at[first[pairs]] - _LEAD, at[last[pairs]] + _IPV6_TAIL, len(codes))


_AT_PAIRS = (ord("a") | ord("t") << 8, ord("A") | ord("T") << 8)  # "at" and "AT" as little-endian uint16


def _at_words(codes: numpy.ndarray) -> dict[str, list[int]]:
    """Offsets of each of AT_WORDS: "at" or "AT" found as character pairs (two aligned passes), then
    the characters around the few hits compared."""
    np = _numpy()[0]
    size = len(codes)
    hits = []
    for shift in (0, 1):
        pairs = codes[shift : shift + (size - shift) // 2 * 2].view("<u2")
        hits.append(np.flatnonzero((pairs == _AT_PAIRS[0]) | (pairs == _AT_PAIRS[1])) * 2 + shift)
    at = np.concatenate(hits)
    start = at[(at >= 1) & (at + 2 < size)] - 1
    before, after = codes[start], codes[start + 3]
    start = start[
        ((before == 32) | (before == 40) | (before == 91)) & ((after == 32) | (after == 41) | (after == 93))
    ]
    found = {}
    for word in AT_WORDS:
        keep = codes[start] == ord(word[0])
        for k in range(1, 4):
            keep &= codes[start + k] == ord(word[k])
        found[word] = np.sort(start[keep]).tolist()
    return found


def locate(text: str) -> Windows | None:
    """Where in ``text`` each structured type can have a value; None: scan the whole text."""
    codes = _codes(text)
    return None if codes is None else Windows(codes)


def search(
    rx: re.Pattern[str],
    text: str,
    spans: list[Window],
    validate: Callable[[str, re.Match[str]], tuple[int, int] | None],
) -> list[tuple[int, int]]:
    """A whole-text search loop (``detectors._scan_with``) over the windows only: same candidates,
    same retries, same hits. ``validate`` may shorten a hit or reject it (None)."""
    out: list[tuple[int, int]] = []
    search, match = rx.search, rx.match
    pos = 0
    for start, stop in spans:
        pos = max(pos, start)
        while pos < stop and (m := search(text, pos, stop)) is not None:
            full = match(text, m.start())
            hit = None if full is None else validate(text, full)
            if hit is None:
                pos = m.start() + 1
            else:
                out.append(hit)
                pos = hit[1]
    return out


def finditer(rx: re.Pattern[str], text: str, spans: list[Window]) -> Iterator[re.Match[str]]:
    """``rx.finditer(text)``, searched in the windows only."""
    search, match = rx.search, rx.match
    pos = 0
    for start, stop in spans:
        pos = max(pos, start)
        while pos < stop and (m := search(text, pos, stop)) is not None:
            full = match(text, m.start())
            if full is None:
                pos = m.start() + 1
            else:
                yield full
                pos = max(full.end(), full.start() + 1)


def rows_with(rx: re.Pattern[str], text: str, spans: list[Window]) -> list[Window]:
    """The rows (between NULs) in which ``rx`` can match, judged within ``spans``."""
    rows: list[Window] = []
    for start, stop in spans:
        pos = start
        while pos < stop and (m := rx.search(text, pos, stop)) is not None:
            first = text.rfind(SEP, 0, m.start()) + 1
            end = text.find(SEP, m.start())
            end = len(text) if end < 0 else end
            if not rows or rows[-1][0] != first:
                rows.append((first, end))
            pos = end + 1
    return rows
