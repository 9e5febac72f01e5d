"""Great Expectations 1.x validation of a snapshot, with row-level quarantine and safe results.

Suites are GX 1.x JSON files in great_expectations/expectations/. Each expectation may carry
``meta.severity``: ``blocking`` (an unsuccessful expectation fails the run) or ``warning``
(recorded only; the default). Rows that fail any column-map expectation are quarantined with the
reasons, whatever the severity, so nothing is dropped silently and counts reconcile.

GX's detailed result formats copy failing raw values into results. We need row indexes for the
quarantine, so the checkpoint runs with them in memory, and only a sanitised result leaves this
module: counts, percentages, and at most a few failing values passed through a masking function.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.errors import PermanentError

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

log = logging.getLogger(__name__)

ROW_ID = "_llmops_row"
SAFE_RESULT_KEYS = (
    "element_count",
    "unexpected_count",
    "unexpected_percent",
    "missing_count",
    "missing_percent",
    "unexpected_percent_total",
    "unexpected_percent_nonmissing",
)
MAX_SAMPLES = 3


class SuiteNotFound(FileNotFoundError):
    pass


class BlockingExpectationFailed(PermanentError, RuntimeError):
    """At least one blocking expectation was not met; the message says which, on what and by how much."""


@dataclass
class ValidationOutcome:
    suite: str
    success: bool
    blocking_failures: list[str]
    warnings: list[str]
    statistics: dict[str, Any]
    results: list[dict[str, Any]]
    row_failures: dict[int, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "success": self.success,
            "blocking_failures": self.blocking_failures,
            "warnings": self.warnings,
            "statistics": self.statistics,
            "results": self.results,
            "quarantined_rows": len(self.row_failures),
        }


def load_suite(gx_dir: Path, name: str) -> dict[str, Any]:
    path = Path(gx_dir) / "expectations" / f"{name}.json"
    if not path.is_file():
        raise SuiteNotFound(f"expectation suite '{name}' not found: expected {path}")
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    for i, expectation in enumerate(suite.get("expectations", [])):
        severity = (expectation.get("meta") or {}).get("severity", "warning")
        if severity not in ("blocking", "warning"):
            raise ValueError(
                f"{path}: expectations[{i}].meta.severity must be 'blocking' or 'warning', got {severity!r}"
            )
    return suite


def _describe(config: dict[str, Any], result: dict[str, Any]) -> str:
    kwargs = config.get("kwargs", {})
    target = f"column '{kwargs['column']}'" if "column" in kwargs else "table"
    if "unexpected_count" in result:
        detail = (
            f"{result['unexpected_count']} of {result.get('element_count')} rows unexpected "
            f"({result.get('unexpected_percent', 0):.1f}%"
        )
        if kwargs.get("mostly") is not None:
            detail += f", allowed {100 * (1 - kwargs['mostly']):.1f}%"
        detail += ")"
    elif "observed_value" in result:
        bounds = {k: kwargs[k] for k in ("min_value", "max_value", "value") if k in kwargs}
        detail = f"observed {result['observed_value']!r}, expected {bounds}"
    else:
        detail = "not met"
    return f"{config['type']} on {target}: {detail}"


def _sanitise(raw: dict[str, Any], mask: Callable[[str], str]) -> dict[str, Any]:
    config = raw["expectation_config"]
    result = raw.get("result") or {}
    safe: dict[str, Any] = {k: result[k] for k in SAFE_RESULT_KEYS if k in result}
    if "observed_value" in result:
        value = result["observed_value"]
        safe["observed_value"] = mask(value) if isinstance(value, str) else value
    samples = [v for v in (result.get("partial_unexpected_list") or []) if v is not None][:MAX_SAMPLES]
    if samples:
        safe["unexpected_samples_masked"] = [mask(str(v))[:80] for v in samples]
    if result.get("partial_unexpected_list") and any(v is None for v in result["partial_unexpected_list"]):
        safe["unexpected_includes_null"] = True
    kwargs = {k: v for k, v in config.get("kwargs", {}).items() if k != "batch_id"}
    return {
        "expectation_type": config["type"],
        "kwargs": kwargs,
        "severity": (config.get("meta") or {}).get("severity", "warning"),
        "success": raw["success"],
        "exception": bool((raw.get("exception_info") or {}).get("raised_exception")),
        "result": safe,
    }


def _exception_type(raw: dict[str, Any]) -> str:
    """The exception's class from the last traceback line (``pkg.Error: text``), never its text."""
    trace = str((raw.get("exception_info") or {}).get("exception_traceback") or "").strip()
    head = trace.splitlines()[-1].split(":", 1)[0].strip() if trace else ""
    return head if head.replace(".", "").replace("_", "").isalnum() else "error"


def validate_dataframe(
    df: pd.DataFrame, suite: dict[str, Any], mask: Callable[[str], str]
) -> ValidationOutcome:
    """Run the suite through a real GX checkpoint (ephemeral context: nothing written to disk)."""
    import great_expectations as gx

    frame = df.reset_index(drop=True).copy()
    frame[ROW_ID] = range(len(frame))
    context = gx.get_context(mode="ephemeral")
    gx_suite = context.suites.add(
        gx.ExpectationSuite(
            name=suite["name"], expectations=suite["expectations"], meta=suite.get("meta") or {}
        )
    )
    asset = context.data_sources.add_pandas("llmops").add_dataframe_asset("snapshot")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite['name']}_definition", data=batch_definition, suite=gx_suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite['name']}_checkpoint",
            validation_definitions=[definition],
            actions=[],  # no Data Docs: they would render raw failing values
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [ROW_ID]},
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": frame})
    validation = next(iter(run.run_results.values())).to_json_dict()

    results: list[dict[str, Any]] = []
    blocking: list[str] = []
    warnings: list[str] = []
    row_failures: dict[int, list[str]] = {}
    for raw in validation["results"]:
        config = raw["expectation_config"]
        result = raw.get("result") or {}
        safe = _sanitise(raw, mask)
        results.append(safe)
        reason = f"{config['type']}({config.get('kwargs', {}).get('column', 'table')})"
        for index in result.get("unexpected_index_list") or []:
            row = index[ROW_ID] if isinstance(index, dict) else int(index)
            row_failures.setdefault(int(row), []).append(reason)
        if safe["exception"]:
            # GX's exception text can quote the values that broke the expectation: its type only.
            message = f"{config['type']} could not run ({_exception_type(raw)}: message withheld)"
            (blocking if safe["severity"] == "blocking" else warnings).append(message)
        elif not raw["success"]:
            (blocking if safe["severity"] == "blocking" else warnings).append(_describe(config, result))
    stats = validation.get("statistics", {})
    outcome = ValidationOutcome(
        suite=suite["name"],
        success=not blocking,
        blocking_failures=blocking,
        warnings=warnings,
        statistics={
            k: stats.get(k)
            for k in (
                "evaluated_expectations",
                "successful_expectations",
                "unsuccessful_expectations",
                "success_percent",
            )
        },
        results=results,
        row_failures=row_failures,
    )
    log.info(
        "suite %s: %s/%s expectations met, %d rows to quarantine, %d blocking failure(s)",
        suite["name"],
        stats.get("successful_expectations"),
        stats.get("evaluated_expectations"),
        len(row_failures),
        len(blocking),
    )
    return outcome
