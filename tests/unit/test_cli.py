"""The llmops command: scaffolding and spec checks."""

from __future__ import annotations

import shutil
from pathlib import Path

from llmops.cli import main

PROJECT = Path(__file__).resolve().parents[2]


def _project(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "include" / "pipelines").mkdir(parents=True)
    (tmp_path / "dags").mkdir()
    shutil.copy(PROJECT / "include" / "pipelines" / "support_bot.yaml", tmp_path / "include" / "pipelines")
    monkeypatch.setenv("LLMOPS_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("LLMOPS_PIPELINES_DIR", raising=False)
    return tmp_path


def test_new_pipeline_scaffolds_a_valid_spec_and_dag_file(tmp_path, monkeypatch, capsys):
    """Expect `llmops new-pipeline` to write a spec that validates and its thin DAG file."""
    root = _project(tmp_path, monkeypatch)
    assert main(["new-pipeline", "contracts_bot"]) == 0
    assert (
        'build_pipeline_dags("contracts_bot", globals())' in (root / "dags" / "contracts_bot.py").read_text()
    )
    assert main(["validate-specs"]) == 0
    assert "ok   contracts_bot.yaml" in capsys.readouterr().out
    assert main(["new-pipeline", "contracts_bot"]) == 2  # never overwrites


def test_validate_specs_reports_broken_spec(tmp_path, monkeypatch, capsys):
    root = _project(tmp_path, monkeypatch)
    (root / "include" / "pipelines" / "bad.yaml").write_text("name: bad\n")
    assert main(["validate-specs"]) == 1
    out = capsys.readouterr().out
    assert "FAIL invalid pipeline spec" in out and "sources: required field is missing" in out
