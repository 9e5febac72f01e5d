"""PII scan + redaction throughput per core: llmops' batched detectors against a plain per-row baseline.

Why: free-text redaction runs over every curated row before training, so its speed bounds how much
text a pipeline can protect per core. The baseline is what one would write first: one compiled
regex per type, ``re.finditer`` per row per pattern, Luhn / mod-97 / octet checks inline, overlaps
resolved by type priority, spans replaced by masks. Both run in this one process on the same text.

Text: deterministic support tickets (``llmops.demo.sample_data``'s generator: subject, customer
message, agent reply), a third of them followed by one or two lines from the labelled-corpus
templates of ``tests/data/make_pii_corpus.py`` (SSNs, IPs, many phone and IBAN formats, hard
negatives such as order numbers, dates, versions, Luhn-invalid cards). MB = 1e6 bytes of UTF-8.

Two comparisons:

* structured types (email, IBAN, card, SSN, IP, phone): like for like; counts per type are printed
  side by side (they should roughly agree; phones differ most, by design of each);
* all types: llmops adds person names (gazetteer trie + conversational cues), credentials, national
  IDs and dates of birth; the baseline adds the obvious gazetteer regex for names (one alternation of
  the same first names, plus a capitalised surname) and has nothing for the other three.

Then each type alone on the llmops side, in MB/s (what a policy naming only that type costs).

Run: ``.venv/bin/python bench/pii_scan.py [--mb 100]`` (single process, single thread).
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import re
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmops.demo import tickets
from llmops.privacy import pii, pii_types
from llmops.privacy.names import load_first_names

if TYPE_CHECKING:
    from collections.abc import Callable

PROJECT = Path(__file__).resolve().parents[1]
MB = 1e6
SEED = 20260601
STRUCTURED = ("email", "iban", "payment_card", "us_ssn", "ip_address", "phone")
# Types llmops finds that the baseline has no counterpart for (run on the llmops side only).
LLMOPS_ONLY = ("credential", "national_id", "date_of_birth")
ALL_TYPES = (*STRUCTURED, "person_name", *LLMOPS_ONLY)


# ------------------------------------------------------------------------------------------ data


def generate_tickets(target_mb: float, seed: int = SEED) -> list[str]:
    """Ticket texts totalling at least ``target_mb`` MB; the same list for the same arguments."""
    sys.path.insert(0, str(PROJECT / "tests" / "data"))
    import make_pii_corpus as corpus

    rng = random.Random(seed)
    planted = tickets.Planted()
    created = datetime(2026, 6, 1, tzinfo=UTC)
    texts: list[str] = []
    size, target = 0, target_mb * MB
    while size < target:
        t = tickets.ticket(rng, f"T{len(texts)}", created, planted)
        parts = [t["subject"], t["body"]]
        if rng.random() < 1 / 3:
            for _ in range(rng.choice((1, 1, 2))):
                pool = corpus.NEGATIVE_TEMPLATES if rng.random() < 0.3 else corpus.PII_TEMPLATES
                parts.append(str(corpus._fill(rng.choice(pool), rng)["text"]))
        parts.append("")
        parts.append(t["resolution"])
        text = "\n".join(parts)
        texts.append(text)
        size += len(text.encode("utf-8"))
    return texts


# -------------------------------------------------------------------------------------- baseline


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _mod97(compact: str) -> bool:
    return int("".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])) % 97 == 1


def _always(m: re.Match[str]) -> bool:
    return True


def _iban(m: re.Match[str]) -> bool:
    compact = m.group().replace(" ", "")
    return 15 <= len(compact) <= 34 and _mod97(compact)


def _card(m: re.Match[str]) -> bool:
    digits = re.sub(r"[ -]", "", m.group())
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and _luhn(digits)


def _ssn(m: re.Match[str]) -> bool:
    area, group, serial = m.group().split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ip(m: re.Match[str]) -> bool:
    try:
        ipaddress.ip_address(m.group())
    except ValueError:
        return False
    return True


_DATE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$")


def phone_number(m: re.Match[str]) -> bool:
    text = m.group()
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15 or _DATE.match(text):
        return False
    return text.startswith(("+", "(", "0")) or bool(
        re.fullmatch(r"(?:1[ .-])?\d{3}[ .-]\d{3}[ .-]\d{4}", text)
    )


# Priority order, as in llmops: a card number is never also reported as a phone.
BASELINE_PATTERNS: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], bool]]] = [
    ("email", re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}"), _always),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), _iban),
    ("payment_card", re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])"), _card),
    ("us_ssn", re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])"), _ssn),
    ("ip_address", re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])"), _ip),
    ("ip_address", re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), _ip),
    (
        "phone",
        re.compile(
            r"(?<![\w+#-])\+?(?:\(\d{1,5}\)[ ]?)?\d{1,5}(?:(?:[ ]?[-./][ ]?|[ ])\(?\d{1,8}\)?){0,6}(?![\w])"
        ),
        phone_number,
    ),
]


def baseline_name_pattern() -> re.Pattern[str]:
    """The obvious name detector: the same gazetteer as one alternation, plus one capitalised word."""
    names, ambiguous = load_first_names()
    alternation = "|".join(sorted((re.escape(n) for n in names | ambiguous), key=len, reverse=True))
    return re.compile(rf"\b(?:{alternation})\b(?: [A-Z][a-z]+(?:-[A-Z][a-z]+)?)?")


def baseline_redact(
    texts: list[str], patterns: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], bool]]]
) -> tuple[list[str], Counter[str]]:
    counts: Counter[str] = Counter()
    out = []
    for text in texts:
        taken: list[tuple[int, int, str]] = []
        for pii_type, rx, check in patterns:
            for m in rx.finditer(text):
                s, e = m.span()
                if check(m) and all(e <= ts or te <= s for ts, te, _ in taken):
                    taken.append((s, e, pii_type))
        if not taken:
            out.append(text)
            continue
        taken.sort()
        pieces, pos = [], 0
        for s, e, pii_type in taken:
            pieces += [text[pos:s], pii_types.get(pii_type).mask_text]
            counts[pii_type] += 1
            pos = e
        pieces.append(text[pos:])
        out.append("".join(pieces))
    return out, counts


# ---------------------------------------------------------------------------------------- llmops


def llmops_redact(texts: list[str], types: tuple[str, ...]) -> tuple[list[str], Counter[str]]:
    """What apply_privacy_policy runs for a free-text column: batched scan_many, then span replacement."""
    actions = dict.fromkeys(types, "mask")
    counts: Counter[str] = Counter()
    out = [
        pii._apply_spans(text, spans, actions, None, counts) if spans else text
        for text, spans in zip(texts, pii.scan_many(texts, types), strict=True)
    ]
    return out, counts


# ------------------------------------------------------------------------------------------- run


def _timed(fn: Callable[[], tuple[list[str], Counter[str]]]) -> tuple[float, list[str], Counter[str]]:
    started = time.perf_counter()
    out, counts = fn()
    return time.perf_counter() - started, out, counts


def _agreement(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=100, help="MB of ticket text (default 100)")
    args = parser.parse_args()

    started = time.perf_counter()
    texts = generate_tickets(args.mb)
    size = sum(len(t.encode("utf-8")) for t in texts)
    print(
        f"text: {len(texts):,} tickets, {size / MB:.1f} MB (avg {size / len(texts):.0f} B/ticket), "
        f"generated in {time.perf_counter() - started:.1f} s; one process, one thread"
    )
    pii.scan_many(texts[:200])  # compile llmops' patterns (lazy) outside the timing
    name_rx = baseline_name_pattern()

    results = {}
    for label, types, base_patterns in (
        ("structured", STRUCTURED, BASELINE_PATTERNS),
        ("all types", ALL_TYPES, [*BASELINE_PATTERNS, ("person_name", name_rx, _always)]),
    ):
        t_ours, out_ours, c_ours = _timed(lambda types=types: llmops_redact(texts, types))
        t_base, out_base, c_base = _timed(lambda p=base_patterns: baseline_redact(texts, p))
        results[label] = (t_ours, t_base, c_ours, c_base, _agreement(out_ours, out_base))

    print(
        f"\n{'types':12s} {'llmops MB/s':>12s} {'baseline MB/s':>14s} {'speed-up':>9s} {'same output rows':>17s}"
    )
    for label, (t_ours, t_base, _, _, same) in results.items():
        print(
            f"{label:12s} {size / MB / t_ours:12.2f} {size / MB / t_base:14.2f} "
            f"{t_base / t_ours:8.2f}x {same:16.1%}"
        )

    print(f"\n{'type alone':14s} {'llmops MB/s':>12s} {'spans':>8s}")
    for pii_type in ALL_TYPES:
        elapsed, _, counts = _timed(lambda t=pii_type: llmops_redact(texts, (t,)))
        print(f"{pii_type:14s} {size / MB / elapsed:12.2f} {counts[pii_type]:8,d}")

    _, _, c_ours, c_base, _ = results["all types"]
    kb = size / 1000
    print(f"\n{'type':14s} {'llmops':>10s} {'baseline':>10s} {'diff':>8s}   (spans masked, all-types run)")
    for pii_type in ALL_TYPES:
        a, b = c_ours[pii_type], c_base[pii_type]
        diff = f"{(b - a) / a:+7.1%}" if a and pii_type not in LLMOPS_ONLY else "    n/a"
        print(f"{pii_type:14s} {a:10,d} {b:10,d} {diff:>8s}")
    total = sum(c_ours.values())
    print(f"PII density (llmops): {total / kb:.2f} spans per KB, {total / len(texts):.2f} per ticket")
    s_ours, s_base = results["structured"][2], results["structured"][3]
    worst = max(abs(s_base[t] - s_ours[t]) / max(s_ours[t], 1) for t in STRUCTURED if t != "phone")
    print(f"structured types other than phone agree within {worst:.1%} (structured run)")


if __name__ == "__main__":
    main()
