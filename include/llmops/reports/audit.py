"""Compliance audit report for one fine-tuning run, assembled from the governance ledger.

The report answers: which data (sources, snapshots, counts, hashes), validated how, with what
PII handling, trained how, evaluated and gated how, registered and promoted as what, and whether
the ledger behind all of it verifies. It is built only from ledger records and registry metadata,
which hold ids, counts and hashes: never rows, raw PII or secrets.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops import metrics as catalogue
from llmops import storage
from llmops.ledger import LedgerRecord, get_ledger
from llmops.ledger.events import (
    CostRecorded,
    DatasetValidated,
    FinalDatasetCreated,
    FinetuneStarted,
    ModelEvaluated,
    ModelGated,
    ModelPromoted,
    ModelRegistered,
    ModelRejected,
    ModelTrained,
    PiiHandled,
    PromotionSkipped,
    RawSnapshotCreated,
    TaskFailed,
)
from llmops.reports import evidence
from llmops.reports.evidence import last as _last
from llmops.settings import get_settings
from llmops.specs import spec_hash

if TYPE_CHECKING:
    from jinja2 import Environment

    from llmops.specs import PipelineSpec

SCHEMA_VERSION = "1.1"  # 1.1: adds `monitoring` (additive; every 1.0 key is unchanged)
MONITORING_RUNS_SHOWN = 30
TEMPLATES = Path(__file__).parent / "templates"


def monitoring_section(spec: PipelineSpec) -> dict[str, Any]:
    """The pipeline's monitoring time series: each metric's latest value, and recent runs' breaches.

    Numbers, thresholds and run ids only (the `<pipeline>__monitor` DAG stores nothing else). A
    store that cannot be read leaves the section empty with the error's type: the report is
    still written.
    """
    section: dict[str, Any] = {"dag_id": f"{spec.name}__monitor", "runs_measured": 0}
    try:
        from llmops.monitoring.store import history, summarise

        summary = summarise(history(spec.name))
    except Exception as exc:
        return {**section, "error": type(exc).__name__, "latest": [], "runs": [], "breaches": []}
    runs = summary["runs"]
    latest_run = runs[0] if runs else None
    return {
        **section,
        "runs_measured": len(runs),
        "latest_run": latest_run,
        "breaches": list(latest_run["breaches"]) if latest_run else [],
        "latest": summary["latest"],
        "runs": runs[:MONITORING_RUNS_SHOWN],
    }


def build_report(spec: PipelineSpec, run_id: str) -> dict[str, Any]:
    ledger = get_ledger()
    run_records = ledger.records(pipeline=spec.name, run_id=run_id)
    sft = _last(run_records, FinalDatasetCreated.name)
    # The curated data behind the run, even when its training data was never built.
    source = sft or _last(run_records, FinetuneStarted.name)
    ingest_records: list[LedgerRecord] = []
    if source is not None and source.payload.get("curated_snapshot_id"):
        ingest_records = evidence.ingest_run_records(ledger, spec.name, source.payload["curated_snapshot_id"])

    raw = [r.payload for r in ingest_records if r.event_type == RawSnapshotCreated.name]
    validated = _last(ingest_records, DatasetValidated.name)
    pii = _last(ingest_records, PiiHandled.name)
    trained = _last(run_records, ModelTrained.name)
    evaluated = _last(run_records, ModelEvaluated.name)
    gated = _last(run_records, ModelGated.name)
    registered = _last(run_records, ModelRegistered.name)
    promoted = _last(run_records, ModelPromoted.name)
    skipped = _last(run_records, PromotionSkipped.name)
    cost = _last(run_records, CostRecorded.name)  # wall time, GPU-hours, estimated cost per job and in total

    failures = [r.payload for r in run_records if r.event_type == TaskFailed.name]
    decision = _decision(run_records, failures)

    registry: dict[str, Any] | None = None
    if registered is not None:
        registry = dict(registered.payload)
        try:
            from llmops.registry.mlflow_registry import model_version_info

            info = model_version_info(registered.payload["model_name"], registered.payload["version"])
            registry["aliases"] = info["aliases"]
            registry["status"] = info["status"]
        except Exception as exc:  # the report must still be written when the registry is down
            registry["registry_error"] = type(exc).__name__

    verification = ledger.verify()
    metrics = (evaluated.payload.get("metrics") if evaluated else None) or {}
    all_records = sorted({r.seq: r for r in [*ingest_records, *run_records]}.values(), key=lambda r: r.seq)
    report = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "pipeline": {
            "name": spec.name,
            "description": spec.description,
            "owner": spec.owner,
            "purpose": spec.purpose,
            "spec_hash": spec_hash(spec),
        },
        "run": {
            "finetune_run_id": run_id,
            "ingest_run_id": ingest_records[0].run_id if ingest_records else None,
        },
        "summary": {
            "decision": decision,
            # The last task failure of the run, so a failed run's report says what failed first thing.
            "failure": _failure_line(failures[-1]) if failures else None,
            "model": f"{registry['model_name']} v{registry['version']}" if registry else None,
            "champion": bool(promoted),
            "gates_passed": gated.payload["passed"] if gated else None,
            "headline_metrics": {k: metrics.get(k) for k in catalogue.headline()},
            "ledger_verified": verification.ok,
        },
        "data": {
            "sources": [evidence.source_entry(r) for r in raw],
            "validation": validated.payload if validated else None,
            "privacy": pii.payload if pii else None,
            "sft": sft.payload if sft else None,
        },
        "training": trained.payload if trained else None,
        "evaluation": evaluated.payload.get("metrics") if evaluated else None,
        "gates": gated.payload if gated else None,
        "registry": registry,
        "failures": failures,
        "promotion": promoted.payload if promoted else (skipped.payload if skipped else None),
        "monitoring": monitoring_section(spec),
        "cost": cost.payload if cost else None,
        "ledger": {
            "verification": evidence.verification(verification),
            "events": [evidence.event_row(r) for r in all_records],
        },
    }
    return report


def _decision(run_records: list[LedgerRecord], failures: list[dict[str, Any]]) -> str:
    """What became of the run, down to the first step that left no record when it stopped early."""
    if _last(run_records, ModelPromoted.name) is not None:
        return "promoted"
    gated = _last(run_records, ModelGated.name)
    if _last(run_records, ModelRegistered.name) is not None:
        decided = (PromotionSkipped.name, ModelRejected.name)
        if not any(r.event_type in decided for r in run_records) and any(
            f.get("task_id") == "promote" for f in failures
        ):
            return "failed during promotion"
        return "registered, not promoted"
    if gated is not None and not gated.payload.get("passed"):
        return "rejected by gates"
    stages = [
        ("start", FinetuneStarted),
        ("data preparation", FinalDatasetCreated),
        ("training", ModelTrained),
        ("evaluation", ModelEvaluated),
        ("gating", ModelGated),
        ("registration", ModelRegistered),
    ]
    for stage, event in stages:
        if _last(run_records, event.name) is None:
            return f"failed during {stage}"
    return "incomplete"


def _failure_line(failure: dict[str, Any]) -> str:
    return f"{failure.get('task_id')}: {failure.get('error_type')}: {failure.get('error')}"


def _number(value: Any, fmt: str = "%.4g", missing: str = "n/a") -> str:
    """A number in `fmt`; anything else (None, absent, text) as `missing`: a failed or diverged
    run's record lacks numbers, and its report must still be written."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return missing
    return fmt % value


def _percent(share: Any) -> str:
    return _number(100 * share if _number(share) != "n/a" else None, "%.1f%%")


def template_environment(*, autoescape: bool = True) -> Environment:
    """The reports' Jinja environment: HTML templates autoescaped; Markdown ones (cards) not."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]) if autoescape else False,
        keep_trailing_newline=True,
    )
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    env.filters["num"] = _number
    env.filters["pct"] = _percent
    from llmops import metrics

    env.globals["table_metrics"] = metrics.table()  # the metric rows of evaluation tables
    return env


def render_html(report: dict[str, Any]) -> str:
    """The run's page. A field a failed run never recorded renders empty (chainable undefined),
    so no missing record or key can stop the report from being written."""
    from jinja2 import ChainableUndefined

    env = template_environment()
    env.undefined = ChainableUndefined
    return env.get_template("audit_report.html.j2").render(r=report)


def write_audit_report(spec: PipelineSpec, run_id: str) -> dict[str, str]:
    from llmops.storage import safe_run_id

    report = build_report(spec, run_id)
    folder = storage.join(get_settings().reports_root, spec.name, safe_run_id(run_id))
    json_uri = storage.join(folder, "audit_report.json")
    html_uri = storage.join(folder, "audit_report.html")
    from llmops.jobs.artifacts import json_safe

    # Strict JSON (a diverged run's NaN loss is null there; the page still says "nan").
    text = json.dumps(json_safe(report), indent=2, sort_keys=True, default=str, allow_nan=False)
    storage.write_bytes(json_uri, (text + "\n").encode())
    storage.write_bytes(html_uri, render_html(report).encode())
    latest = storage.join(get_settings().reports_root, spec.name, "LATEST.json")
    storage.write_json(latest, {"run_id": run_id, "html": html_uri, "json": json_uri})
    return {"html": html_uri, "json": json_uri, "decision": report["summary"]["decision"]}
