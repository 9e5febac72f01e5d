"""PII scan + redaction throughput per core: llmops' batched detectors against a plain per-row baseline.

Why: free-text redaction runs over every curated row before training, so its speed bounds how much
text a pipeline can protect per core. The baseline is what one would write first: one compiled
regex per type, ``re.finditer`` per row per pattern, Luhn / mod-97 / octet checks inline, overlaps
resolved by type priority, spans replaced by masks. Both run in this one process on the same text,
each timing the best of ``--repeat`` runs, llmops' caches emptied before each of its runs (every run
starts as cold as a new process). Times are CPU seconds of this process (``time.process_time``): the
throughput of one core, which other work on a shared machine does not change the way it changes
wall-clock time.

Two texts, deterministic, MB = 1e6 bytes of UTF-8:

* realistic support text (:func:`generate_realistic`): tickets as most are, a few sentences of
  ordinary text with the numbers tickets carry (order and parcel numbers, dates, times, prices,
  versions), a sign-off, and personal data in a minority of them (about 0.2 structured values per KB);
* PII-dense text (:func:`generate_tickets`): the demo's tickets (``llmops.demo.tickets``: subject,
  message, reply, most with planted contact details, cards or IBANs), a third of them followed by
  one or two lines from the labelled-corpus templates of ``tests/data/make_pii_corpus.py`` (SSNs,
  IPs, many phone and IBAN formats, hard negatives such as order numbers, dates, versions,
  Luhn-invalid cards): about 3 structured values per KB.

Two comparisons on each:

* structured types (email, IBAN, card, SSN, IP, phone): like for like; counts per type are printed
  side by side (they should roughly agree; phones differ most, by design of each);
* all types: llmops adds person names (gazetteer trie + conversational cues), credentials, national
  IDs and dates of birth; the baseline adds the obvious gazetteer regex for names (one alternation of
  the same first names, plus a capitalised surname) and has nothing for the other three.

Then each type alone on the llmops side, in MB/s (what a policy naming only that type costs).

Run: ``.venv/bin/python bench/pii_scan.py [--mb 10] [--repeat 3]`` (single process, single thread).
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


# Sentences of ordinary support traffic: no personal data, but the numbers tickets are full of (order
# and tracking numbers, dates, times, prices, versions, error codes, sizes, counts).
FILLER = (
    "I ordered the {product} on {date} and it still shows as processing.",
    "The tracking page says the parcel left the depot at {time} but nothing since.",
    "I paid {price} EUR and the confirmation email says {price2} EUR, which is it?",
    "The app is on version {version} and the phone runs the latest update.",
    "It worked fine until last week, now it shows error {code} every time.",
    "Is there a way to change the size from {size} to a bigger one?",
    "I have {n} items in the basket and the total does not add up.",
    "My parcel number is {parcel} if that helps.",
    "The box was left outside in the rain and everything inside got wet.",
    "I tried two different browsers and cleared the cache as your FAQ suggests.",
    "Could you tell me when the {product} will be back in stock?",
    "The discount code from the newsletter does not work at checkout.",
    "I would like to return the {product}, it is too small for me.",
    "The zip on the {product} broke after {n} days of light use.",
    "Delivery was promised between {time} and {time2} but nobody came.",
    "I called yesterday around {time} and was told someone would get back to me.",
    "The invoice lists {n} items but I only ordered {n2}.",
    "Please let me know what information you need from me to sort this out.",
    "This is the third time I am writing about the same problem.",
    "Thanks in advance for your help, I really like your products otherwise.",
    "The order confirmation {order} arrived but the shipping confirmation never did.",
    "Your website says free returns within {n} days, is that still true?",
    "The battery of the {product} only lasts {n} hours instead of {n2}.",
    "I attached photos of the damage to this message.",
)
REPLY_FILLER = (
    "We have passed this on to our warehouse team, who will check it today.",
    "Our records show the order {order} was dispatched on {date}.",
    "You will receive an email as soon as the carrier scans the parcel {parcel}.",
    "The refund of {price} EUR has been issued and should appear within 5 to 7 business days.",
    "If the problem persists, please reply to this message and we will escalate it.",
    "We apologise for the inconvenience and have added a {n} EUR voucher to your account.",
    "Version {version} of the app fixes this; it is rolling out this week.",
    "Please keep the original packaging until the replacement arrives.",
    "Our opening hours are {time} to {time2}, Monday to Friday.",
)


def _filler_slots(rng: random.Random) -> dict[str, str]:
    return {
        "product": rng.choice(tickets.PRODUCTS),
        "date": f"{rng.randrange(1, 29)}.{rng.randrange(1, 13)}.2026"
        if rng.random() < 0.5
        else f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
        "time": f"{rng.randrange(7, 20)}:{rng.choice(('00', '15', '30', '45'))}",
        "time2": f"{rng.randrange(12, 22)}:00",
        "price": f"{rng.randrange(10, 400)}.{rng.randrange(100):02d}",
        "price2": f"{rng.randrange(10, 400)}.{rng.randrange(100):02d}",
        "version": f"{rng.randrange(3, 7)}.{rng.randrange(10)}.{rng.randrange(20)}",
        "code": rng.choice(("403", "500", "E-1042", "0x80070005", "ERR_TIMEOUT", "502")),
        "size": rng.choice(("S", "M", "L", "42", "44", "10.5")),
        "n": str(rng.randrange(2, 30)),
        "n2": str(rng.randrange(2, 30)),
        "parcel": f"JJD{rng.randrange(10**9, 10**10)}",
        "order": f"#{rng.randrange(10000, 99999)}",
    }


def generate_realistic(target_mb: float, seed: int = SEED) -> list[str]:
    """Support tickets as most are: a few sentences of ordinary text (with the numbers tickets carry),
    a sign-off, and personal data in a minority of them; the same list for the same arguments.

    Each ticket is a demo ticket (subject, message, reply) with two to six ordinary sentences added to
    the message and one or two to the reply; the demo's planted contact details, cards and IBANs are
    kept in one ticket in eight only, and one ticket in twenty gets a line from the labelled corpus
    (one in three of those a hard negative).
    """
    sys.path.insert(0, str(PROJECT / "tests" / "data"))
    import make_pii_corpus as corpus

    rng = random.Random(seed + 1)
    planted = tickets.Planted()
    created = datetime(2026, 6, 1, tzinfo=UTC)
    texts: list[str] = []
    size, target = 0, target_mb * MB
    while size < target:
        t, intent, slots = tickets.ticket_parts(rng, f"T{len(texts)}", created, planted)
        planted_kept = rng.random() < 1 / 8
        body = t["body"] if planted_kept else tickets.INTENTS[intent][2][0].format(**slots)
        fill = _filler_slots(rng)
        message = [body, *(rng.choice(FILLER).format(**fill) for _ in range(rng.randrange(2, 7)))]
        if rng.random() < 1 / 20:
            pool = corpus.NEGATIVE_TEMPLATES if rng.random() < 1 / 3 else corpus.PII_TEMPLATES
            message.append(str(corpus._fill(rng.choice(pool), rng)["text"]))
        if not planted_kept and rng.random() < 0.5:
            message.append(f"Thanks, {slots['first']}")
        reply = [rng.choice(REPLY_FILLER).format(**fill) for _ in range(rng.randrange(1, 3))]
        head, _, tail = t["resolution"].partition(" Best regards,")
        text = "\n".join(
            [t["subject"], " ".join(message), "", " ".join([head, *reply]) + " Best regards," + tail]
        )
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


def _cold() -> None:
    """Empty llmops' per-candidate caches (phone and card validation, libphonenumber)."""
    from llmops.privacy import detectors

    for value in vars(detectors).values():
        if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info"):
            value.cache_clear()


def _timed(
    fn: Callable[[], tuple[list[str], Counter[str]]], repeat: int, cold: bool = False
) -> tuple[float, list[str], Counter[str]]:
    best = float("inf")
    for _ in range(repeat):
        if cold:
            _cold()
        started = time.process_time()
        out, counts = fn()
        best = min(best, time.process_time() - started)
    return best, out, counts


def _agreement(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def _compare(
    texts: list[str], repeat: int
) -> dict[str, tuple[float, float, Counter[str], Counter[str], float]]:
    name_rx = baseline_name_pattern()
    results = {}
    for label, types, base_patterns in (
        ("structured", STRUCTURED, BASELINE_PATTERNS),
        ("all types", ALL_TYPES, [*BASELINE_PATTERNS, ("person_name", name_rx, _always)]),
    ):
        t_ours, out_ours, c_ours = _timed(lambda types=types: llmops_redact(texts, types), repeat, cold=True)
        t_base, out_base, c_base = _timed(lambda p=base_patterns: baseline_redact(texts, p), repeat)
        results[label] = (t_ours, t_base, c_ours, c_base, _agreement(out_ours, out_base))
    return results


def _describe(label: str, texts: list[str]) -> int:
    size = sum(len(t.encode("utf-8")) for t in texts)
    spans = sum(len(s) for s in pii.scan_many(texts, STRUCTURED))
    print(
        f"{label}: {len(texts):,} tickets, {size / MB:.1f} MB (avg {size / len(texts):.0f} B/ticket), "
        f"{spans / (size / 1000):.2f} structured values per KB"
    )
    return size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=10, help="MB of each text (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement, best kept")
    args = parser.parse_args()

    started = time.perf_counter()
    corpora = {"realistic": generate_realistic(args.mb), "PII-dense": generate_tickets(args.mb)}
    print(f"generated in {time.perf_counter() - started:.1f} s; one process, one thread, CPU time")
    pii.scan_many(corpora["PII-dense"][:200])  # compile llmops' patterns (lazy) outside the timing
    sizes = {label: _describe(label, texts) for label, texts in corpora.items()}
    results = {label: _compare(texts, args.repeat) for label, texts in corpora.items()}

    print(
        f"\n{'text':10s} {'types':11s} {'llmops MB/s':>12s} {'baseline MB/s':>14s} {'speed-up':>9s} "
        f"{'same output rows':>17s}"
    )
    for corpus, by_types in results.items():
        for label, (t_ours, t_base, _, _, same) in by_types.items():
            size = sizes[corpus]
            print(
                f"{corpus:10s} {label:11s} {size / MB / t_ours:12.2f} {size / MB / t_base:14.2f} "
                f"{t_base / t_ours:8.2f}x {same:16.1%}"
            )

    print(f"\n{'type alone':14s} {'realistic MB/s':>15s} {'spans':>8s} {'PII-dense MB/s':>15s} {'spans':>8s}")
    for pii_type in ALL_TYPES:
        row = f"{pii_type:14s}"
        for corpus, texts in corpora.items():
            elapsed, _, counts = _timed(
                lambda t=pii_type, x=texts: llmops_redact(x, (t,)), args.repeat, cold=True
            )
            row += f" {sizes[corpus] / MB / elapsed:15.2f} {counts[pii_type]:8,d}"
        print(row)

    _, _, c_ours, c_base, _ = results["PII-dense"]["all types"]
    kb = sizes["PII-dense"] / 1000
    print(
        f"\n{'type':14s} {'llmops':>10s} {'baseline':>10s} {'diff':>8s}   (spans masked, PII-dense, all types)"
    )
    for pii_type in ALL_TYPES:
        a, b = c_ours[pii_type], c_base[pii_type]
        diff = f"{(b - a) / a:+7.1%}" if a and pii_type not in LLMOPS_ONLY else "    n/a"
        print(f"{pii_type:14s} {a:10,d} {b:10,d} {diff:>8s}")
    total = sum(c_ours.values())
    print(
        f"PII density (llmops): {total / kb:.2f} spans per KB, {total / len(corpora['PII-dense']):.2f} per ticket"
    )
    s_ours, s_base = results["PII-dense"]["structured"][2], results["PII-dense"]["structured"][3]
    worst = max(abs(s_base[t] - s_ours[t]) / max(s_ours[t], 1) for t in STRUCTURED if t != "phone")
    print(f"structured types other than phone agree within {worst:.1%} (PII-dense, structured run)")


if __name__ == "__main__":
    main()
