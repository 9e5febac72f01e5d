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
    ModelEvaluated,
    ModelGated,
    ModelPromoted,
    ModelRegistered,
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
    ingest_records: list[LedgerRecord] = []
    if sft is not None:
        ingest_records = evidence.ingest_run_records(ledger, spec.name, sft.payload["curated_snapshot_id"])

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
    if promoted is not None:
        decision = "promoted"
    elif registered is not None:
        decision = "registered, not promoted"
    elif gated is not None and not gated.payload["passed"]:
        decision = "rejected by gates"
    else:
        stages = [
            ("data preparation", sft),
            ("training", trained),
            ("evaluation", evaluated),
            ("gating", gated),
        ]
        decision = next((f"failed during {name}" for name, record in stages if record is None), "incomplete")

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


def template_environment(*, autoescape: bool = True) -> Environment:
    """The reports' Jinja environment: HTML templates autoescaped; Markdown ones (cards) not."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]) if autoescape else False,
        keep_trailing_newline=True,
    )
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    from llmops import metrics

    env.globals["table_metrics"] = metrics.table()  # the metric rows of evaluation tables
    return env


def render_html(report: dict[str, Any]) -> str:
    return template_environment().get_template("audit_report.html.j2").render(r=report)


def write_audit_report(spec: PipelineSpec, run_id: str) -> dict[str, str]:
    from llmops.storage import safe_run_id

    report = build_report(spec, run_id)
    folder = storage.join(get_settings().reports_root, spec.name, safe_run_id(run_id))
    json_uri = storage.join(folder, "audit_report.json")
    html_uri = storage.join(folder, "audit_report.html")
    storage.write_json(json_uri, report)
    storage.write_bytes(html_uri, render_html(report).encode())
    latest = storage.join(get_settings().reports_root, spec.name, "LATEST.json")
    storage.write_json(latest, {"run_id": run_id, "html": html_uri, "json": json_uri})
    return {"html": html_uri, "json": json_uri, "decision": report["summary"]["decision"]}
