"""Evaluation gates: the thresholds a candidate must meet before it may be promoted.

The decision and every number behind it are returned (and recorded by the caller) before
`GateFailed` is raised, so a failed gate always leaves evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmops.errors import PermanentError

if TYPE_CHECKING:
    from llmops.specs.schema import Gate


class GateFailed(PermanentError, RuntimeError):
    """The candidate did not pass its gates; the message lists each failed gate and by how much."""


@dataclass(frozen=True)
class GateResult:
    metric: str
    observed: float | None
    min: float | None
    max: float | None
    passed: bool
    reason: str
    champion: float | None = None
    beat_champion_by: float | None = None
    base: float | None = None
    beat_base_by: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _improvement(gate: Gate, observed: float, other: float) -> float:
    """How much better ``observed`` is than ``other`` in the metric's direction."""
    return (other - observed) if gate.lower_is_better else (observed - other)


def _directions(gate: Gate) -> tuple[str, str]:
    """The words for better and worse in the metric's direction."""
    return ("below", "above") if gate.lower_is_better else ("above", "below")


def _position(gate: Gate, observed: float, other: float, whose: str) -> str:
    """'token_f1 0.178 is 0.803 below the champion's 0.981'."""
    better, worse = _directions(gate)
    gain = _improvement(gate, observed, other)
    where = "level with" if gain == 0 else f"{abs(observed - other):.4g} {better if gain > 0 else worse}"
    return f"{gate.metric} {observed:.4g} is {where} {whose} {other:.4g}"


def _requirement(gate: Gate, margin: float) -> str:
    """What a ``beat_*_by`` margin asks, in words: 'must be at least 0.02 above', 'must not be more
    than 0.02 below' (a negative margin tolerates that much worse)."""
    better, worse = _directions(gate)
    if margin > 0:
        return f"must be at least {margin:.4g} {better}"
    if margin < 0:
        return f"must not be more than {-margin:.4g} {worse}"
    return f"must not be {worse}"


def _versus(gate: Gate, observed: float, other: float, margin: float, whose: str) -> tuple[str | None, str]:
    """(problem, note) of a comparison with another model on the same data."""
    sentence = _position(gate, observed, other, whose)
    if _improvement(gate, observed, other) < margin:
        return f"{sentence}; {_requirement(gate, margin)}", sentence
    return None, sentence


def _versus_champion(
    gate: Gate,
    observed: float,
    rival: float | None,
    scored: bool,
    unavailable: str | None,
    on_unavailable: str,
) -> tuple[str | None, str | None]:
    """(problem, note) of a beat_champion_by gate."""
    if rival is None and unavailable is not None:
        unscored = f"the champion could not be scored ({unavailable})"
        if on_unavailable == "pass":
            return None, f"{unscored}; passed as the spec allows (on_champion_unavailable: pass)"
        return unscored, None
    if rival is None and scored:
        return f"the champion was scored but produced no {gate.metric}", None
    if rival is None:
        return None, "no champion to beat yet"
    problem, note = _versus(gate, observed, rival, gate.beat_champion_by or 0.0, "the champion's")
    return problem, None if problem else note


def evaluate_gates(
    gates: list[Gate],
    metrics: dict[str, Any],
    champion: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
    evidence: dict[str, str] | None = None,
    champion_unavailable: str | None = None,
    on_champion_unavailable: str = "fail",
) -> dict[str, Any]:
    """Check every gate; `champion` and `baseline` hold the metrics of the current champion and of
    the base model (adapter disabled) on the same data in the same run, if they were scored.
    `evidence` (metric -> words) is added to the reason of a failed gate on that metric, e.g. which
    PII types leaked and how many values (never the values).

    A champion comparison passes when there is no champion yet (the first model sets the bar). When
    there is one but it could not be scored (`champion_unavailable` says why), the comparison fails
    unless `on_champion_unavailable` is "pass": a gate that cannot be checked must not open. A base
    comparison fails when the base model was not scored (nothing proves the improvement).
    """
    results: list[GateResult] = []
    for gate in gates:
        observed = _number(metrics.get(gate.metric))
        rival = _number((champion or {}).get(gate.metric))
        base = _number((baseline or {}).get(gate.metric))
        if observed is None:
            results.append(
                GateResult(
                    gate.metric,
                    None,
                    gate.min,
                    gate.max,
                    False,
                    f"{gate.metric} was not produced",
                    rival,
                    gate.beat_champion_by,
                    base,
                    gate.beat_base_by,
                )
            )
            continue
        problems = []
        notes = []
        if gate.min is not None and observed < gate.min:
            problems.append(
                f"{gate.metric} {observed:.4g} is {gate.min - observed:.4g} below the minimum {gate.min:.4g}"
            )
        if gate.max is not None and observed > gate.max:
            problems.append(
                f"{gate.metric} {observed:.4g} is {observed - gate.max:.4g} above the maximum {gate.max:.4g}"
            )
        if gate.beat_champion_by is not None:
            problem, note = _versus_champion(
                gate, observed, rival, champion is not None, champion_unavailable, on_champion_unavailable
            )
            problems += [problem] if problem else []
            notes += [note] if note else []
        if gate.beat_base_by is not None:
            if base is None:
                problems.append("the base model was not scored: no improvement over it to check")
            else:
                problem, note = _versus(gate, observed, base, gate.beat_base_by, "the base model's")
                (problems if problem else notes).append(problem or note)
        if problems and (evidence or {}).get(gate.metric):
            problems.append(f"[{(evidence or {})[gate.metric]}]")
        results.append(
            GateResult(
                gate.metric,
                observed,
                gate.min,
                gate.max,
                not problems,
                "; ".join(problems) or "; ".join(notes) or "within bounds",
                rival,
                gate.beat_champion_by,
                base,
                gate.beat_base_by,
            )
        )
    passed = all(r.passed for r in results)
    return {
        "passed": passed,
        "gates": [r.to_dict() for r in results],
        "champion_compared": champion is not None,
        "champion_unavailable": champion_unavailable,
        "on_champion_unavailable": on_champion_unavailable if champion_unavailable else None,
        "base_compared": baseline is not None,
    }


def raise_if_failed(decision: dict[str, Any]) -> None:
    if decision["passed"]:
        return
    failed = [g for g in decision["gates"] if not g["passed"]]
    total = len(decision["gates"])
    lines = [
        g["reason"] if g["reason"].startswith(g["metric"]) else f"{g['metric']}: {g['reason']}"
        for g in failed
    ]
    raise GateFailed(f"{len(failed)} of {total} gate{'s' if total != 1 else ''} failed: " + "; ".join(lines))


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Gate-able numbers of one model's metrics (as an evaluation job reports them): base metrics
    and golden.<set>.<metric>."""
    from llmops import metrics as catalogue

    known = catalogue.names()
    flat = {k: float(metrics[k]) for k in known if is_number(metrics.get(k))}
    for name, golden in (metrics.get("golden") or {}).items():
        flat.update({f"golden.{name}.{k}": float(golden[k]) for k in known if is_number(golden.get(k))})
    return flat


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
