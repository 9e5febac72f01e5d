"""Compliance report per registered model version: one folder of evidence an auditor can read alone.

For ``<model> v<version>`` it answers: which data (sources, raw/curated/SFT snapshots, row counts,
content hashes, collection period), validated how (every expectation and its result, quarantined
rows and why), with what PII handling and encryption, trained how (base model and hash, resolved
config, code version, search trials), evaluated and gated how (metrics, probes, thresholds),
approved by whom, deployed when (promotions, replacements, rollbacks), which erasure requests are
still open against it, and whether the ledger behind all of it verifies.

Sources: the governance ledger (the record of authority: the version's fine-tune run, the ingest
run(s) its data came from, and every later event about the version), the validation results the
ingest wrote to the lake (checked against the ledger's copy), OpenLineage events when the file
transport is configured (``llmops.reports.lineage_graph``), and the MLflow registry (aliases,
tags). Only ids, counts, hashes, metrics and spec text go in: never rows, raw PII or secrets.

Output, in ``<reports_root>/<pipeline>/model-<name>-v<version>/``: ``audit_report.json`` (schema in
docs/audit_reports.md), ``audit_report.html``, ``model_card.md`` and ``data_card.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmops import metrics as catalogue
from llmops import storage
from llmops.errors import PermanentError
from llmops.ledger import get_ledger
from llmops.ledger.events import (
    CostRecorded,
    DatasetValidated,
    FinalDatasetCreated,
    ModelEvaluated,
    ModelGated,
    ModelRegistered,
    ModelTrained,
    PiiHandled,
    RawSnapshotCreated,
    ReportGenerated,
    StageDatasetCreated,
    StageTrained,
)
from llmops.reports import evidence, lineage_graph
from llmops.reports.deployment import (
    MANAGED_ALIASES,
    approval_section,
    approver_label,
    deployment_history,
    deployment_status,
    erasure_section,
    held,
    monitoring_for_version,
    replay_aliases,
)
from llmops.reports.evidence import last, record_ref
from llmops.reports.limitations import NOT_CONSULTED, limitations
from llmops.reports.period import ReportRequestError, Window, collection_period, parse_window
from llmops.reports.version_data import (
    encryption_section,
    evaluation_section,
    hpo_section,
    ingest_chain,
    lifecycle,
    privacy_section,
    training_section,
    validation_section,
)
from llmops.reports.version_lineage import lineage_section
from llmops.settings import get_settings
from llmops.specs import spec_hash

if TYPE_CHECKING:
    from llmops.ledger import Ledger, LedgerRecord
    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.2"  # 1.1: `cost`; 1.2: split sizes, evaluation.split (additive: 1.0 fields unchanged)
KIND = "model version"
REPORT_FILES = {
    "json": "audit_report.json",
    "html": "audit_report.html",
    "model_card": "model_card.md",
    "data_card": "data_card.md",
}

__all__ = [
    "KIND",
    "SCHEMA_VERSION",
    "ReportRequestError",
    "VersionNotRegistered",
    "Window",
    "build_model_version_report",
    "folder_name",
    "plan_reports",
    "render_data_card",
    "render_model_card",
    "render_model_version_html",
    "write_model_version_report",
]


class VersionNotRegistered(PermanentError, LookupError):
    """The ledger has no registration of this model version in this pipeline."""


def folder_name(model_name: str, version: str | int) -> str:
    """The report folder of a model version (a safe path segment: model names are [A-Za-z0-9_.-])."""
    return f"model-{model_name}-v{version}"


def _valid_specs() -> dict[str, PipelineSpec]:
    from llmops.specs import SpecError, load_spec

    specs = {}
    for path in sorted(get_settings().pipelines_dir.glob("*.yaml")):
        try:
            spec = load_spec(path)
        except SpecError:
            continue  # a broken spec is reported by its own DAG file
        specs[spec.name] = spec
    return specs


def registrations(records: list[LedgerRecord], model_name: str) -> dict[str, LedgerRecord]:
    """Version -> its `model.registered` record (the first, should a retry have recorded twice)."""
    found: dict[str, LedgerRecord] = {}
    for record in records:
        if record.event_type == ModelRegistered.name and record.payload.get("model_name") == model_name:
            found.setdefault(str(record.payload["version"]), record)
    return found


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (10**9, version)


def plan_reports(
    pipeline: str | None,
    model_version: Any,
    date_from: Any,
    date_to: Any,
    *,
    ledger: Ledger | None = None,
) -> list[dict[str, Any]]:
    """Check a report request (the DAG's Params) and list the model versions to report on.

    ``pipeline`` empty means every pipeline; ``model_version`` empty means every version the
    pipeline registered (within the window, by registration time). Raises ReportRequestError,
    naming the Param, for an unknown pipeline or version and for malformed or inverted dates.
    """
    window = parse_window(date_from, date_to)
    specs = _valid_specs()
    selected = (pipeline or "").strip()
    if selected and selected not in specs:
        raise ReportRequestError(
            f"Param 'pipeline': no valid pipeline spec named {selected!r} in {get_settings().pipelines_dir} "
            f"(known: {', '.join(sorted(specs)) or 'none'})"
        )
    wanted: str | None = None
    if model_version not in (None, ""):
        wanted = str(model_version).strip()
        if not wanted.isdigit() or int(wanted) < 1:
            raise ReportRequestError(
                f"Param 'model_version': expected a version number >= 1, got {model_version!r}"
            )
        if not selected:
            raise ReportRequestError(
                "Param 'model_version': name the pipeline too (Param 'pipeline'): versions are numbered per model"
            )
    ledger = ledger or get_ledger()
    items = []
    for name in [selected] if selected else sorted(specs):
        spec = specs[name]
        model = spec.registry.model_name
        registered = registrations(ledger.records(pipeline=name, event_type=ModelRegistered.name), model)
        if wanted is not None:
            if wanted not in registered:
                raise ReportRequestError(
                    f"Param 'model_version': pipeline {name!r} registered no version {wanted} of {model!r} "
                    f"(registered: {', '.join(sorted(registered, key=_version_key)) or 'none'})"
                )
            versions = [wanted]
        else:
            versions = [v for v, r in registered.items() if window.contains(r.recorded_at)]
        items.extend(
            {"pipeline": name, "model_name": model, "version": v, **window.to_dict()}
            for v in sorted(versions, key=_version_key)
        )
    return items


def build_model_version_report(
    spec: PipelineSpec,
    model_name: str,
    version: str | int,
    *,
    window: Window | None = None,
    ledger: Ledger | None = None,
    generated_by: str | None = None,
    registry: bool = True,
) -> dict[str, Any]:
    """The report of one registered model version, as JSON-able data (see docs/audit_reports.md).

    ``registry=False`` leaves the MLflow registry out (aliases then come from the ledger alone, and
    the report says the registry was not consulted): for tools that run without a tracking server.
    """
    from llmops import __version__

    window = window or Window()
    ledger = ledger or get_ledger()
    version = str(version)
    subject = f"model/{model_name}/{version}"
    records = ledger.records(pipeline=spec.name)
    registered = registrations(records, model_name).get(version)
    if registered is None:
        raise VersionNotRegistered(
            f"pipeline {spec.name!r} has no ledger record of registering {model_name} v{version}"
        )
    run_records = [r for r in records if r.run_id == registered.run_id]
    sft, trained = last(run_records, FinalDatasetCreated.name), last(run_records, ModelTrained.name)
    evaluated, gated = last(run_records, ModelEvaluated.name), last(run_records, ModelGated.name)
    curated_id = (trained or sft).payload.get("curated_snapshot_id") if (trained or sft) else None
    chain = ingest_chain(records, curated_id) if curated_id else []

    sources, validations, privacy = [], [], []
    for entry in chain:
        for record in entry["records"]:
            if record.event_type == RawSnapshotCreated.name:
                sources.append(
                    {
                        **evidence.source_entry(record.payload),
                        "ingest_run_id": record.run_id,
                        "ingested_at": record.recorded_at,
                    }
                )
        validated = last(entry["records"], DatasetValidated.name)
        if validated is not None:
            validations.append(validation_section(spec.name, validated))
        handled = last(entry["records"], PiiHandled.name)
        if handled is not None:
            privacy.append(privacy_section(spec, handled))
    period = collection_period(sources)

    state = evidence.registry_state(model_name, version) if registry else {"registry_error": NOT_CONSULTED}
    tags = state.get("tags") or {}
    replayed = replay_aliases(records, model_name)
    ledger_aliases = held(replayed[-1][2], version) if replayed else []
    history_all = deployment_history(records, model_name, version)
    registry_error = state.get("registry_error")
    aliases = ledger_aliases if registry_error else state["aliases"]
    status, decision = deployment_status(aliases, history_all)
    promoted = any(e["event"] == "promoted" for e in history_all)
    run_report = next(
        (r for r in run_records if r.event_type == ReportGenerated.name and r.subject.startswith("report/")),
        None,
    )
    open_requests: list[str] | None
    erasure_error = None
    if registry_error:  # one timeout is enough: the ledger still lists the flags
        open_requests, erasure_error = None, registry_error
    else:
        try:
            from llmops.governance.erasure import open_erasure_reviews

            open_requests = open_erasure_reviews(model_name, version)
        except Exception as exc:
            open_requests, erasure_error = None, type(exc).__name__

    snapshots_seen = [("raw", s["name"], s["raw_snapshot_id"]) for s in sources]
    for check in validations:
        snapshots_seen += [
            ("raw", "validated", check["validated_snapshot_id"]),
            ("quarantine", "rows", check["quarantine_snapshot_id"]),
        ]
    for entry in chain:
        snapshots_seen += [
            ("curated", "records", entry["written_as"]),
            ("curated", "records", entry["curated_snapshot_id"]),
        ]
    if sft is not None:
        snapshots_seen.append(
            ("sft", sft.payload.get("dataset") or "prompt_completion", sft.payload.get("sft_snapshot_id"))
        )
        snapshots_seen += [
            ("sft", stage.payload.get("dataset"), stage.payload.get("snapshot_id"))
            for stage in records
            if stage.event_type == StageDatasetCreated.name and stage.run_id == sft.run_id
        ]
    snapshot_states = [lifecycle(records, *key, window) for key in dict.fromkeys(snapshots_seen) if key[2]]

    primary_pii = last(chain[0]["records"], PiiHandled.name) if chain and chain[0]["records"] else None
    sft_payload = sft.payload if sft else {}
    stats = sft_payload.get("stats") or {}
    training = training_section(trained, tags, spec_hash(spec)) if trained else None
    evaluation = evaluation_section(evaluated, gated)
    history = [e for e in history_all if window.contains(e["at"])]
    approval = approval_section(spec, records, subject, gated, run_report, promoted)

    # The records this report rests on: the chain, the version's own, its history, its snapshots' fate.
    cited = {e["seq"] for e in history_all} | {e["seq"] for s in snapshot_states for e in s["events"]}
    covered = {r.seq: r for e in chain for r in e["records"]}
    covered.update({r.seq: r for r in run_records})
    covered.update({r.seq: r for r in records if r.subject == subject or r.seq in cited})
    events = [
        evidence.event_row(r, actor=True)
        for _, r in sorted(covered.items())
        if window.contains(r.recorded_at)
    ]
    # The compliance report re-checks the chain from genesis and every anchor, not just since the last.
    verification = ledger.verify(full=True)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "generated_by": {"dag_run_id": generated_by, "llmops_version": __version__},
        "period": window.to_dict(),
        "pipeline": {
            "name": spec.name,
            "description": spec.description,
            "owner": spec.owner,
            "purpose": spec.purpose,
            "tags": list(spec.tags),
            "spec_hash": spec_hash(spec),
        },
        "model": {"name": model_name, "version": version, "label": f"{model_name} v{version}"},
        "run": {
            "finetune_run_id": registered.run_id,
            "ingest_run_id": chain[0]["run_id"] if chain else None,
            "ingest_run_ids": [e["run_id"] for e in chain if e["run_id"]],
        },
        "summary": {
            "model": f"{model_name} v{version}",
            "decision": decision,
            "status": status,
            "aliases": aliases,
            "registered_at": registered.recorded_at,
            "first_promoted_at": next((e["at"] for e in history_all if e["event"] == "promoted"), None),
            "approval": approval["decision"],
            "approved_by": approver_label({"approver": approval["approver"]})
            if approval.get("approved")
            else None,
            "gates_passed": (evaluation["gates"] or {}).get("passed"),
            "headline_metrics": {k: evaluation["metrics"].get(k) for k in catalogue.headline()},
            "sources": sorted({s["name"] for s in sources}),
            "rows_ingested": sum(s["row_count"] for s in sources),
            "rows_quarantined": sum(v.get("rows_quarantined") or 0 for v in validations),
            "training_rows": (stats.get("train") or {}).get("rows"),
            "eval_rows": (stats.get("validation") or stats.get("eval") or {}).get("rows"),  # = validation
            "validation_rows": (stats.get("validation") or stats.get("eval") or {}).get("rows"),
            "test_rows": (stats.get("test") or {}).get("rows"),  # the evaluation job's: the gates'
            "collection_period": {"from": period["from"], "to": period["to"]},
            "open_erasure_requests": sorted(open_requests or []),
            "ledger_verified": verification.ok,
        },
        "data": {
            "ingest_runs": [
                {
                    k: e[k]
                    for k in (
                        "run_id",
                        "curated_snapshot_id",
                        "written_as",
                        "carried_forward_rows",
                        "carried_from",
                        "erasure_rewrites",
                    )
                }
                | {"role": "trained on" if i == 0 else "carried forward into it"}
                for i, e in enumerate(chain)
            ],
            "sources": sources,
            "collection_period": period,
            "validation": validations,
            "privacy": privacy,
            "curated": {
                "curated_snapshot_id": chain[0]["curated_snapshot_id"] if chain else curated_id,
                "written_as": chain[0]["written_as"] if chain else None,
                "row_count": primary_pii.payload.get("row_count") if primary_pii else None,
                "sha256": primary_pii.payload.get("sha256") if primary_pii else None,
                "carried_forward_rows": chain[0]["carried_forward_rows"] if chain else None,
                "columns": primary_pii.payload.get("columns") or [] if primary_pii else [],
                "governance": primary_pii.payload.get("governance") if primary_pii else None,
                "erasure_rewrites": chain[0]["erasure_rewrites"] if chain else [],
            },
            "sft": {
                "sft_snapshot_id": sft_payload.get("sft_snapshot_id"),
                "curated_snapshot_id": sft_payload.get("curated_snapshot_id"),
                "sha256": sft_payload.get("sha256"),
                "template": sft_payload.get("template"),
                "method": sft_payload.get("method") or "sft",
                "dataset": sft_payload.get("dataset") or "prompt_completion",
                "columns": sft_payload.get("columns"),
                "splits": stats,
                "skipped_rows": sft_payload.get("skipped_rows"),
                "skipped_by_rule": sft_payload.get("skipped_by_rule"),
                "pii_replacements": sft_payload.get("pii_replacements"),
                "suite": sft_payload.get("suite"),
            }
            if sft
            else None,
            "stages": training_stages(records, sft.run_id if sft else None),
            "encryption": encryption_section(
                spec.name,
                sources,
                validations,
                chain[0]["curated_snapshot_id"] if chain else curated_id,
                sft_payload,
            ),
            "snapshots": snapshot_states,
        },
        "training": training,
        "hpo": hpo_section(run_records, bool(training and training["tuned_by_search"])),
        "cost": cost_section(run_records),
        "evaluation": evaluation,
        "approval": approval,
        "deployment": {"status": status, "aliases": aliases, "history": history},
        "registry": {
            "model_name": model_name,
            "version": version,
            "model_uri": registered.payload.get("model_uri"),
            "mlflow_run_id": registered.payload.get("mlflow_run_id"),
            "registered_at": registered.recorded_at,
            "aliases": state.get("aliases"),
            "status": state.get("status"),
            "tags": tags,
            "aliases_from_ledger": ledger_aliases,
            "matches_ledger": None
            if registry_error
            else [a for a in state["aliases"] if a in MANAGED_ALIASES] == ledger_aliases,
            "registry_error": registry_error,
            "evidence": {"ledger": record_ref(registered)},
        },
        "monitoring": monitoring_for_version(records, subject, version, window),
        "erasure": erasure_section(records, subject, open_requests, erasure_error),
        "lineage": lineage_section(
            spec, model_name, version, chain, sources, validations, sft, trained, registered
        ),
        "ledger": {"verification": evidence.verification(verification), "events": events},
    }
    report["limitations"] = limitations(report)
    return evidence.redact_credentials(report)


def markdown_text(value: Any) -> str:
    """A value as Markdown table-cell text: one line, no table break, no raw HTML."""
    text = "" if value is None else str(value)
    text = text.replace("\r\n", "\n").replace("\n", "\\n").replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def number_text(value: Any) -> str:
    """A metric or count for a table: whole numbers as they are, others to 4 significant digits."""
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def _markdown_environment() -> Any:
    from llmops.reports.audit import template_environment

    env = template_environment(autoescape=False)
    env.filters["md"] = markdown_text
    env.filters["num"] = lambda v: markdown_text(number_text(v))
    env.filters["yaml"] = lambda v: json.dumps(v, ensure_ascii=False, default=str)  # JSON is YAML
    return env


def render_model_version_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no script, no external URL)."""
    from markupsafe import Markup

    from llmops.reports.audit import template_environment

    svg = Markup(lineage_graph.render_svg(report["lineage"]))  # built from escaped text only
    env = template_environment()
    env.filters["num"] = number_text
    return env.get_template("model_version_report.html.j2").render(r=report, lineage_svg=svg)


def render_model_card(report: dict[str, Any]) -> str:
    return _markdown_environment().get_template("model_card.md.j2").render(r=report)


def render_data_card(report: dict[str, Any]) -> str:
    return _markdown_environment().get_template("data_card.md.j2").render(r=report)


def write_model_version_report(
    spec: PipelineSpec,
    model_name: str,
    version: str | int,
    *,
    window: Window | None = None,
    generated_by: str | None = None,
    ledger: Ledger | None = None,
    registry: bool = True,
) -> dict[str, Any]:
    """Build and write the four files of a version's report; return their URIs and SHA-256 hashes.

    Each file is written whole (``llmops.storage``: a rename locally, one PUT on S3), the JSON
    last, so the reports index, which lists folders holding an ``audit_report.json``, never shows a
    half-written report.
    """
    window = window or Window()
    report = build_model_version_report(
        spec, model_name, version, window=window, ledger=ledger, generated_by=generated_by, registry=registry
    )
    folder = storage.join(get_settings().reports_root, spec.name, folder_name(model_name, version))
    contents = {
        "model_card": render_model_card(report).encode(),
        "data_card": render_data_card(report).encode(),
        "html": render_model_version_html(report).encode(),
        "json": (json.dumps(report, indent=2, sort_keys=True, default=str) + "\n").encode(),
    }
    files = {}
    for key, blob in contents.items():
        uri = storage.join(folder, REPORT_FILES[key])
        storage.write_bytes(uri, blob)
        files[key] = {"uri": uri, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    return {
        "kind": KIND,
        "model_name": model_name,
        "version": str(version),
        "folder": folder,
        "files": files,
        "period": window.to_dict(),
        "status": report["summary"]["status"],
        "ledger_verified": report["summary"]["ledger_verified"],
    }


def cost_section(run_records: list[LedgerRecord]) -> dict[str, Any] | None:
    """What training this version cost (`cost.recorded` of its fine-tune run): totals and each job.

    Wall time, device hours and the estimate from the spec's prices at training time; None when
    the run predates cost accounting.
    """
    recorded = last(run_records, CostRecorded.name)
    if recorded is None:
        return None
    payload = recorded.payload
    return {
        "currency": payload.get("currency"),
        "totals": payload.get("totals") or {},
        "jobs": [
            {
                k: job.get(k)
                for k in ("job", "kind", "status", "device", "devices", "wall_s", "gpu_hours", "cost")
            }
            for job in payload.get("jobs") or []
        ],
        "trials_skipped_for_budget": payload.get("trials_skipped_for_budget", 0),
        "record_hash": recorded.record_hash,
    }


def training_stages(records: list[Any], finetune_run_id: str | None) -> list[dict[str, Any]]:
    """The chain stages trained before the final one in a finetune run: data, metrics and gates."""
    if finetune_run_id is None:
        return []
    datasets = {
        r.payload.get("stage"): r.payload
        for r in records
        if r.event_type == StageDatasetCreated.name and r.run_id == finetune_run_id
    }
    out = []
    for r in records:
        if r.event_type != StageTrained.name or r.run_id != finetune_run_id:
            continue
        p = r.payload
        data = datasets.get(p.get("stage")) or {}
        out.append(
            {
                "stage": p.get("stage"),
                "method": p.get("method"),
                "snapshot_id": p.get("snapshot_id"),
                "dataset": data.get("dataset"),
                "columns": data.get("columns"),
                "train_rows": data.get("train_rows"),
                "eval_rows": data.get("eval_rows"),  # the validation split
                "test_rows": ((data.get("stats") or {}).get("test") or {}).get("rows"),
                "pii_replacements": data.get("pii_replacements"),
                "mlflow_run_id": p.get("mlflow_run_id"),
                "merged_model_sha256": p.get("merged_model_sha256"),
                "metrics": p.get("metrics"),
                "base_eval_loss": p.get("base_eval_loss"),
                "gates": p.get("gates"),
                "passed": p.get("passed"),
            }
        )
    return out
