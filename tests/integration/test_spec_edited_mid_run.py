"""One spec per run: a spec edited while a run is in flight does not change that run.

A real ingest DAG run (dag.test() in a fresh interpreter) of a small SQLite-fed pipeline; an
Airflow listener rewrites the pipeline's YAML the moment the first task succeeds, the way a user
committing a spec change mid-run would. The rest of the run must still follow the spec it started
with: its privacy policy, and its hash on every ledger row.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from llmops import snapshots, storage
from llmops.cli import scaffold_dag_source

pytestmark = [pytest.mark.slow]
PROJECT = Path(__file__).resolve().parents[2]
PIPELINE = "pinned_check"

SPEC = {
    "name": PIPELINE,
    "description": "a spec that changes while its run is in flight",
    "owner": "qa",
    "purpose": "testing",
    "schedule": None,
    "sources": [
        {
            "kind": "sql",
            "name": "tickets",
            "conn_id": "pinned_check_db",
            "table": "tickets",
            "columns": ["ticket_id", "customer_email", "body"],
            "governance": {
                "data_owner": "qa@example.com",
                "purposes": ["testing"],
                "lawful_basis": "contract",
            },
        }
    ],
    "dataset": {"key": "ticket_id"},
    "validation": {"suite": "pinned_check", "max_quarantine_fraction": 0.5},
    "privacy": {
        "columns": {"customer_email": {"action": "pseudonymise"}},
        "free_text": {"columns": ["body"], "types": {"email": "mask"}},
    },
    "training": {"base_model": {"uri": "unused"}, "prompt_template": "{body}", "completion_column": "body"},
    "gates": [{"metric": "token_f1", "min": 0.01}],
    "registry": {"model_name": PIPELINE},
}
SUITE = {
    "name": "pinned_check",
    "expectations": [
        {
            "type": "expect_column_values_to_not_be_null",
            "kwargs": {"column": "ticket_id"},
            "meta": {"severity": "blocking"},
        }
    ],
}

# Run the ingest DAG; when `plan` (the run's first task) succeeds, drop customer_email from the
# spec instead of pseudonymising it, and tighten validation.
RUN_WITH_EDIT = textwrap.dedent(
    """
    import json, sys
    import yaml
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk._shared.listeners import hookimpl
    from airflow.sdk.listener import get_listener_manager

    spec_file = sys.argv[3]

    class EditSpecAfterFirstTask:
        @hookimpl
        def on_task_instance_success(self, previous_state, task_instance):
            if task_instance.task_id != "plan":
                return
            raw = yaml.safe_load(open(spec_file))
            raw["privacy"]["columns"]["customer_email"] = {"action": "drop"}
            raw["validation"]["max_quarantine_fraction"] = 0.0
            open(spec_file, "w").write(yaml.safe_dump(raw))
            print("SPEC EDITED", flush=True)

    get_listener_manager().add_listener(EditSpecAfterFirstTask())
    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    run = bag.dags[sys.argv[2]].test()
    print("RESULT " + json.dumps({"state": str(run.state), "run_id": run.run_id}))
    """
)


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: None) -> dict[str, Path]:
    database = tmp_path / "tickets.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE tickets (ticket_id TEXT, customer_email TEXT, body TEXT)")
        conn.executemany(
            "INSERT INTO tickets VALUES (?, ?, ?)",
            [(f"T-{i:03d}", f"person{i}@example.com", f"parcel {i} is late") for i in range(40)],
        )
    pipelines, dags, gx = tmp_path / "pipelines", tmp_path / "dags", tmp_path / "gx"
    for folder in (pipelines, dags, gx / "expectations"):
        folder.mkdir(parents=True)
    (pipelines / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(SPEC))
    (gx / "expectations" / "pinned_check.json").write_text(json.dumps(SUITE))
    (dags / f"{PIPELINE}.py").write_text(scaffold_dag_source(PIPELINE))  # what new-pipeline writes
    monkeypatch.setenv(
        "AIRFLOW_CONN_PINNED_CHECK_DB", json.dumps({"conn_type": "sqlite", "host": str(database)})
    )
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(pipelines))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    monkeypatch.setenv("LLMOPS_GX_DIR", str(gx))
    monkeypatch.setenv("LLMOPS_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    return {"dags": dags, "spec_file": pipelines / f"{PIPELINE}.yaml", "lake": tmp_path / "lake"}


def test_a_spec_edited_mid_run_does_not_change_the_run(pipeline: dict[str, Path]) -> None:
    """Expect the run to finish under the spec it started with: the e-mail column pseudonymised
    (not dropped, as the edited spec says), every ledger row stamped with the original hash, and
    the pinned copy in the lake; the edited spec is what the next run would use."""
    from llmops.ledger import get_ledger
    from llmops.specs import load_pipeline, parse_spec, spec_hash
    from llmops.specs.pinned import pinned_spec_uri

    original_hash = spec_hash(parse_spec(SPEC))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            RUN_WITH_EDIT,
            str(pipeline["dags"]),
            f"{PIPELINE}__ingest",
            str(pipeline["spec_file"]),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT / "include")},
        timeout=600,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"dag run did not finish:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    run = json.JSONDecoder().raw_decode(lines[-1].removeprefix("RESULT "))[0]  # a log line may follow
    assert "SPEC EDITED" in result.stdout
    assert run["state"] == "success", result.stdout[-3000:]

    edited_hash = spec_hash(load_pipeline(PIPELINE))
    assert edited_hash != original_hash  # the YAML really changed during the run

    rows = get_ledger().records(pipeline=PIPELINE, run_id=run["run_id"])
    assert len(rows) >= 4
    assert {r.payload["spec_hash"] for r in rows} == {original_hash}

    ref = snapshots.get_latest(str(pipeline["lake"]), "curated", PIPELINE, snapshots.CURATED_DATASET)
    from llmops.privacy.keys import get_key_ring

    curated = snapshots.read_snapshot(ref, get_key_ring()).to_pandas()
    assert "customer_email" in curated.columns  # pseudonymised under the pinned spec, not dropped
    assert not curated["customer_email"].str.contains("@").any()

    pinned = json.loads(storage.read_bytes(pinned_spec_uri(PIPELINE, run["run_id"], str(pipeline["lake"]))))
    assert pinned["spec_hash"] == original_hash
    assert pinned["spec"]["privacy"]["columns"]["customer_email"]["action"] == "pseudonymise"
