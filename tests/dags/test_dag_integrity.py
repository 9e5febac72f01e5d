"""DAG integrity: every DAG imports cleanly, is well-formed, and its file stays cheap to parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
DAGS_DIR = PROJECT / "dags"
PIPELINES_DIR = PROJECT / "include" / "pipelines"
HEAVY = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "great_expectations",
    "mlflow",
    "pandas",
    "pyarrow",
    "sklearn",
    "datasets",
)


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    """Expect every DAG file to import without errors."""
    assert dagbag.import_errors == {}


def test_each_spec_has_its_dag_file():
    """Expect one thin DAG file per pipeline spec, and no DAG file without a spec."""
    specs = {p.stem for p in PIPELINES_DIR.glob("*.yaml")}
    files = {p.stem for p in DAGS_DIR.glob("*.py") if "build_pipeline_dags" in p.read_text()}
    assert specs == files


def test_dag_family_per_spec(dagbag):
    """Expect each spec's DAG family and the shared governance DAGs."""
    for spec in PIPELINES_DIR.glob("*.yaml"):
        name = spec.stem
        assert {f"{name}__ingest", f"{name}__finetune", f"{name}__monitor"} <= set(dagbag.dag_ids)
    assert {"data_retention", "data_erasure_request", "model_rollback", "compliance_audit_report"} <= set(
        dagbag.dag_ids
    )


def test_dag_conventions(dagbag):
    """Expect owner, tags, retries, docs and no catchup on every DAG."""
    assert dagbag.dags
    for dag in dagbag.dags.values():
        _check_conventions(dag)


def _check_conventions(dag):
    assert dag.tags and "llmops" in dag.tags
    assert dag.doc_md and dag.description
    assert dag.catchup is False
    for task in dag.tasks:
        assert task.owner and task.owner != "airflow", task.task_id
        assert task.retries is not None
    # A rollback is not retried blindly: a second swap would undo the first.
    assert any(t.retries >= 1 for t in dag.tasks) or dag.dag_id == "model_rollback"


def test_finetune_is_asset_scheduled_with_typed_params(dagbag):
    """Expect the finetune DAG to run on the curated asset and offer typed, described Params."""
    dag = dagbag.dags["support_bot__finetune"]
    assert "llmops://support_bot/curated" in str(dag.timetable.asset_condition)
    params = dag.params
    for key in ("curated_snapshot_id", "learning_rate", "epochs", "max_steps", "promote"):
        param = params.get_param(key)
        assert param.schema.get("type") and param.description, key


def test_compliance_report_is_weekly_with_typed_params(dagbag):
    """Expect the report DAG weekly without catchup, a mapped task per model version, and typed,
    described Params whose schema refuses a malformed date before a run starts."""
    dag = dagbag.dags["compliance_audit_report"]
    assert dag.schedule == "@weekly" and dag.catchup is False
    assert dag.get_task("plan").downstream_task_ids == {"report"}
    for key in ("pipeline", "model_version", "date_from", "date_to"):
        param = dag.params.get_param(key)
        assert param.schema.get("type") and param.description, key
    assert dag.params.get_param("date_from").schema["format"] == "date"
    assert dag.params.get_param("model_version").schema["type"] == ["null", "integer"]


def test_finetune_report_runs_as_teardown(dagbag):
    """Expect the audit report to run after every outcome, without deciding the run's state."""
    dag = dagbag.dags["support_bot__finetune"]
    assert dag.get_task("audit_report").is_teardown


def test_parse_imports_nothing_heavy_and_touches_no_connection():
    """Expect DAG files to import no heavy library and read no connection, variable or socket."""
    probe = f"""
import json, socket, sys
def refuse(*a, **k):
    raise RuntimeError("parse-time access")
socket.socket.connect = refuse
from airflow.sdk import BaseHook, Variable
BaseHook.get_connection = classmethod(refuse)
Variable.get = staticmethod(refuse)
import importlib.util
for path in {sorted(str(p) for p in DAGS_DIR.glob("*.py"))!r}:
    spec = importlib.util.spec_from_file_location("dagfile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "include")}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_broken_spec_is_an_import_error_of_its_own_file_only(tmp_path, monkeypatch):
    """Expect a broken spec to surface as an import error naming the field, other pipelines unaffected.
    The DAG files are the ones `llmops new-pipeline` writes, found by Airflow's default safe mode."""
    from airflow.dag_processing.dagbag import DagBag

    from llmops.cli import scaffold_dag_source

    pipelines = tmp_path / "pipelines"
    dags = tmp_path / "dags"
    pipelines.mkdir()
    dags.mkdir()
    raw = yaml.safe_load((PIPELINES_DIR / "support_bot.yaml").read_text())
    (pipelines / "support_bot.yaml").write_text(yaml.safe_dump(raw))
    broken = {**raw, "name": "broken_bot", "training": {**raw["training"], "lora": {"r": -4}}}
    (pipelines / "broken_bot.yaml").write_text(yaml.safe_dump(broken))
    for name in ("support_bot", "broken_bot"):
        (dags / f"{name}.py").write_text(scaffold_dag_source(name))
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(pipelines))
    bag = DagBag(dag_folder=str(dags), safe_mode=True)
    assert set(bag.dag_ids) == {
        "support_bot__ingest",
        "support_bot__finetune",
        "support_bot__monitor",
        "support_bot__batch_inference",  # the demo spec has a batch_inference block
    }
    assert len(bag.import_errors) == 1
    ((path, message),) = bag.import_errors.items()
    assert path.endswith("broken_bot.py")
    assert (
        "broken_bot.yaml" in message and "training.lora.r: Input should be greater than 0 (got -4)" in message
    )
