"""Scanning text for personal data, and applying a pipeline's privacy policy to a dataset.

Why: a fine-tuned model can memorise and regurgitate what it was trained on, so personal data has to
be removed or pseudonymised before a snapshot reaches training. What counts as personal data, how
each type is found and normalised, is the table in :mod:`llmops.privacy.pii_types`; the detectors
are in :mod:`llmops.privacy.detectors`.

Performance: columns are scanned in batches joined into one string with a NUL separator, so each
pattern runs once per ~1 MiB batch in C rather than once per row from Python; no pattern can match
across the separator, so the result equals a per-row scan. Structured types (e-mail, phone, card,
IBAN, SSN, IP) run only in the windows of a batch that can hold their values, found by one vectorised
pass (:mod:`llmops.privacy.windows`); rows with no candidate cost no Python work at all.

Nothing in this module logs or reports raw values: reports hold counts only.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import itertools
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llmops.privacy import pii_types
from llmops.privacy.pii_types import Span

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import pandas as pd

    from llmops.privacy.name_engines import NameEngine
    from llmops.specs.schema import PrivacySpec

log = logging.getLogger(__name__)

REDACTED = "[REDACTED]"
#: Label used for pseudonyms of column values whose PII type could not be determined.
GENERIC_TYPE = "value"

TextAction = Literal["mask", "pseudonymise"]

_SEP = "\x00"  # joins rows for batched scanning; no detector pattern can match it
_BATCH_CHARS = 1 << 20
_TYPE_SAMPLE = 200  # values sampled to decide a column's PII type
_TYPE_MAJORITY = 0.5


# --------------------------------------------------------------------------------------------------
# Scanning and redaction
# --------------------------------------------------------------------------------------------------


def _check_types(types: Iterable[str] | None) -> tuple[str, ...]:
    known = pii_types.names()
    if types is None:
        return known
    wanted = set(types)
    unknown = sorted(wanted - set(known))
    if unknown:
        raise ValueError(f"unknown PII type(s): {', '.join(unknown)} (known: {', '.join(known)})")
    return tuple(t for t in known if t in wanted)


def _resolve(spans: list[Span]) -> list[Span]:
    """Drop overlaps deterministically and return spans sorted by start.

    Within each cluster of mutually overlapping spans, spans are taken in order of type priority,
    then length (longer first), then position, skipping any that overlap one already taken.
    Clusters are independent, so this equals a global greedy pass at a fraction of the cost.
    """
    spans.sort()
    out: list[Span] = []
    i, n = 0, len(spans)
    while i < n:
        j, end = i + 1, spans[i].end
        while j < n and spans[j].start < end:
            end = max(end, spans[j].end)
            j += 1
        if j == i + 1:
            out.append(spans[i])
        else:
            kept: list[Span] = []
            priority = {t: pii_types.get(t).priority for t in {s.pii_type for s in spans[i:j]}}
            for span in sorted(spans[i:j], key=lambda s: (priority[s.pii_type], s.start - s.end, s.start)):
                if all(span.end <= k.start or k.end <= span.start for k in kept):
                    kept.append(span)
            out.extend(sorted(kept))
        i = j
    return out


def _detect(text: str, types: tuple[str, ...]) -> list[Span]:
    """Every type's spans in ``text`` (a batch), overlaps resolved. Structured types whose detector is
    the shipped one run windowed (:func:`llmops.privacy.detectors.windowed`): the same spans, found
    only where the batch can hold them (:mod:`llmops.privacy.windows`)."""
    from llmops.privacy import detectors, windows

    spans: list[Span] = []
    found: windows.Windows | None = None
    looked = False
    for pii_type in types:
        detect = pii_types._resolve_detector(pii_types.get(pii_type))
        fast = detectors.windowed(detect)
        if fast is not None and not looked:
            found, looked = windows.locate(text), True
        spans.extend(detect(text) if fast is None or found is None else fast(text, found))
    return _resolve(spans)


def scan_text(text: str, types: Iterable[str] | None = None, names: NameEngine | None = None) -> list[Span]:
    """All PII spans in ``text`` (optionally only ``types``), non-overlapping and sorted by start.

    Restricting ``types`` also restricts overlap resolution, so a type you did not ask for can never
    hide one you did. ``names`` adds a name engine (:mod:`llmops.privacy.name_engines`) to the
    gazetteer.
    """
    return scan_many([text], types, names)[0]


def scan_many(
    texts: Sequence[str], types: Iterable[str] | None = None, names: NameEngine | None = None
) -> list[list[Span]]:
    """``[scan_text(t, types, names) for t in texts]``, computed over batched joins of the texts."""
    wanted = _check_types(types)
    result = _scan_batched(texts, wanted)
    if names is not None and "person_name" in wanted:
        for row in names.refine(texts, result):
            result[row] = _resolve(result[row])
    return result


def _scan_batched(texts: Sequence[str], wanted: tuple[str, ...]) -> list[list[Span]]:
    result: list[list[Span]] = [[] for _ in texts]
    # ends[i]: where row i's separator falls when every row is joined; a batch takes rows while the
    # batch stays under _BATCH_CHARS (at least one row).
    ends = list(itertools.accumulate(len(t) + 1 for t in texts))
    first = 0
    while first < len(texts):
        base = ends[first - 1] if first else 0
        last = max(bisect.bisect_left(ends, base + _BATCH_CHARS + 1, first), first + 1)
        batch = texts[first:last]
        offsets = [0, *(end - base for end in ends[first : last - 1])]
        for span in _detect(_SEP.join(batch), wanted):
            i = bisect.bisect_right(offsets, span.start) - 1
            base_i = offsets[i]
            if span.end > base_i + len(batch[i]):  # no shipped pattern can match the separator
                raise RuntimeError("internal error: a PII span crossed a row boundary")
            result[first + i].append(Span(span.start - base_i, span.end - base_i, span.pii_type))
        first = last
    return result


_SHAPE_CHARS = 40


def value_shape(value: str) -> str:
    """The form of a value without its content: letters become ``A``/``a``, digits ``9``, other
    characters stay, at most 40 of them ("Anna Smith, +49 30" -> "Aaaa Aaaaa, +99 99").

    Why: a failing value's form is what one needs to see why it failed (a pattern, a length, a
    separator), and it cannot be read back to the value the way a masked sample can, where any
    personal data the detectors miss would stay readable.
    """
    out = []
    for ch in value[:_SHAPE_CHARS]:
        if ch.isdigit():
            out.append("9")
        elif ch.isalpha():
            out.append("A" if ch.isupper() else "a")
        elif ch.isspace():
            out.append(" ")
        else:
            out.append(ch)
    more = len(value) - _SHAPE_CHARS
    return "".join(out) + (f"...(+{more} chars)" if more > 0 else "")


def normalise(value: str, pii_type: str) -> str:
    """Canonical form hashed for pseudonyms, so formatting variants of one value share a token."""
    known = pii_types.REGISTRY.get(pii_type)
    return known.normaliser(value) if known else pii_types.as_is(value)


class Pseudonymiser:
    """Stable keyed pseudonyms: HMAC-SHA256 over the type and the normalised value.

    Why keyed: a plain hash of an email or phone number can be reversed by hashing guesses; without
    the key that is impossible, and rotating the key unlinks all tokens. The type is part of the MAC
    input so equal strings of different types do not share a token.
    """

    MIN_KEY_BYTES = 16
    TOKEN_HEX_CHARS = 12

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray):
            raise TypeError("pseudonymisation key must be bytes")
        if len(key) < self.MIN_KEY_BYTES:
            raise ValueError(
                f"pseudonymisation key is too short: {len(key)} bytes, need at least {self.MIN_KEY_BYTES}"
            )
        self._mac = hmac.new(bytes(key), digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "Pseudonymiser(key=<hidden>)"

    def token(self, value: str, pii_type: str) -> str:
        """``<pii_type:hex12>`` for ``value``; identical for identical normalised values."""
        mac = self._mac.copy()
        mac.update(pii_type.encode("utf-8") + b"\x1f" + normalise(value, pii_type).encode("utf-8"))
        return f"<{pii_type}:{mac.hexdigest()[: self.TOKEN_HEX_CHARS]}>"


def _check_actions(actions: Mapping[str, str], pseudonymiser: Pseudonymiser | None) -> None:
    _check_types(actions)
    bad = sorted(t for t, a in actions.items() if a not in ("mask", "pseudonymise"))
    if bad:
        raise ValueError(f"free-text action must be 'mask' or 'pseudonymise' (bad for: {', '.join(bad)})")
    if pseudonymiser is None and "pseudonymise" in actions.values():
        raise ValueError("a Pseudonymiser is required for the 'pseudonymise' action")


def _apply_spans(
    text: str,
    spans: Sequence[Span],
    actions: Mapping[str, str],
    pseudonymiser: Pseudonymiser | None,
    counts: Counter[str],
) -> str:
    pieces: list[str] = []
    pos = 0
    for span in spans:
        pieces.append(text[pos : span.start])
        if actions[span.pii_type] == "mask":
            pieces.append(pii_types.get(span.pii_type).mask_text)
        else:
            assert pseudonymiser is not None
            pieces.append(pseudonymiser.token(text[span.start : span.end], span.pii_type))
        counts[span.pii_type] += 1
        pos = span.end
    pieces.append(text[pos:])
    return "".join(pieces)


def redact_text(
    text: str, actions: Mapping[str, TextAction | str], pseudonymiser: Pseudonymiser | None = None
) -> tuple[str, dict[str, int]]:
    """Replace the PII types named in ``actions`` by a mask or a pseudonym; other types are kept.

    Returns the new text and the number of replacements per type.
    """
    _check_actions(actions, pseudonymiser)
    counts: Counter[str] = Counter()
    new_text = _apply_spans(text, scan_text(text, actions), actions, pseudonymiser, counts)
    return new_text, dict(counts)


# --------------------------------------------------------------------------------------------------
# DataFrame policy
# --------------------------------------------------------------------------------------------------


@dataclass
class PrivacyReport:
    """What a privacy policy did to one dataset: counts and decisions only, never values."""

    rows_scanned: int = 0
    #: pii_type -> action -> count. Column policies count values; free-text policies count spans.
    #: Column values of undetermined type are counted under "unclassified".
    counts_by_type_action: dict[str, dict[str, int]] = field(default_factory=dict)
    counts_by_column: dict[str, int] = field(default_factory=dict)
    column_actions: dict[str, str] = field(default_factory=dict)
    column_types: dict[str, str | None] = field(default_factory=dict)
    columns_dropped: list[str] = field(default_factory=list)
    allowed_columns: dict[str, str] = field(default_factory=dict)
    free_text_columns: list[str] = field(default_factory=list)
    free_text_actions: dict[str, str] = field(default_factory=dict)
    #: Text columns the policy does not name, scanned for every type (default deny).
    scanned_by_default: list[str] = field(default_factory=list)
    name_engine: str = "gazetteer"

    def add(self, pii_type: str, action: str, column: str, n: int) -> None:
        if n <= 0:
            return
        by_action = self.counts_by_type_action.setdefault(pii_type, {})
        by_action[action] = by_action.get(action, 0) + n
        self.counts_by_column[column] = self.counts_by_column.get(column, 0) + n

    @property
    def total_replacements(self) -> int:
        return sum(self.counts_by_column.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe copy (plain dicts, lists, str and int)."""
        return {
            "rows_scanned": self.rows_scanned,
            "counts_by_type_action": {t: dict(a) for t, a in sorted(self.counts_by_type_action.items())},
            "counts_by_column": dict(sorted(self.counts_by_column.items())),
            "column_actions": dict(sorted(self.column_actions.items())),
            "column_types": dict(sorted(self.column_types.items())),
            "columns_dropped": list(self.columns_dropped),
            "allowed_columns": dict(sorted(self.allowed_columns.items())),
            "free_text_columns": list(self.free_text_columns),
            "free_text_actions": dict(sorted(self.free_text_actions.items())),
            "scanned_by_default": list(self.scanned_by_default),
            "name_engine": self.name_engine,
            "total_replacements": self.total_replacements,
        }


def _non_null_texts(series: pd.Series) -> tuple[pd.Series, list[str]]:
    mask = series.notna()
    return mask, [v if isinstance(v, str) else str(v) for v in series[mask].tolist()]


def _with_values(series: pd.Series, mask: pd.Series, values: list[str]) -> pd.Series:
    """``series`` with its non-null entries replaced (positionally, so duplicate index labels are
    fine), keeping a string dtype where there was one and becoming ``object`` otherwise."""
    import pandas as pd
    from pandas.api.types import is_string_dtype

    data = series.to_numpy(dtype=object, copy=True)
    data[mask.to_numpy(dtype=bool)] = values
    dtype = series.dtype if is_string_dtype(series.dtype) else object
    return pd.Series(data, index=series.index, name=series.name, dtype=dtype)


def detect_column_type(values: Sequence[str]) -> str | None:
    """The PII type that whole values of a column have (judged on a leading sample), or None.

    A value counts when one detected span covers it entirely; the column gets a type when at least
    half of the sampled values agree.
    """
    sample = [v.strip() for v in values[:_TYPE_SAMPLE]]
    sample = [v for v in sample if v]
    if not sample:
        return None
    votes: Counter[str] = Counter()
    for value, spans in zip(sample, scan_many(sample), strict=True):
        if len(spans) == 1 and spans[0].start == 0 and spans[0].end == len(value):
            votes[spans[0].pii_type] += 1
    if not votes:
        return None
    pii_type, n = votes.most_common(1)[0]
    return pii_type if n >= _TYPE_MAJORITY * len(sample) else None


def _require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in df.columns]
    if missing:
        available = ", ".join(map(str, df.columns))
        raise ValueError(
            f"{what} names column(s) missing from the data: {', '.join(map(repr, missing))} "
            f"(available: {available})"
        )


class UnscannableColumn(ValueError):
    """A column the policy does not name holds personal data that scanning cannot safely rewrite."""


def _unnamed_text_columns(df: pd.DataFrame, policy: PrivacySpec, system_columns: Iterable[str]) -> list[str]:
    """Columns holding text that neither a column rule nor the free-text policy names."""
    from pandas.api.types import is_object_dtype, is_string_dtype

    named = (
        set(policy.columns) | set(policy.free_text.columns if policy.free_text else ()) | set(system_columns)
    )
    return [
        str(c)
        for c in df.columns
        if c not in named and (is_string_dtype(df[c].dtype) or is_object_dtype(df[c].dtype))
    ]


def _apply_column_rules(
    out: pd.DataFrame, policy: PrivacySpec, pseudonymiser: Pseudonymiser | None, report: PrivacyReport
) -> pd.DataFrame:
    for column, rule in policy.columns.items():
        report.column_actions[column] = rule.action
        if rule.action == "drop":
            out = out.drop(columns=[column])
            report.columns_dropped.append(column)
            continue
        if rule.action == "allow":
            report.allowed_columns[column] = rule.justification or ""
            continue
        mask, texts = _non_null_texts(out[column])
        col_type = detect_column_type(texts)
        report.column_types[column] = col_type
        if rule.action == "mask":
            label = pii_types.get(col_type).mask_text if col_type else REDACTED
            new_values = [label] * len(texts)
        else:
            assert pseudonymiser is not None
            label_type = col_type or GENERIC_TYPE
            tokens = {v: pseudonymiser.token(v, label_type) for v in dict.fromkeys(texts)}
            new_values = [tokens[v] for v in texts]
        out[column] = _with_values(out[column], mask, new_values)
        report.add(col_type or "unclassified", rule.action, column, len(texts))
    return out


def _redact_column(
    out: pd.DataFrame,
    column: str,
    actions: Mapping[str, str],
    pseudonymiser: Pseudonymiser | None,
    names: NameEngine | None,
    report: PrivacyReport,
) -> None:
    mask, texts = _non_null_texts(out[column])
    originals = out[column][mask].tolist()
    counts: Counter[str] = Counter()
    new_values = [
        _apply_spans(text, spans, actions, pseudonymiser, counts) if spans else original
        for text, original, spans in zip(texts, originals, scan_many(texts, actions, names), strict=True)
    ]
    if counts:
        out[column] = _with_values(out[column], mask, new_values)
    for pii_type, n in counts.items():
        report.add(pii_type, actions[pii_type], column, n)


def _scan_unnamed(
    out: pd.DataFrame,
    column: str,
    actions: Mapping[str, str],
    pseudonymiser: Pseudonymiser | None,
    names: NameEngine | None,
    protected: Iterable[str],
) -> dict[str, int]:
    """Personal data in an unnamed column that must not be rewritten in place: a record key (masking
    it would merge records) or values that are not plain text (lists, mappings)."""
    values = out[column].dropna().tolist()
    if column in protected:
        texts = [v if isinstance(v, str) else str(v) for v in values]
    else:
        texts = [str(v) for v in values if not isinstance(v, str)]
    found: Counter[str] = Counter()
    for spans in scan_many(texts, actions, names):
        found.update(s.pii_type for s in spans)
    return dict(found)


def apply_privacy_policy(
    df: pd.DataFrame,
    policy: PrivacySpec,
    pseudonymiser: Pseudonymiser | None = None,
    *,
    key_columns: Iterable[str] = (),
    system_columns: Iterable[str] = (),
) -> tuple[pd.DataFrame, PrivacyReport]:
    """Apply column policies, then the free-text policy, then scan every other text column; return a
    new frame and a count-only report.

    Column actions: ``drop`` removes the column; ``mask`` replaces every non-null value with the mask
    of the column's detected type (or ``[REDACTED]``); ``pseudonymise`` replaces each value with a
    keyed token; ``allow`` keeps it and records the justification. Free-text redaction runs on
    ``policy.free_text.columns`` except those already dropped, masked or pseudonymised as a whole.

    Default deny: a text column the policy does not name at all (``system_columns`` aside) is scanned
    for every type, with the free-text action where the policy gives one and ``mask`` otherwise. Such
    a column that is a record key (``key_columns``), or holds values that are not strings, is not
    rewritten: personal data found there raises :class:`UnscannableColumn` naming the column.
    """
    from llmops.privacy.name_engines import engine_for

    free_text = policy.free_text
    _require_columns(df, policy.columns, "privacy policy 'columns'")
    if free_text is not None:
        _require_columns(df, free_text.columns, "privacy policy 'free_text.columns'")
        _check_actions(free_text.types, pseudonymiser)
    if pseudonymiser is None and any(p.action == "pseudonymise" for p in policy.columns.values()):
        raise ValueError("a Pseudonymiser is required for the 'pseudonymise' column action")
    names = engine_for(policy.names.engine, policy.names.model)
    unnamed = _unnamed_text_columns(df, policy, system_columns)

    report = PrivacyReport(rows_scanned=len(df), name_engine=policy.names.engine)
    out = _apply_column_rules(df.copy(), policy, pseudonymiser, report)
    if free_text is not None:
        actions = dict(free_text.types)
        report.free_text_actions = dict(sorted(actions.items()))
        for column in free_text.columns:
            action = report.column_actions.get(column)
            if action in ("drop", "mask", "pseudonymise"):
                log.info(
                    "free-text scan skips column %s: already handled by column action %s", column, action
                )
                continue
            if action == "allow":
                log.warning("column %s is both 'allow'ed and listed as free text; redacting it", column)
            report.free_text_columns.append(column)
            _redact_column(out, column, actions, pseudonymiser, names, report)

    default_actions = {
        t: (free_text.types.get(t, "mask") if free_text else "mask") for t in pii_types.names()
    }
    if pseudonymiser is None:
        default_actions = dict.fromkeys(default_actions, "mask")
    keys = set(key_columns)
    for column in unnamed:
        found = _scan_unnamed(out, column, default_actions, pseudonymiser, names, keys)
        if found:
            what = "a record key" if column in keys else "values that are not text"
            raise UnscannableColumn(
                f"column {column!r} is not named in the privacy policy and holds personal data in "
                f"{what} ({', '.join(f'{t}: {n}' for t, n in sorted(found.items()))}): name it under "
                f"privacy.columns (pseudonymise keeps a key stable; drop removes it)"
            )
        report.scanned_by_default.append(column)
        if column not in keys:
            _redact_column(out, column, default_actions, pseudonymiser, names, report)

    log.info(
        "privacy policy applied: %d rows, %d replacements, %d columns dropped, %d scanned by default",
        report.rows_scanned,
        report.total_replacements,
        len(report.columns_dropped),
        len(report.scanned_by_default),
    )
    return out, report
