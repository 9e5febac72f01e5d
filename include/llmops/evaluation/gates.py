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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def evaluate_gates(gates: list[Gate], metrics: dict[str, Any]) -> dict[str, Any]:
    results: list[GateResult] = []
    for gate in gates:
        observed = metrics.get(gate.metric)
        if not isinstance(observed, int | float) or math.isnan(observed):
            results.append(
                GateResult(gate.metric, None, gate.min, gate.max, False, "metric was not produced")
            )
            continue
        problems = []
        if gate.min is not None and observed < gate.min:
            problems.append(f"{observed:.4g} < min {gate.min:.4g} (short by {gate.min - observed:.4g})")
        if gate.max is not None and observed > gate.max:
            problems.append(f"{observed:.4g} > max {gate.max:.4g} (over by {observed - gate.max:.4g})")
        results.append(
            GateResult(
                gate.metric,
                float(observed),
                gate.min,
                gate.max,
                not problems,
                "; ".join(problems) or "within bounds",
            )
        )
    passed = all(r.passed for r in results)
    return {"passed": passed, "gates": [r.to_dict() for r in results]}


def raise_if_failed(decision: dict[str, Any]) -> None:
    if decision["passed"]:
        return
    failed = [g for g in decision["gates"] if not g["passed"]]
    lines = [f"{g['metric']}: {g['reason']}" for g in failed]
    raise GateFailed(f"{len(failed)} of {len(decision['gates'])} gate(s) failed: " + "; ".join(lines))
