"""Data contracts: what a source promised about its data, checked on its raw text before any expectation.

A source's `DataContract` (see `llmops.specs.schema`) makes two kinds of promises:

- row-level ones (type, nullability, allowed values, pattern, maximum length): a row that breaks
  one is quarantined with reasons such as ``contract(body: not nullable)``, like a failed expectation;
- table-level ones (columns present, uniqueness, freshness, minimum rows, no extra columns): breaking
  one means the source itself is broken, so `enforce` fails the run (no retry can fix it).

Semantics, chosen to match the raw zone (every value is text, exactly as extracted) and the casts
that normalisation applies later (`llmops.orchestration.ingest.validate.cast_column`):

- null is None/NaN/NA only; an empty string is a value, so it fails ``nullable: false`` never but
  fails a type, a pattern or allowed values that it does not satisfy;
- types tolerate surrounding whitespace (normalisation trims before casting); allowed values,
  patterns and lengths apply to the value exactly as extracted;
- int: a whole, finite number ("12", "-3", "+5", "12.0", "1e3"; not "1.5"); float: any number
  pandas parses; bool: true/false/t/f/1/0/yes/no/y/n in any case (the cast's set);
  timestamp: ISO 8601 with at least a full date, a time to the minute or more when given, with or
  without a zone (no zone means UTC); date: exactly ``YYYY-MM-DD`` and a real calendar day;
- patterns use search semantics (as JSON Schema, pydantic and Great Expectations do): anchor them
  with ``^...$`` to constrain the whole value;
- uniqueness ignores nulls; its count is the number of values that repeat an earlier one (the rows
  a dedupe on that column would drop);
- row numbers are positions in the frame (0-based), whatever its index.

Nothing raw leaves this module: messages and `ContractOutcome.to_dict()` carry column names and
counts, plus at most a few sample values per reason, and only when a masking function is given.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmops.errors import PermanentError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import pandas as pd

    from llmops.specs.schema import ColumnContract, DataContract

log = logging.getLogger(__name__)

MAX_SAMPLES = 3
SAMPLE_CHARS = 80

TRUE_VALUES = frozenset({"true", "t", "1", "yes", "y"})
FALSE_VALUES = frozenset({"false", "f", "0", "no", "n"})
TIMESTAMP_SHAPE = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?$"
)
DATE_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TYPE_REASONS = {
    "int": "not an int",
    "float": "not a float",
    "bool": "not a bool",
    "timestamp": "not a timestamp",
    "date": "not a date",
}


class ContractViolation(PermanentError, ValueError):
    """The data does not have the shape its source's contract promised."""


# ------------------------------------------------------------------------------------ parsing


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Text to UTC timestamps (NaT where a value is null or not ISO 8601); zone-less text is UTC."""
    import pandas as pd

    text = values.astype(object).where(values.notna(), None)
    stripped = text.map(lambda v: v.strip() if isinstance(v, str) else v)
    shaped = stripped.map(lambda v: isinstance(v, str) and TIMESTAMP_SHAPE.match(v) is not None)
    candidates = stripped.where(shaped, None)
    return pd.to_datetime(candidates, errors="coerce", utc=True, format="ISO8601")


def conforms(values: pd.Series, kind: str) -> pd.Series:
    """Whether each non-null value parses as `kind` (a boolean Series over the same index).

    Null values count as conforming: nullability is its own rule.
    """
    import numpy as np
    import pandas as pd

    nulls = values.isna()
    if kind == "string" or bool(nulls.all()):
        return pd.Series(True, index=values.index)
    text = values[~nulls].map(lambda v: v.strip() if isinstance(v, str) else str(v))
    if kind in ("int", "float"):
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
        ok = numbers.notna()
        if kind == "int":
            finite = np.isfinite(numbers.fillna(0.0))
            ok = ok & finite & (numbers.where(finite, 0.0) % 1 == 0)
    elif kind == "bool":
        ok = text.str.lower().isin(TRUE_VALUES | FALSE_VALUES)
    elif kind == "timestamp":
        ok = parse_timestamps(text).notna()
    elif kind == "date":
        shaped = text.map(lambda v: DATE_SHAPE.match(v) is not None)
        parsed = pd.to_datetime(text.where(shaped, None), errors="coerce", format="%Y-%m-%d")
        ok = shaped & parsed.notna()
    else:
        raise ValueError(f"unknown contract type {kind!r}")
    return _spread(ok, nulls)


def _spread(subset: pd.Series, nulls: pd.Series) -> pd.Series:
    """A boolean over the non-null subset, spread back over the whole column (True at nulls), by position."""
    import numpy as np
    import pandas as pd

    out = np.ones(len(nulls), dtype=bool)
    out[~nulls.to_numpy(dtype=bool)] = subset.to_numpy(dtype=bool)
    return pd.Series(out, index=nulls.index)


# ------------------------------------------------------------------------------------ outcomes


@dataclass(frozen=True)
class ContractResult:
    """Column presence only: what `check_contract` returns (kept for callers that need no more)."""

    source: str
    expected_columns: list[str]
    observed_columns: list[str]
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    drift: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def violations(self) -> list[str]:
        if not self.missing:
            return []
        return [f"source '{self.source}' is missing column(s) {', '.join(self.missing)}"]

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


@dataclass
class ContractOutcome:
    """One source's contract check: what to quarantine, what fails the run, and counts for the record.

    Holds no raw values: `samples` are already masked (and empty unless a mask was given).
    """

    source: str
    rows: int
    contract_declared: bool
    schema_diff: dict[str, Any]
    row_violations: dict[int, list[str]] = field(default_factory=dict)
    table_violations: list[str] = field(default_factory=list)
    rule_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    freshness: dict[str, Any] | None = None
    samples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.table_violations

    @property
    def violations(self) -> list[str]:
        return list(self.table_violations)

    @property
    def missing(self) -> list[str]:
        return list(self.schema_diff["missing_columns"])

    @property
    def unexpected(self) -> list[str]:
        return list(self.schema_diff["unexpected_columns"])

    def to_dict(self) -> dict[str, Any]:
        diff = self.schema_diff
        out: dict[str, Any] = {
            "source": self.source,
            "ok": self.ok,
            "contract_declared": self.contract_declared,
            "rows": self.rows,
            # the keys ContractResult.to_dict() had, which reports read
            "expected_columns": list(diff["expected_columns"]),
            "observed_columns": list(diff["observed_columns"]),
            "missing_columns": list(diff["missing_columns"]),
            "unexpected_columns": list(diff["unexpected_columns"]),
            "field_drift": diff["field_drift"],
            "schema_diff": diff,
            "table_violations": list(self.table_violations),
            "rows_violating": len(self.row_violations),
            "rule_counts": {rule: dict(columns) for rule, columns in self.rule_counts.items()},
            "freshness": self.freshness,
        }
        if self.samples:
            out["samples_masked"] = {reason: list(values) for reason, values in self.samples.items()}
        return out


# ------------------------------------------------------------------------------------ checks


def check_contract(
    source: str, expected_columns: list[str], observed_columns: list[str], drift: dict[str, Any] | None = None
) -> ContractResult:
    """Compare observed columns with the contract; missing columns break it, extra ones are reported."""
    missing = [c for c in expected_columns if c not in observed_columns]
    unexpected = [c for c in observed_columns if c not in expected_columns]
    return ContractResult(
        source, list(expected_columns), list(observed_columns), missing, unexpected, drift or {}
    )


def _hours(value: float) -> str:
    return f"{value:g}"


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _row_rules(
    name: str, rule: ColumnContract, values: pd.Series
) -> Iterable[tuple[str, str, pd.Series, pd.Series | None]]:
    """(rule key, reason, failing mask, raw values for samples) for each row-level promise of a column."""
    nulls = values.isna()
    present = values[~nulls].map(lambda v: v if isinstance(v, str) else str(v))
    if not rule.nullable:
        yield "nullable", f"contract({name}: not nullable)", nulls, None
    if rule.type != "string":
        yield "type", f"contract({name}: {TYPE_REASONS[rule.type]})", ~conforms(values, rule.type), values
    if rule.allowed_values is not None:
        ok = present.isin(set(rule.allowed_values))
        yield "allowed_values", f"contract({name}: not in allowed values)", ~_spread(ok, nulls), values
    if rule.pattern is not None:
        compiled = re.compile(rule.pattern)
        ok = present.map(lambda v: compiled.search(v) is not None)
        yield "pattern", f"contract({name}: does not match pattern)", ~_spread(ok, nulls), values
    if rule.max_length is not None:
        ok = present.str.len() <= rule.max_length
        yield "max_length", f"contract({name}: longer than {rule.max_length})", ~_spread(ok, nulls), values


@dataclass
class _Findings:
    """What the checks of one source found so far (filled by the check functions below)."""

    table: list[str] = field(default_factory=list)
    row_violations: dict[int, list[str]] = field(default_factory=dict)
    rule_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)
    type_drift: dict[str, dict[str, Any]] = field(default_factory=dict)

    def count(self, rule_key: str, column: str, n: int) -> None:
        if n:
            self.rule_counts.setdefault(rule_key, {})[column] = n


def _check_columns(
    found: _Findings,
    where: str,
    declared: dict[str, ColumnContract],
    frame: pd.DataFrame,
    mask: Callable[[str], str] | None,
) -> None:
    """Row-level rules of each declared column (rows to quarantine) and uniqueness (a table break)."""
    for name, rule in declared.items():
        if name not in frame.columns:
            continue
        values = frame[name]
        for rule_key, reason, bad, raw in _row_rules(name, rule, values):
            failing = bad.to_numpy(dtype=bool)
            n = int(failing.sum())
            if rule_key == "type":
                found.type_drift[name] = {"type": rule.type, "unparseable": n}
            found.count(rule_key, name, n)
            if not n:
                continue
            for row in frame.index[failing]:
                found.row_violations.setdefault(int(row), []).append(reason)
            if mask is not None and raw is not None:
                picked = [v for v in raw[failing].tolist()[:MAX_SAMPLES] if v is not None]
                found.samples[reason] = [mask(str(v))[:SAMPLE_CHARS] for v in picked]
        if rule.unique:
            duplicated = int(values.dropna().duplicated(keep="first").sum())
            found.count("unique", name, duplicated)
            if duplicated:
                found.table.append(
                    f"{where}: column '{name}' has {duplicated} duplicated values in {len(frame)} rows "
                    f"(contract: unique)"
                )


def _check_freshness(
    found: _Findings, where: str, contract: DataContract, frame: pd.DataFrame, now: datetime
) -> dict[str, Any] | None:
    """The newest timestamp of the freshness column against the contract's maximum age."""
    import pandas as pd

    rule = contract.freshness
    if rule is None:
        return None
    freshness: dict[str, Any] = {
        "column": rule.column,
        "max_age_hours": rule.max_age_hours,
        "newest_age_hours": None,
    }
    if rule.column not in frame.columns:
        found.table.append(f"{where}: freshness column '{rule.column}' is absent")
        return freshness
    if not len(frame):
        return freshness
    newest = parse_timestamps(frame[rule.column]).max()
    if pd.isna(newest):
        found.table.append(f"{where}: freshness column '{rule.column}' has no ISO 8601 timestamps")
        return freshness
    age = (_as_utc(now) - newest.to_pydatetime()).total_seconds() / 3600
    freshness["newest_age_hours"] = round(age, 2)
    if age > rule.max_age_hours:
        found.table.append(
            f"{where}: newest {rule.column} is {age:.1f} h old, contract allows {_hours(rule.max_age_hours)} h"
        )
    return freshness


def _check_table(
    found: _Findings,
    where: str,
    contract: DataContract,
    rows: int,
    unexpected: list[str],
    drift: dict[str, Any],
) -> None:
    """Table-level promises: minimum rows, no extra columns (or record fields) when not allowed."""
    if rows < contract.min_rows:
        found.table.append(f"{where} has {rows} rows, contract requires at least {contract.min_rows}")
    if not contract.allow_extra_columns:
        extra_fields = [f for f, n in (drift.get("unexpected_fields") or {}).items() if n]
        extras = list(dict.fromkeys([*unexpected, *extra_fields]))
        if extras:
            found.table.append(
                f"{where} has unexpected column(s) {', '.join(extras)}; its contract does not allow extra columns"
            )


def evaluate_contract(
    source_name: str,
    contract: DataContract | None,
    df: pd.DataFrame,
    expected_columns: list[str],
    drift: dict[str, Any] | None,
    now: datetime,
    *,
    mask: Callable[[str], str] | None = None,
) -> ContractOutcome:
    """Check one source's raw (all-text) frame against its contract: rows to quarantine, breaks to fail on.

    Without a contract only column presence is checked (what `check_contract` does). `now` is the
    reference time for freshness (naive means UTC). With `mask`, up to a few failing values per
    reason are kept, masked and truncated, for the validation record; without it, none are.
    """
    drift = drift or {}
    observed = [str(c) for c in df.columns]
    rows = len(df)
    declared = contract.columns if contract is not None else {}
    missing = [c for c in expected_columns if c not in observed]
    unexpected = [c for c in observed if c not in expected_columns]
    contract_absent = [c for c in declared if c not in observed and c not in missing]
    where = f"source '{source_name}'"
    found = _Findings()
    if missing:
        found.table.append(f"{where} is missing column(s) {', '.join(missing)}")
    if contract_absent:
        found.table.append(
            f"{where}: column(s) {', '.join(contract_absent)} declared in its contract are absent"
        )

    frame = df.reset_index(drop=True)
    _check_columns(found, where, declared, frame, mask)
    freshness = None
    if contract is not None:
        freshness = _check_freshness(found, where, contract, frame, now)
        _check_table(found, where, contract, rows, unexpected, drift)

    schema_diff = {
        "expected_columns": list(expected_columns),
        "observed_columns": observed,
        "missing_columns": missing,
        "unexpected_columns": unexpected,
        "contract_columns_absent": contract_absent,
        "type_drift": found.type_drift,
        "field_drift": drift,
    }
    outcome = ContractOutcome(
        source=source_name,
        rows=rows,
        contract_declared=contract is not None,
        schema_diff=schema_diff,
        row_violations=dict(sorted(found.row_violations.items())),
        table_violations=found.table,
        rule_counts=found.rule_counts,
        freshness=freshness,
        samples=found.samples,
    )
    if found.table:
        log.warning(
            "source %s: %d contract violation(s): %s", source_name, len(found.table), "; ".join(found.table)
        )
    log.info(
        "source %s: contract checked on %d rows, %d to quarantine, %d table-level violation(s)",
        source_name,
        rows,
        len(outcome.row_violations),
        len(found.table),
    )
    return outcome


def enforce(results: Iterable[ContractOutcome | ContractResult]) -> None:
    """Fail the run when any source broke a table-level promise, listing every break of every source."""
    broken = [r for r in results if r.violations]
    lines = [line for r in broken for line in r.violations]
    if lines:
        raise ContractViolation(
            f"data contract violated ({len(lines)} violation(s) in {len(broken)} source(s)): "
            + "; ".join(lines)
        )
