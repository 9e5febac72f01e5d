"""A real fine-tune DAG run (dag.test) that fails at its first task still writes its audit report.

The report is a teardown: it never decides the run's state. Its trigger rule is ALL_DONE, so it
runs even when `start` (the teardown's setup) failed, where the teardown default would have
marked it upstream_failed and left the run without a report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
PIPELINE = "failreport_check"


@pytest.fixture
def spec(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("LLMOPS_LAKE_ROOT", str(tmp_path / "lake"))
    raw = yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())
    raw["name"] = PIPELINE
    raw["registry"] = {"model_name": PIPELINE}
    raw.pop("deployment", None)
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(pipelines))
    from llmops.specs import load_pipeline

    return load_pipeline(PIPELINE)


def test_a_run_failed_at_start_still_gets_its_audit_report(spec, airflow_db, tmp_path_factory):
    """Expect start to fail (no such curated snapshot), the run to fail, and audit_report to run
    and write a report that says the run failed during start and why."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    from llmops.ledger import get_ledger
    from llmops.ledger.events import ReportGenerated
    from llmops.orchestration.finetune.dag import finetune_dag

    dag = finetune_dag(spec)
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(tmp_path_factory.mktemp("no-dags")))
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)

    run = dag.test(run_conf={"curated_snapshot_id": "0" * 20})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states["start"] == "failed" and states["prepare_data"] == "upstream_failed"
    assert states["audit_report"] == "success"

    [generated] = get_ledger().records(pipeline=PIPELINE, event_type=ReportGenerated.name, run_id=run.run_id)
    assert generated.payload["decision"] == "failed during start"
    report = json.loads(Path(generated.payload["json"]).read_text())
    assert report["summary"]["failure"].startswith("start: SnapshotNotFound")
    html = Path(generated.payload["html"]).read_text()
    assert "failed during start" in html and "does not exist" in html
