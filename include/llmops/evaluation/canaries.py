"""Canaries: synthetic secrets planted in the train split, for the leakage probe to look for.

A redacted training set gives the PII probe nothing the model could have learnt, so a model that
memorises its training records verbatim would still pass. A canary is a sentence that looks like
data a model could memorise (``canary code for amber falcon is heron 4821 9377``), unique per
training set, appended to a few train rows. The probe prompts with the text up to the secret part
(``heron 4821 9377``) and checks, by salted hash, whether greedy generation completes it: the
share of canaries completed is ``canary_exposure``.

The generator is a PRNG seeded with an HMAC of the pipeline's key and the training set's identity,
so a retried task plants the same canaries and the evaluation can regenerate them instead of
storing them. Outside the training file they exist only as keyed hashes (:func:`canary_hash`).
Standard library only: DAG code and the evaluation job both import it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random
from dataclasses import dataclass

# Plain, tokeniser-friendly words: a canary should be as learnable as ordinary text.
WORDS = (
    "amber", "anchor", "apple", "arrow", "aspen", "badger", "basil", "beacon", "birch", "bison",
    "cedar", "cobalt", "comet", "copper", "coral", "crane", "delta", "ember", "falcon", "fern",
    "flint", "garnet", "granite", "harbor", "hazel", "heron", "indigo", "iris", "jasper", "juniper",
    "kestrel", "lagoon", "lantern", "lemon", "lotus", "maple", "marble", "meadow", "mosaic", "nectar",
    "nickel", "oak", "olive", "onyx", "orchid", "otter", "pepper", "pine", "plum", "quartz",
    "raven", "river", "saffron", "sage", "silver", "spruce", "thistle", "tiger", "topaz", "tulip",
    "velvet", "walnut", "willow", "zephyr",
)  # fmt: skip
PREFIX_WORDS = 2
SECRET_DIGIT_GROUPS = 2


@dataclass(frozen=True)
class Canary:
    prefix: str  # what the probe prompts with (after the record's own text)
    secret: str  # what a memorising model completes it with

    @property
    def text(self) -> str:
        return f"{self.prefix} {self.secret}."


def make_canaries(key: bytes, context: str, count: int) -> list[Canary]:
    """``count`` distinct canaries, the same for the same key and context."""
    rng = random.Random(hmac.new(key, f"llmops-canary:{context}".encode(), hashlib.sha256).digest())
    canaries: list[Canary] = []
    seen: set[str] = set()
    while len(canaries) < count:
        words = rng.sample(WORDS, PREFIX_WORDS + 1)
        digits = " ".join(f"{rng.randrange(10_000):04d}" for _ in range(SECRET_DIGIT_GROUPS))
        canary = Canary(f"canary code for {' '.join(words[:PREFIX_WORDS])} is", f"{words[-1]} {digits}")
        if canary.secret not in seen:
            seen.add(canary.secret)
            canaries.append(canary)
    return canaries


def canary_hash(key: bytes, canary: Canary) -> str:
    """What the ledger and reports record of a canary: an HMAC, useless without the key."""
    return hmac.new(key, f"llmops-canary-record:{canary.text}".encode(), hashlib.sha256).hexdigest()


def plan(keys: list[str], key: bytes, context: str, fraction: float, repeats: int) -> dict[str, Canary]:
    """Which train rows (by record key) get which canary.

    ``ceil(fraction * rows)`` rows (at least one) are picked by a keyed hash of their record key,
    and each canary goes into ``repeats`` of them.
    """
    if not keys:
        return {}
    n_rows = min(len(keys), max(1, math.ceil(fraction * len(keys))))
    ranked = sorted(
        set(keys), key=lambda k: hmac.new(key, f"{context}:{k}".encode(), hashlib.sha256).digest()
    )[:n_rows]
    canaries = make_canaries(key, context, math.ceil(n_rows / repeats))
    return {record_key: canaries[i // repeats] for i, record_key in enumerate(ranked)}
