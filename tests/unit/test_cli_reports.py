"""`llmops runs` and `llmops report` read the pipeline's audit reports the way a person needs them."""

from __future__ import annotations

import pytest

from llmops import storage
from llmops.cli import main
from llmops.reports import index


def _report(root: str, pipeline: str, run_id: str, at: str, decision: str, model: str | None) -> None:
    folder = storage.join(root, pipeline, storage.safe_run_id(run_id))  # as the report writer names it
    storage.write_json(
        storage.join(folder, index.REPORT_JSON),
        {
            "generated_at": at,
            "pipeline": {"name": pipeline},
            "run": {"finetune_run_id": run_id},
            "summary": {"decision": decision, "model": model},
        },
    )
    storage.write_bytes(storage.join(folder, index.REPORT_HTML), b"<html></html>")


@pytest.fixture
def reports(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    from llmops.settings import get_settings

    root = get_settings().reports_root
    _report(
        root,
        "cli_check",
        "manual__2026-03-01T09:00:00+00:00",
        "2026-03-01T09:30:00+00:00",
        "rejected by gates",
        None,
    )
    _report(
        root,
        "cli_check",
        "manual__2026-03-02T09:00:00+00:00",
        "2026-03-02T09:30:00+00:00",
        "promoted",
        "cli_bot v2",
    )
    _report(
        root, "other", "manual__2026-03-03T09:00:00+00:00", "2026-03-03T09:30:00+00:00", "promoted", "x v1"
    )
    return root


def test_runs_lists_the_pipelines_reports_newest_first(reports, capsys):
    assert main(["runs", "cli_check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["generated", "kind", "decision"]
    assert "promoted" in lines[1] and "cli_bot v2" in lines[1] and "2026-03-02 09:30" in lines[1]
    assert "rejected by gates" in lines[2] and "manual__2026-03-01T09:00:00+00:00" in lines[2]
    assert len(lines) == 3  # not the other pipeline's


def test_report_names_the_latest_and_fails_when_there_is_none(reports, capsys):
    assert main(["report", "cli_check"]) == 0
    out = capsys.readouterr().out
    assert "decision: promoted; model: cli_bot v2" in out
    assert "manual__2026-03-02T09_00_00_00_00/audit_report.html" in out
    assert main(["report", "nothing_here"]) == 1
    assert "no reports yet" in capsys.readouterr().out
