"""Data contracts: the columns a source promised, checked before any expectation runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmops.errors import PermanentError


class ContractViolation(PermanentError, ValueError):
    """The data does not have the shape its source's contract promised."""


@dataclass(frozen=True)
class ContractResult:
    source: str
    expected_columns: list[str]
    observed_columns: list[str]
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    drift: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "expected_columns": self.expected_columns,
            "observed_columns": self.observed_columns,
            "missing_columns": self.missing,
            "unexpected_columns": self.unexpected,
            "field_drift": self.drift,
        }


def check_contract(
    source: str, expected_columns: list[str], observed_columns: list[str], drift: dict[str, Any] | None = None
) -> ContractResult:
    """Compare observed columns with the contract; missing columns break it, extra ones are reported."""
    missing = [c for c in expected_columns if c not in observed_columns]
    unexpected = [c for c in observed_columns if c not in expected_columns]
    return ContractResult(
        source, list(expected_columns), list(observed_columns), missing, unexpected, drift or {}
    )


def enforce(results: list[ContractResult]) -> None:
    broken = [r for r in results if not r.ok]
    if broken:
        lines = [f"source '{r.source}' is missing column(s) {', '.join(r.missing)}" for r in broken]
        raise ContractViolation("data contract violated: " + "; ".join(lines))
