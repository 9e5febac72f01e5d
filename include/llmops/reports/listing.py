"""The reports as a person reads them in a terminal: ``llmops runs <pipeline>`` (the pipeline's runs
and model versions, newest first, from their audit reports) and ``llmops report <pipeline>`` (where
the latest one is, and what it decided)."""

from __future__ import annotations

from typing import Any

from llmops.reports import index
from llmops.settings import get_settings


def pipeline_reports(pipeline: str) -> list[dict[str, Any]]:
    """The pipeline's reports (run and model-version reports), newest first."""
    return [e for e in index.list_reports(get_settings().reports_root) if e["pipeline"] == pipeline]


def runs_table(entries: list[dict[str, Any]], limit: int = 20) -> str:
    """One line per report: when, what kind, the run, the decision, the model version."""
    if not entries:
        return "no reports yet (a finetune run writes one when it ends, whatever its outcome)"
    lines = [f"{'generated':<17} {'kind':<14} {'decision':<24} {'model':<18} run / report"]
    for e in entries[:limit]:
        when = (e.get("generated_at") or "")[:16].replace("T", " ")
        decision = e.get("error") or e.get("decision") or "-"
        lines.append(
            f"{when:<17} {str(e.get('kind') or '-'):<14} {str(decision)[:24]:<24} "
            f"{str(e.get('model') or '-')[:18]:<18} {e.get('run_id') or e['report_id']}"
        )
    if len(entries) > limit:
        lines.append(f"... {len(entries) - limit} older (llmops runs <pipeline> --limit N)")
    return "\n".join(lines)


def latest_report_text(entries: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(what to print, the HTML location to open) for the newest report."""
    if not entries:
        return "no reports yet for this pipeline", None
    e = entries[0]
    lines = [
        f"{e['kind']} report of {e['pipeline']}, generated {e.get('generated_at') or '?'}",
        f"decision: {e.get('error') or e.get('decision') or '-'}; model: {e.get('model') or '-'}",
        f"HTML: {e.get('html_uri') or '(missing)'}",
        f"JSON: {e['json_uri']}",
    ]
    return "\n".join(lines), e.get("html_uri")
