"""The catalogue of every metric a model is measured by: one entry per metric, read by the spec's
gate validation, the evaluation job, the gates, MLflow logging and the reports.

An entry says which way is better, which final training methods' evaluations produce it, whether
a chain stage's training job reports it (so a stage gate may bound it), whether reports show it
first, and how to show its value. A metric scored per generated answer against its reference
(``scorer``) is computed by the evaluation job for every method that generates, with nothing else
to change: adding one is one :func:`register` call (in this module, or in a package named by the
``llmops.metrics`` entry point group, which every process loads).

A leaf module: no imports from the rest of the package, so the lowest layers can read it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

ENTRY_POINT_GROUP = "llmops.metrics"
ANSWERS = "answers"  # measured for every method whose evaluation generates answers
EVERY_METHOD = "every"
PAIRS = "pairs"  # measured for every method evaluated on preference pairs


@dataclass(frozen=True)
class Metric:
    """One measurable number about a model."""

    name: str
    title: str
    lower_is_better: bool = False
    # Which final training methods' evaluations produce it: ANSWERS, PAIRS, EVERY_METHOD, or names.
    methods: frozenset[str] | str = ANSWERS
    stage: bool = False  # a chain stage's training job reports it as eval_<name>
    headline: bool = False  # shown first in reports
    table: bool = False  # a row of the per-run report's evaluation table
    percent: bool = False  # a share in [0, 1]
    unit: str = ""
    scorer: Callable[[str, str], float] | None = field(default=None, compare=False)
    # The values it can take (None: unbounded); a share (percent) lies in [0, 1].
    lowest: float | None = None
    highest: float | None = None

    @property
    def value_range(self) -> tuple[float | None, float | None]:
        if self.percent:
            return (
                0.0 if self.lowest is None else self.lowest,
                1.0 if self.highest is None else self.highest,
            )
        return self.lowest, self.highest

    def display(self, value: float | None) -> str:
        """The value as reports show it ("n/a" when not measured)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        if self.percent:
            return f"{value * 100:.1f}%"
        return f"{value:.4g}{(' ' + self.unit) if self.unit else ''}"


CATALOGUE: dict[str, Metric] = {}
_plugins_loaded = False


def _catalogue() -> dict[str, Metric]:
    """The catalogue, with installed packages' metrics added on first use in this process."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        load_plugins()
    return CATALOGUE


def register(metric: Metric) -> Metric:
    """Add a metric to the catalogue (a name already taken is refused unless it is the same entry)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", metric.name):
        raise ValueError(f"metric name {metric.name!r}: lowercase letters, digits and '_' only")
    if isinstance(metric.methods, str) and metric.methods not in (ANSWERS, PAIRS, EVERY_METHOD):
        raise ValueError(
            f"metric {metric.name!r}: methods must be {ANSWERS!r}, {PAIRS!r}, {EVERY_METHOD!r} or method names"
        )
    if metric.scorer is not None and metric.methods != ANSWERS:
        raise ValueError(f"metric {metric.name!r}: a scorer needs generated answers (methods={ANSWERS!r})")
    existing = CATALOGUE.get(metric.name)
    if existing is not None and existing != metric:
        raise ValueError(f"metric {metric.name!r} is already in the catalogue")
    CATALOGUE[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    """Remove a metric added by :func:`register` (tests, plugins being unloaded)."""
    CATALOGUE.pop(name, None)


def get(name: str) -> Metric:
    """The catalogue entry of ``name`` or of ``golden.<set>.<name>``."""
    return _catalogue()[name.rsplit(".", 1)[-1]]


def names() -> tuple[str, ...]:
    return tuple(_catalogue())


def produced_by(method: str) -> tuple[str, ...]:
    """What the evaluation job measures for a final training method."""
    from llmops.training.methods import get_method

    definition = get_method(method)

    def applies(metric: Metric) -> bool:
        if metric.methods == EVERY_METHOD:
            return True
        if metric.methods == ANSWERS:
            return definition.generates_answers
        if metric.methods == PAIRS:
            return definition.evaluation == "pairs"
        return method in metric.methods

    return tuple(m.name for m in _catalogue().values() if applies(m))


def stage_metrics() -> tuple[str, ...]:
    """What a chain stage's training job reports on its held-out split (stage gates may bound it)."""
    return tuple(m.name for m in _catalogue().values() if m.stage)


def scored_per_answer() -> tuple[Metric, ...]:
    """Metrics computed from each generated answer and its reference, averaged over the samples."""
    return tuple(m for m in _catalogue().values() if m.scorer is not None)


def headline() -> tuple[str, ...]:
    return tuple(m.name for m in _catalogue().values() if m.headline)


def table() -> tuple[str, ...]:
    return tuple(m.name for m in _catalogue().values() if m.table)


def gate_metric_pattern() -> re.Pattern[str]:
    """Names a gate may use: a catalogue metric, or golden.<set>.<metric>."""
    alternatives = "|".join(re.escape(n) for n in _catalogue())
    return re.compile(r"^(golden\.[A-Za-z_][A-Za-z0-9_]*\.)?(" + alternatives + r")$")


def load_plugins() -> list[str]:
    """Register the metrics of installed packages (entry point group ``llmops.metrics``: each
    entry a :class:`Metric` or a callable returning them); returns the names added."""
    from importlib.metadata import entry_points

    added = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        found = loaded() if callable(loaded) and not isinstance(loaded, Metric) else loaded
        for metric in found if isinstance(found, list | tuple) else [found]:
            if not isinstance(metric, Metric):
                raise TypeError(f"entry point {entry.name!r} ({entry.value}) gave {type(metric).__name__}")
            register(metric)
            added.append(metric.name)
    return added


# ----------------------------------------------------------------------------------------- scorers


def _scorer(name: str) -> Callable[[str, str], float]:
    """A per-answer scorer of llmops.evaluation.metrics, imported when first used (the catalogue
    stays a leaf module: the spec loader reads it without the evaluation code)."""

    def score(prediction: str, reference: str) -> float:
        from llmops.evaluation import metrics as scores

        return float(getattr(scores, name)(prediction, reference))

    score.__name__ = name
    return score


for _metric in (
    Metric(
        "eval_loss",
        "Eval loss",
        lower_is_better=True,
        methods=EVERY_METHOD,
        stage=True,
        table=True,
        lowest=0.0,
    ),
    Metric(
        "eval_perplexity",
        "Perplexity",
        lower_is_better=True,
        methods=EVERY_METHOD,
        stage=True,
        headline=True,
        table=True,
        lowest=1.0,
    ),
    Metric(
        "token_f1", "Token F1", headline=True, table=True, scorer=_scorer("token_f1"), lowest=0.0, highest=1.0
    ),
    Metric(
        "exact_match", "Exact match", headline=True, table=True, percent=True, scorer=_scorer("exact_match")
    ),
    Metric(
        "rouge_l", "ROUGE-L", headline=True, table=True, scorer=_scorer("rouge_l"), lowest=0.0, highest=1.0
    ),
    Metric("latency_ms_mean", "Latency, mean", lower_is_better=True, table=True, unit="ms", lowest=0.0),
    Metric("latency_ms_p95", "Latency, p95", lower_is_better=True, table=True, unit="ms", lowest=0.0),
    Metric("accuracy", "Label accuracy", percent=True),
    Metric("macro_precision", "Label precision (macro)", lowest=0.0, highest=1.0),
    Metric("macro_recall", "Label recall (macro)", lowest=0.0, highest=1.0),
    Metric("macro_f1", "Label F1 (macro)", lowest=0.0, highest=1.0),
    Metric("pii_leakage_rate", "PII leakage rate", lower_is_better=True, methods=EVERY_METHOD, percent=True),
    Metric("canary_exposure", "Canary exposure", lower_is_better=True, methods=EVERY_METHOD, percent=True),
    Metric("toxicity_rate", "Toxicity rate", lower_is_better=True, percent=True),
    Metric("refusal_rate", "Refusal rate", lower_is_better=True, percent=True),
    Metric("preference_win_rate", "Preference win rate", methods=PAIRS, percent=True),
    Metric("reward_accuracy", "DPO reward accuracy", methods=PAIRS, stage=True, percent=True),
    Metric("reward_margin", "DPO reward margin", methods=PAIRS, stage=True),
):
    register(_metric)
