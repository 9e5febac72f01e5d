"""Steps of the `compliance_audit_report` DAG: check the request, write one report per model version.

Each function is the body of one task, a plain function of small JSON-able arguments.
"""

from __future__ import annotations

import logging
from typing import Any

from llmops.ledger import get_ledger, record
from llmops.ledger.events import ReportGenerated
from llmops.specs.pinned import run_spec

log = logging.getLogger(__name__)


def plan(pipeline: str | None, model_version: Any, date_from: Any, date_to: Any) -> list[dict[str, Any]]:
    """The model versions the run reports on (the Params checked: errors name the Param)."""
    from llmops.reports.model_version import plan_reports

    items = plan_reports(pipeline, model_version, date_from, date_to)
    log.info(
        "%d model version(s) to report on: %s",
        len(items),
        ", ".join(f"{i['model_name']} v{i['version']}" for i in items) or "none",
    )
    return items


def report_version(item: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Write one version's report and record `report.generated` with every file's URI and SHA-256.

    Retry-safe: a run that already recorded this report returns that record instead of writing the
    files again, so the hashes in the ledger always describe the files this run left in the lake.
    """
    from llmops.reports.model_version import folder_name, parse_window, write_model_version_report

    spec = run_spec(item["pipeline"], run_id)
    subject = f"report/{folder_name(item['model_name'], item['version'])}"
    done = get_ledger().records(
        pipeline=spec.name, event_type=ReportGenerated.name, subject=subject, run_id=run_id
    )
    if done:
        log.info("%s was already written by this run: nothing to do", subject)
        return {k: v for k, v in done[-1].payload.items() if k != "spec_hash"}
    written = write_model_version_report(
        spec,
        item["model_name"],
        item["version"],
        window=parse_window(item.get("date_from"), item.get("date_to")),
        generated_by=run_id,
    )
    record(spec, ReportGenerated(**written), subject, run_id)
    return written
