"""An index of the compliance reports in the lake, for the Airflow UI plugin and other readers.

Reports live at ``<reports_root>/<pipeline>/<report-id>/audit_report.{json,html}``: one folder per
fine-tuning run (the sanitised run id) and one per model version (``model-<name>-v<version>``,
written by the ``compliance_audit_report`` DAG, with its model and data cards beside). The index
lists every such folder that holds an ``audit_report.json``, so new kinds show up without a change
here.

It is built from one listing of the lake (one glob, which on S3 is a few LIST requests rather than
one request per folder) and the small summary fields of each JSON file; the HTML is read only
when one report is asked for. Names that reach the lake through ``read_report_html`` come from a
web request, so they are checked twice: against a strict pattern (no separators, no ``..``, no
hidden names) and against the lake (the folder must hold a report JSON, i.e. be in the index), so
only the HTML of a listed report can ever be read.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from llmops import storage

log = logging.getLogger(__name__)

REPORT_JSON = "audit_report.json"
REPORT_HTML = "audit_report.html"
# A path segment as the report writers produce it (``safe_run_id``): nothing else is ever served.
# No leading dot: that rules out ``.``/``..`` and the hidden temporaries of an atomic write.
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")
_MODEL_LABEL = re.compile(r"(.+) v(\S+)")
_READERS = 8  # concurrent JSON reads while listing
_OLDEST = datetime.min.replace(tzinfo=UTC)


class ReportNotFoundError(LookupError):
    """No report with these names is in the index (or its HTML is missing)."""


def valid_segment(name: str) -> bool:
    """Whether ``name`` is one safe path segment (so never ``.``, ``..`` or a hidden name)."""
    return isinstance(name, str) and bool(_SEGMENT.fullmatch(name))


def _kind(report_id: str, report: dict[str, Any]) -> str:
    """The report's kind: declared in the JSON when a writer says so, else read from the folder name."""
    declared = report.get("kind") or report.get("report_kind")
    if isinstance(declared, str) and declared:
        return declared
    if report_id.startswith("model-"):
        return "model version"
    return "run"


def _model(report: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(label, model name, version) from the summary, else from the registry section."""
    summary = report.get("summary") or {}
    registry = report.get("registry") or {}
    name = registry.get("model_name") if isinstance(registry, dict) else None
    version = registry.get("version") if isinstance(registry, dict) else None
    label = summary.get("model") if isinstance(summary, dict) else None
    if label is None and name is not None and version is not None:
        label = f"{name} v{version}"
    elif isinstance(label, str) and name is None and (match := _MODEL_LABEL.fullmatch(label)):
        name, version = match.group(1), match.group(2)  # the audit writer's "<name> v<version>"
    return label, name, None if version is None else str(version)


def _parse_time(value: Any) -> datetime:
    """A sortable time for ``generated_at``; a missing or odd value sorts last, never fails."""
    if not isinstance(value, str):
        return _OLDEST
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return _OLDEST
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _entry(reports_root: str, pipeline: str, report_id: str, has_html: bool) -> dict[str, Any]:
    folder = storage.join(reports_root, pipeline, report_id)
    json_uri = storage.join(folder, REPORT_JSON)
    entry: dict[str, Any] = {
        "pipeline": pipeline,
        "report_id": report_id,
        "kind": _kind(report_id, {}),
        "generated_at": None,
        "decision": None,
        "model": None,
        "model_name": None,
        "model_version": None,
        "run_id": None,
        "html_uri": storage.join(folder, REPORT_HTML) if has_html else None,
        "json_uri": json_uri,
        "error": None,
    }
    try:
        report = storage.read_json(json_uri)
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
    except Exception as exc:  # one unreadable report must not hide the others
        log.warning("report %s is unreadable: %s", json_uri, exc)
        entry["error"] = f"unreadable: {type(exc).__name__}"
        return entry
    summary = report.get("summary") if isinstance(report.get("summary"), dict) else {}
    run = report.get("run") if isinstance(report.get("run"), dict) else {}
    label, name, version = _model(report)
    entry.update(
        kind=_kind(report_id, report),
        generated_at=report.get("generated_at"),
        decision=summary.get("decision"),
        model=label,
        model_name=name,
        model_version=version,
        run_id=run.get("finetune_run_id"),
    )
    return entry


def _report_folders(reports_root: str) -> dict[tuple[str, str], bool]:
    """``(pipeline, report_id) -> has_html`` for every folder holding a report JSON; one listing."""
    folders: dict[tuple[str, str], bool] = {}
    html: set[tuple[str, str]] = set()
    base = reports_root.rstrip("/")
    for uri in storage.list_files(reports_root, "*/*/audit_report.*"):
        pipeline, report_id, filename = uri[len(base) + 1 :].split("/")
        if not (valid_segment(pipeline) and valid_segment(report_id)):
            log.warning("skipping report folder with an unsafe name: %s", uri)
            continue
        if filename == REPORT_JSON:
            folders[(pipeline, report_id)] = False
        elif filename == REPORT_HTML:
            html.add((pipeline, report_id))
    return {key: key in html for key in folders}


def list_reports(reports_root: str) -> list[dict[str, Any]]:
    """Every report under ``reports_root`` (local path or ``s3://``), newest first.

    Each entry: ``pipeline``, ``report_id`` (the folder name), ``kind``, ``generated_at``,
    ``decision``, ``model`` (label), ``model_name``, ``model_version``, ``run_id``, ``html_uri``
    (None when the HTML is missing), ``json_uri`` and ``error`` (set when the JSON is unreadable:
    the entry is still listed, so a broken report is visible rather than silently absent).
    """
    folders = list(_report_folders(reports_root).items())
    if len(folders) <= 2:
        entries = [_entry(reports_root, p, r, html) for (p, r), html in folders]
    else:  # one GET per report: on object storage, latency adds up unless they overlap
        with ThreadPoolExecutor(max_workers=min(_READERS, len(folders))) as pool:
            entries = list(pool.map(lambda item: _entry(reports_root, *item[0], item[1]), folders))
    entries.sort(key=lambda e: (e["pipeline"], e["report_id"]))
    entries.sort(key=lambda e: _parse_time(e["generated_at"]), reverse=True)
    return entries


def _report_file(reports_root: str, pipeline: str, report_id: str, filename: str) -> str:
    """The URI of one file of a listed report, for names that come from an untrusted request.

    Raises ValueError for a name that is not a safe path segment and ReportNotFoundError when the
    folder is not in the index or lacks the file. Membership is checked on this one folder (does
    its ``audit_report.json`` exist, which is what puts a folder in the index) rather than by
    listing the whole lake, so opening a report stays cheap when there are thousands of them.
    """
    if not (valid_segment(pipeline) and valid_segment(report_id)):
        raise ValueError("pipeline and report id must be plain names ([A-Za-z0-9_.-], no leading dot)")
    folder = storage.join(reports_root, pipeline, report_id)
    json_uri = storage.join(folder, REPORT_JSON)
    uri = storage.join(folder, filename)
    if not storage.exists(json_uri) or (uri != json_uri and not storage.exists(uri)):
        raise ReportNotFoundError(f"no report {pipeline}/{report_id}")
    return uri


def read_report_html(reports_root: str, pipeline: str, report_id: str) -> str:
    """The HTML of one listed report; no other file can be read through this, whatever the names.

    Raises ValueError for unsafe names and ReportNotFoundError for a report that is not listed or
    has no HTML.
    """
    uri = _report_file(reports_root, pipeline, report_id, REPORT_HTML)
    return storage.read_bytes(uri).decode("utf-8", errors="replace")


CARDS = ("model_card.md", "data_card.md")  # written beside the JSON of each model-version report


def read_report_card(reports_root: str, pipeline: str, report_id: str, card: str) -> str:
    """A model or data card of one listed report (only the names in ``CARDS``; same checks as
    `read_report_html`)."""
    if card not in CARDS:
        raise ReportNotFoundError(f"no card {card!r}")
    return storage.read_bytes(_report_file(reports_root, pipeline, report_id, card)).decode(
        "utf-8", errors="replace"
    )


def read_report_json_bytes(reports_root: str, pipeline: str, report_id: str) -> bytes:
    """The JSON of one listed report, as stored (same checks as `read_report_html`)."""
    return storage.read_bytes(_report_file(reports_root, pipeline, report_id, REPORT_JSON))
