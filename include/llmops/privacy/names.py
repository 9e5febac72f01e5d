"""Person names found without a model: a first-name gazetteer plus conversational cues.

Why a gazetteer: it is fast (one trie-shaped regex the engine skips through in C) and needs no model
hub; a cue ("my name is", "Regards,", a title) catches names the list does not know. The optional NER
engine (:mod:`llmops.privacy.name_engines`) adds recall on uncued names at the cost of a model.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from llmops.privacy.cues import trie_pattern
from llmops.privacy.pii_types import Span

_LATIN = [chr(c) for c in range(0x41, 0x250)]
_UPPER = "[" + "".join(re.escape(c) for c in _LATIN if c.isalpha() and c.isupper()) + "]"
_LOWER = "[" + "".join(re.escape(c) for c in _LATIN if c.isalpha() and c.islower()) + "]"
# Smith, O'Brien, McDonald, D'Angelo, Müller, Al-Farsi, Okonkwo-Bello
_NAME_TOKEN = (
    rf"{_UPPER}(?:['’]{_UPPER})?{_LOWER}+(?:{_UPPER}{_LOWER}+)?"
    rf"(?:-{_UPPER}(?:['’]{_UPPER})?{_LOWER}+(?:{_UPPER}{_LOWER}+)?)?(?![^\W_])"
)
_PARTICLE = r"(?:van|von|de|da|di|del|della|der|den|du|dos|das|le|la|bin|ibn|al|el|ter|ten)"
_SURNAMES = rf"(?:[ \t]+(?:{_PARTICLE}[ \t]+){{0,2}}{_NAME_TOKEN}){{0,2}}"
_PARTICLES = frozenset(_PARTICLE[3:-1].split("|"))

# Role words that precede a full name in tickets ("Customer Anna Schmidt", "Contact Ivo Petrov") but
# also ordinary words ("Customer Experience"): after them a first name and a surname are required.
# (Every cue costs scan time on every row: only the frequent ones are listed.)
_WEAK_CUES = frozenset({"customer", "contact"})
# Conversational cues that introduce a name even when it is not in the gazetteer.
_CUE_PHRASES = (
    "my name is", "my name's", "i'm", "i’m", "i am", "this is", "hi", "hello", "hey", "dear",
    "regards", "thanks", "thank you", "cheers", "best", "sincerely", "yours", "signed", "cc",
    "name", "full name", "account holder", "account holder is", "holder", "contact person",
    "billing contact", "forwarded message from", "spoke with", "spoke to", "talked to",
    "forwarding to", "escalated to", "assigned to",
    *sorted(_WEAK_CUES),
)  # fmt: skip
# Cues after which people also write names in lowercase ("cc ingrid abernathy", "thanks maria").
_LOWERCASE_NAME_CUES = frozenset(
    {"cc", "hi", "hello", "hey", "dear", "regards", "thanks", "thank you", "cheers", "best", "signed"}
    | {"spoke with", "spoke to", "talked to", "forwarding to", "escalated to", "assigned to"}
)
_TITLES = ("Mr", "Mrs", "Ms", "Miss", "Mx", "Dr", "Prof", "Herr", "Frau", "Mme", "Mlle", "Sr", "Sra")


def _case_variants(phrase: str) -> set[str]:
    words = phrase.split(" ")
    return {phrase, phrase[:1].upper() + phrase[1:], " ".join(w[:1].upper() + w[1:] for w in words)}


# Literal tries (not (?i:...)) so the engine can jump to candidate first letters; the word boundary
# before a cue is checked in Python.
_CUE_TRIE = trie_pattern(v for p in _CUE_PHRASES for v in _case_variants(p)).replace("\\ ", r"[ \t]+")
_CUE_SEP = r"(?:[ \t]*[,:][ \t]*(?:\r?\n[ \t]*){0,2}|[ \t]*(?:\r?\n[ \t]*){1,2}|[ \t]+)"
_CUE_RX = re.compile(rf"(?P<cue>{_CUE_TRIE}){_CUE_SEP}(?P<name>{_NAME_TOKEN}{_SURNAMES})")
# "Anna Schmidt here: ..." opens a chat message or a call note; the name must open its line.
_HERE_RX = re.compile(r"here[:,]")  # a literal: the engine skips to it
_NAME_BEFORE_HERE = re.compile(rf"(?:^|(?<=[\n\x00]))(?P<name>{_NAME_TOKEN}(?:[ \t]+{_NAME_TOKEN}){{1,2}})\Z")
_LOWER_WORD = rf"{_LOWER}+(?:['’\-]{_LOWER}+)?"
# A lowercase name ends the line or the clause: "cc ingrid abernathy", "thanks maria, ...".
# (Only the cues after which a lowercase name is taken: the others would be matched and dropped.)
_LOWER_CUE_TRIE = trie_pattern(v for p in _LOWERCASE_NAME_CUES for v in _case_variants(p)).replace(
    "\\ ", r"[ \t]+"
)
_LOWER_CUE_RX = re.compile(
    rf"(?P<cue>{_LOWER_CUE_TRIE}){_CUE_SEP}(?P<name>{_LOWER_WORD}(?:[ \t]+{_LOWER_WORD}){{0,2}})(?![^\W_])"
)
_CLAUSE_END = re.compile(r"[ \t]*(?:[,.;:!?)\r\n\x00]|\Z)")
# Endings of English adjectives and nouns that no given name or surname has: a single capitalised word
# with one of them after "this is" or "I am" is emphasis ("This is Unacceptable"), not a name.
_NOT_A_NAME_SUFFIX = re.compile(r"(?:able|ible|ful|ous|ment|ness|ing)\Z")
_TITLE_RX = re.compile(
    rf"{trie_pattern(_TITLES)}\.?[ \t]+(?P<name>(?:{_PARTICLE}[ \t]+){{0,2}}{_NAME_TOKEN}{_SURNAMES})"
)


# Capitalised words that follow a cue or a first name without being a name. Kept deliberately broad:
# a missed surname costs recall on one token, a false surname swallows the next sentence's first word.
_STOP_WORDS = frozenset(
    """
    A About Account Accounts Admin After Again Agent All Already Also Am An And Any Anyone Are As At
    Back Bad Bank Be Because Before Being Best Billing Both Broken But By Can Card Care Cheers Could
    Critical Customer Customers Dear Department Desk Did Do Does Done During Each Email Every Everyone
    Folks For From Fwd Glad Good Great Guys Had Happy Has Have He Hello Help Her Here Hey Hi His Hope
    Hoping How However I If Important In Inc Invoice Is It Its Just Kind Kindly Last Let Ltd GmbH
    Manager Many May Me Might More Most Much Must My Need New No Not Now Ok Okay On Once One Only Or
    Order Other Our Out Please Regarding Regards Reply Re Sales Same Sent Service Services She Should
    Since Sir Madam So Some Sorry Still Subject Support Sure Team Thank Thanks That The Their Them
    Then There These They This Those Ticket To Today Tomorrow Too Under Unfortunately Until Up Urgent
    Valued Very Was We Were What When Where Which While Who Why Will With World Would Yes Yesterday
    You Your Yours Writing Calling Reaching Contacting Following Looking Trying Having Getting Going
    Checking Wondering Waiting Emailing Unable Sincerely Warm
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April June July
    August September October November December
    Mr Mrs Ms Miss Mx Dr Prof Herr Frau Mme Mlle Sr Sra Street Road Avenue Office Phone Mobile
    """.split()
)


def word_not_name(word: str) -> bool:
    """Whether one capitalised word ends like an adjective or noun no name ends with ("Unacceptable")."""
    return _NOT_A_NAME_SUFFIX.search(word) is not None


def known_non_name(phrase: str) -> bool:
    """Whether ``phrase`` is a brand or place listed as no person ("Hugo Boss", "Victoria Station")."""
    return _phrase_key(phrase) in _gazetteer().not_names


def non_name_words() -> frozenset[str]:
    """Capitalised words that follow a cue or open a sentence without being a name."""
    return _STOP_WORDS


def _fold(name: str) -> str:
    """ASCII-fold a name so that "Jose" matches a gazetteer "José" (and "Lukasz" matches "Łukasz")."""
    name = name.translate(str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D"}))
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@dataclass(frozen=True)
class _Gazetteer:
    names: frozenset[str]
    ambiguous: frozenset[str]
    first_name_rx: re.Pattern[str]
    not_names: frozenset[str]


def _phrase_key(text: str) -> str:
    return " ".join(re.sub(r"['’\-&]", " ", _fold(text)).casefold().split())


def load_first_names() -> tuple[frozenset[str], frozenset[str]]:
    """The shipped gazetteer: (unambiguous names, ambiguous names), each with ASCII-folded variants."""
    return _gazetteer().names, _gazetteer().ambiguous


@lru_cache(maxsize=1)
def _gazetteer() -> _Gazetteer:
    source = resources.files("llmops.privacy").joinpath("data", "first_names.txt")
    try:
        raw = source.read_text(encoding="utf-8")
    except FileNotFoundError as exc:  # a wheel built without package data
        raise RuntimeError(f"first-name gazetteer missing from the llmops package: {source}") from exc
    names: set[str] = set()
    ambiguous: set[str] = set()
    for line in raw.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        target = ambiguous if entry.endswith("*") else names
        entry = unicodedata.normalize("NFC", entry.rstrip("*").strip())
        target.update({entry, _fold(entry)})
    names -= ambiguous
    # The trie is the first thing in the pattern, so the regex engine can skip to capital letters in C;
    # the word boundary before a name is checked in Python per candidate.
    rx = re.compile(
        rf"(?P<first>{trie_pattern(names | ambiguous)})(?![^\W_])"
        rf"(?P<compound>-{_NAME_TOKEN})?(?P<rest>{_SURNAMES})"
    )
    not_names = (
        resources.files("llmops.privacy").joinpath("data", "not_names.txt").read_text(encoding="utf-8")
    )
    brands = frozenset(
        _phrase_key(line) for line in not_names.splitlines() if line.strip() and not line.startswith("#")
    )
    return _Gazetteer(frozenset(names), frozenset(ambiguous), rx, brands)


_TOKEN_SPLIT = re.compile(r"\S+")


def _trim_surnames(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Token spans of ``text[start:end]`` up to (not including) the first stop word; particles kept
    only when a name token follows them."""
    kept: list[tuple[int, int]] = []
    if start == end:
        return kept
    pending: list[tuple[int, int]] = []
    for tok in _TOKEN_SPLIT.finditer(text, start, end):
        word = tok.group()
        if word in _PARTICLES:
            pending.append(tok.span())
            continue
        if word in _STOP_WORDS:
            break
        kept.extend(pending)
        pending.clear()
        kept.append(tok.span())
    return kept


def _boundary_before(text: str, start: int) -> bool:
    return start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "_'’-")


def _gazetteer_names(text: str) -> list[tuple[int, int]]:
    gaz = _gazetteer()
    out: list[tuple[int, int]] = []
    pos = 0
    search = gaz.first_name_rx.search
    while True:
        m = search(text, pos)
        if m is None:
            return out
        pos = m.start() + 1
        if not _boundary_before(text, m.start()):
            continue
        head_end = m.end("compound") if m.group("compound") else m.end("first")
        surnames = _trim_surnames(text, m.start("rest"), m.end("rest"))
        if m.group("first") in gaz.ambiguous and not (surnames or m.group("compound")):
            # "Will you ...", "May I ...": an ambiguous first name needs a capitalised name after it.
            # "Will Anna call?" is accepted as one name on purpose: rejecting it would also reject
            # "Jack Thomas" or "Grace Kelly" and leak the first name; over-redacting "Will" is cheaper.
            continue
        end = surnames[-1][1] if surnames else head_end
        if _phrase_key(text[m.start() : end]) in gaz.not_names:
            pos = end
            continue
        out.append((m.start(), end))
        pos = end


def _cued_names(text: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for rx in (_CUE_RX, _TITLE_RX):
        pos = 0
        while (m := rx.search(text, pos)) is not None:
            pos = m.start() + 1
            if not _boundary_before(text, m.start()):
                continue
            tokens = _trim_surnames(text, m.start("name"), m.end("name"))
            if tokens and tokens[0][0] == m.start("name"):
                if len(tokens) == 1 and _NOT_A_NAME_SUFFIX.search(text, *tokens[0]):
                    continue  # "This is Unacceptable", "I am Furious": a word, not a name
                if rx is _TITLE_RX and known_non_name(text[m.start() : tokens[-1][1]].replace(".", " ")):
                    continue  # "Dr. Martens": a brand written with a title
                if rx is _CUE_RX and len(tokens) < 2 and m.group("cue").casefold() in _WEAK_CUES:
                    continue
                out.append((tokens[0][0], tokens[-1][1]))
                pos = tokens[-1][1]
    return out


def _here_names(text: str) -> list[tuple[int, int]]:
    """Two or three capitalised words that open a line and are followed by "here:" or "here,"."""
    out: list[tuple[int, int]] = []
    for here in _HERE_RX.finditer(text):
        start = here.start()
        gap = start
        while gap > 0 and text[gap - 1] in " \t":
            gap -= 1
        if gap == start:
            continue
        m = _NAME_BEFORE_HERE.search(text, max(0, gap - 60), gap)
        if m is None:
            continue
        tokens = _trim_surnames(text, m.start("name"), m.end("name"))
        if len(tokens) >= 2 and tokens[0][0] == m.start("name") and tokens[-1][1] == m.end("name"):
            if not known_non_name(text[m.start() : m.end()]):
                out.append((m.start(), m.end()))
    return out


def _lowercase_name(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    """The lowercase name after a cue: its words up to the first common word; the first one a known
    first name, except after "cc", which is followed by nothing but names (up to the clause's end)."""
    cue = " ".join(m.group("cue").casefold().split())
    if cue not in _LOWERCASE_NAME_CUES:
        return None
    words = list(_TOKEN_SPLIT.finditer(text, m.start("name"), m.end("name")))
    kept = []
    for word in words:
        if word.group().capitalize() in _STOP_WORDS or word.group() in _PARTICLES:
            break
        kept.append(word)
    if not kept:
        return None
    if cue == "cc":
        if len(kept) < len(words) or not _CLAUSE_END.match(text, m.end("name")):
            return None
    elif kept[0].group().capitalize() not in _gazetteer().names:
        return None
    return kept[0].start(), kept[-1].end()


def _lowercase_cued_names(text: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    pos = 0
    while (m := _LOWER_CUE_RX.search(text, pos)) is not None:
        pos = m.start() + 1
        if _boundary_before(text, m.start()) and (span := _lowercase_name(text, m)) is not None:
            out.append(span)
            pos = span[1]
    return out


def detect_person_name(text: str) -> list[Span]:
    """Gazetteer first names (plus a following capitalised surname), names introduced by a cue, and
    lowercase names right after a greeting, sign-off or "cc"."""
    spans = [Span(s, e, "person_name") for s, e in _gazetteer_names(text)]
    spans += [Span(s, e, "person_name") for s, e in _cued_names(text)]
    spans += [Span(s, e, "person_name") for s, e in _here_names(text)]
    spans += [Span(s, e, "person_name") for s, e in _lowercase_cued_names(text)]
    return spans
