"""`llmops demo` as a user runs it, in a fresh project home: a quiet console (one line per DAG run, a
summary table, what to do next) with every Airflow, OpenLineage and job log line in the log file it
names. A short run (`--only-sft --max-steps 2`) on the session's tiny base model; two steps cannot
pass the gates, so the console must also say so plainly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2]


def test_quiet_demo_shows_progress_and_a_summary_and_keeps_the_logs_in_a_file(demo, tmp_path):
    from llmops.settings import get_settings

    home, airflow_home = tmp_path / "llmops", tmp_path / "airflow"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")} | {
        "LLMOPS_HOME": str(home),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "LLMOPS_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "LLMOPS_MODEL_STORE": get_settings().model_store,  # the tiny base model the session built
        "LLMOPS_LINEAGE_DIR": str(home / "lineage"),
        "DEMO_TICKETS_API_PORT": str(free_port()),
        "PYTHONPATH": str(PROJECT / "include"),
    }
    for name in ("LLMOPS_LAKE_ROOT", "LLMOPS_OPTUNA_URL", "LLMOPS_PIPELINES_DIR"):
        env.pop(name, None)
    env["DEMO_TICKETS_API_TOKEN"] = "demo-token-change-me"
    env["AIRFLOW_CONN_SUPPORT_TICKETS_DB"] = (
        '{"conn_type": "sqlite", "host": "' + str(home / "demo" / "tickets.db") + '"}'
    )
    env["AIRFLOW_CONN_SUPPORT_TICKETS_API"] = (
        '{"conn_type": "http", "host": "127.0.0.1", "port": ' + env["DEMO_TICKETS_API_PORT"]
    ) + ', "schema": "http", "password": "demo-token-change-me"}'
    env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = (
        '{"type": "file", "log_file_path": "'
        + str(home / "lineage" / "openlineage.jsonl")
        + '", "append": true, '
        '"filesystem": "fsspec.implementations.local.LocalFileSystem", "fs_kwargs": {"auto_mkdir": true}}'
    )
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]

    result = subprocess.run(
        [sys.executable, "-m", "llmops.cli", "demo", "--only-sft", "--max-steps", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=PROJECT,
    )
    console = result.stdout + result.stderr
    lines = console.splitlines()
    assert len(lines) <= 60, console
    assert re.search(r"support_bot__ingest\s+success\s+\d+ tasks", console), console
    assert re.search(r"support_bot__finetune\s+failed\s+\d+ tasks \(\d+ failed", console), console
    assert re.search(r"^pipeline\s+finetune\s+decision\s+champion\s+key metrics$", console, re.M), console
    assert re.search(r"^support_bot\s+failed\s+rejected by gates\s+-\s+", console, re.M), console
    assert "next:" in console and "make airflow-ui" in console
    assert result.returncode == 1  # no champion: the demo says it failed

    [log_file] = (home / "demo" / "logs").glob("demo-*.log")
    assert str(log_file) in lines[0]
    logged = log_file.read_text(errors="replace")
    # What used to flood the terminal is in the file: task runner, OpenLineage, the training job.
    assert "OpenLineage" in logged and "llmops.training" in logged and "Task instance" in logged
    assert "OpenLineage" not in console and "Task instance" not in console
    assert oct(log_file.stat().st_mode & 0o777) == "0o600"
