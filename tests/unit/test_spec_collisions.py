"""`llmops validate-specs` across specs: no two pipelines register the same model or write the same
batch-inference table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmops.cli import main

PROJECT = Path(__file__).resolve().parents[2]
PIPELINES_DIR = PROJECT / "include" / "pipelines"


@pytest.fixture
def pipelines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "support_bot.yaml").write_text((PIPELINES_DIR / "support_bot.yaml").read_text())
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(folder))
    return folder


def _twin(pipelines: Path, name: str, **changes: dict) -> Path:
    """support_bot's spec under another name, as the old new-pipeline wrote it, with `changes`."""
    raw = yaml.safe_load((pipelines / "support_bot.yaml").read_text())
    raw["name"] = name
    for section, values in changes.items():
        raw[section] = {**raw[section], **values}
    path = pipelines / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_demo_specs_pass(monkeypatch, capsys):
    from llmops.specs import load_spec
    from llmops.specs.collisions import cross_spec_problems

    monkeypatch.delenv("LLMOPS_PIPELINES_DIR", raising=False)
    monkeypatch.setenv("LLMOPS_PROJECT_DIR", str(PROJECT))
    assert cross_spec_problems({p: load_spec(p) for p in PIPELINES_DIR.glob("*.yaml")}) == {}
    assert main(["validate-specs", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "ok   support_bot.yaml" in out


def test_same_model_name_and_table_fail_both_specs(pipelines: Path, capsys):
    """Expect the copy the old scaffold made to fail, and the demo spec with it: each names the other
    file and the field."""
    twin = _twin(pipelines, "twin_bot")
    demo = pipelines / "support_bot.yaml"
    assert main(["validate-specs", "--offline"]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {demo}:" in out and f"FAIL {twin}:" in out
    for this, other in ((demo, twin), (twin, demo)):
        report = out.split(f"FAIL {this}:")[1].split("FAIL ")[0]
        assert f"registry.model_name: 'support_bot' is also the registry.model_name of {other}" in report
        assert (
            "batch_inference.target_table: 'support_bot_answers' (connection 'support_tickets_db') is also "
            f"the batch_inference.target_table of {other}"
        ) in report
    assert "ok " not in out


def test_same_target_table_alone_fails(pipelines: Path, capsys):
    twin = _twin(pipelines, "twin_bot", registry={"model_name": "twin_bot"})
    assert main(["validate-specs", "--offline"]) == 1
    out = capsys.readouterr().out
    assert "registry.model_name" not in out
    assert (
        f"batch_inference.target_table: 'support_bot_answers' (connection 'support_tickets_db') is also the batch_inference.target_table of {twin}"
        in out
    )


def test_same_model_name_alone_fails_ignoring_case(pipelines: Path, capsys):
    _twin(
        pipelines,
        "twin_bot",
        registry={"model_name": "Support_Bot"},
        batch_inference={"target_table": "twin_bot_answers"},
    )
    assert main(["validate-specs", "--offline"]) == 1
    out = capsys.readouterr().out
    assert "registry.model_name: 'Support_Bot' is also the registry.model_name of" in out
    assert "registry.model_name: 'support_bot' is also the registry.model_name of" in out
    assert "batch_inference.target_table" not in out


def test_same_table_name_in_another_database_or_schema_passes(pipelines: Path, capsys):
    """A table is the same table only in the same database (connection) and schema."""
    _twin(
        pipelines,
        "twin_bot",
        registry={"model_name": "twin_bot"},
        batch_inference={"target_conn_id": "twin_bot_results_db"},
    )
    _twin(
        pipelines,
        "third_bot",
        registry={"model_name": "third_bot"},
        batch_inference={"target_schema": "third"},
    )
    assert main(["validate-specs", "--offline"]) == 0, capsys.readouterr().out


def test_a_broken_spec_does_not_hide_the_clash_of_others(pipelines: Path, capsys):
    (pipelines / "aaa_broken.yaml").write_text("name: aaa_broken\n")
    _twin(pipelines, "twin_bot")
    assert main(["validate-specs", "--offline"]) == 1
    out = capsys.readouterr().out
    assert "FAIL invalid pipeline spec" in out and out.count("registry.model_name: 'support_bot'") == 2
