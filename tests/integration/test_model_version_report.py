"""Per-model-version compliance reports against a real MLflow tracking server and real Airflow runs.

Three versions of one model, moved through the registry by the pipeline's own steps: v1 promoted,
v2 promoted then rolled back (v1 champion again), v3 registered and never promoted; v1 flagged by an
erasure request. The `compliance_audit_report` DAG then writes a report per version (dag.test).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
import yaml
from ledger_chains import finetune_run, ingest_run

from llmops import storage
from llmops.registry import mlflow_registry as registry
from llmops.reports import index

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
PIPELINE = "report_check"


@pytest.fixture
def three_versions(mlflow_server, monkeypatch, tmp_path):
    """The model's name; its three versions registered in MLflow and in the ledger, aliases moved."""
    import mlflow
    from mlflow import MlflowClient

    from llmops.governance.erasure import REVIEW_TAG
    from llmops.ledger import get_ledger
    from llmops.orchestration.finetune import release
    from llmops.orchestration.rollback import rollback_champion

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("LLMOPS_LAKE_ROOT", str(tmp_path / "lake"))
    model = f"report-test-{uuid.uuid4().hex[:8]}"
    raw = yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())
    raw["name"] = PIPELINE
    raw["registry"] = {"model_name": model}
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(pipelines))
    registry.configure()

    class EchoModel(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run(experiment_id=registry.ensure_experiment(model)):
        info = mlflow.pyfunc.log_model(name="model", python_model=EchoModel(), pip_requirements=["mlflow"])
    ledger = get_ledger()
    ids = ingest_run(ledger, PIPELINE, "ingest-1", label=f"{model}:i1")
    client = MlflowClient()
    for n in (1, 2, 3):
        version = str(mlflow.register_model(info.model_uri, model).version)
        client.set_registered_model_alias(model, registry.CHALLENGER, version)  # as `register` does
        finetune_run(
            ledger,
            PIPELINE,
            f"ft-{n}",
            curated=ids["curated"],
            model_name=model,
            version=version,
            label=f"{model}:f{n}",
        )
        if n < 3:
            release.promote(PIPELINE, {"model_name": model, "version": version}, f"ft-{n}")
    rollback_champion(model, "INC-4711 wrong refunds", "rollback-1", "oncall-anna")
    # What an erasure request does to a version trained on the subject's data (see governance.erasure).
    client.set_model_version_tag(model, "1", REVIEW_TAG, "DSR-9")
    for event_type, subject in (
        ("erasure.requested", "erasure/DSR-9"),
        ("erasure.model_flagged", f"model/{model}/1"),
        ("erasure.completed", "erasure/DSR-9"),
    ):
        ledger.append(
            pipeline=PIPELINE,
            event_type=event_type,
            subject=subject,
            run_id="erasure-1",
            payload={
                "request_id": "DSR-9",
                "model_name": model,
                "version": "1",
                "rows_removed": 2,
                "snapshots_rewritten": 4,
                "action": "retrain and retire",
            },
        )
    return model


def _report(model: str, version: str) -> dict:
    from llmops.settings import get_settings

    folder = storage.join(get_settings().reports_root, PIPELINE, f"model-{model}-v{version}")
    return storage.read_json(storage.join(folder, "audit_report.json"))


def test_dag_writes_and_records_a_report_per_version(three_versions, airflow_db):
    """Expect four files per version, each recorded with its SHA-256, and what happened to each
    version: v1 champion again with an open erasure request, v2 rolled back, v3 never promoted."""
    from airflow.dag_processing.dagbag import DagBag

    from llmops.ledger import get_ledger
    from llmops.settings import get_settings

    model = three_versions
    dag = DagBag(dag_folder=str(PROJECT / "dags" / "governance.py")).dags["compliance_audit_report"]
    run = dag.test(run_conf={"pipeline": PIPELINE})
    assert run.state == "success"

    recorded = get_ledger().records(pipeline=PIPELINE, event_type="report.generated", run_id=run.run_id)
    assert sorted(r.subject for r in recorded) == [f"report/model-{model}-v{v}" for v in (1, 2, 3)]
    for record in recorded:
        files = record.payload["files"]
        assert set(files) == {"json", "html", "model_card", "data_card"}
        for entry in files.values():
            assert hashlib.sha256(storage.read_bytes(entry["uri"])).hexdigest() == entry["sha256"]

    v1, v2, v3 = (_report(model, v) for v in ("1", "2", "3"))
    assert (v1["summary"]["status"], v1["summary"]["aliases"]) == ("champion", ["champion"])
    assert [e["event"] for e in v1["deployment"]["history"]][-2:] == [
        "restored as champion",
        "flagged for erasure review",
    ]
    assert v1["erasure"]["open_requests"] == ["DSR-9"] and v1["summary"]["open_erasure_requests"] == ["DSR-9"]
    assert v1["erasure"]["requests"][0]["status"] == "open"
    assert (
        v1["registry"]["matches_ledger"] is True
        and v1["registry"]["tags"]["llmops.erasure_review"] == "DSR-9"
    )
    assert v2["summary"]["status"] == "rolled back"
    rolled = next(e for e in v2["deployment"]["history"] if e["event"] == "rolled back")
    assert rolled["actor"] == "oncall-anna" and "INC-4711" in rolled["description"]
    assert (
        v3["summary"]["decision"] == "registered, not promoted" and v3["summary"]["first_promoted_at"] is None
    )
    assert v3["summary"]["aliases"] == ["challenger"] and v3["erasure"]["requests"] == []
    for report in (v1, v2, v3):
        assert report["summary"]["ledger_verified"] and report["generated_by"]["dag_run_id"] == run.run_id

    listed = {
        e["report_id"]: e
        for e in index.list_reports(get_settings().reports_root)
        if e["pipeline"] == PIPELINE
    }
    entry = listed[f"model-{model}-v2"]
    assert (entry["kind"], entry["model_version"], entry["decision"]) == ("model version", "2", "rolled back")
    assert "Compliance report: " in index.read_report_html(
        get_settings().reports_root, PIPELINE, f"model-{model}-v2"
    )


def test_a_retried_report_task_keeps_what_it_recorded(three_versions):
    """Expect a second attempt of the same run to return the recorded files, not rewrite them."""
    from llmops.orchestration import compliance

    item = {
        "pipeline": PIPELINE,
        "model_name": three_versions,
        "version": "3",
        "date_from": None,
        "date_to": None,
    }
    first = compliance.report_version(item, "manual__retry")
    html = Path(first["files"]["html"]["uri"])
    before = html.stat().st_mtime_ns
    again = compliance.report_version(item, "manual__retry")
    assert again == first and html.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        (
            {"pipeline": "no_such_pipeline"},
            "Param 'pipeline': no valid pipeline spec named 'no_such_pipeline'",
        ),
        (
            {"pipeline": PIPELINE, "model_version": 42},
            "Param 'model_version': pipeline 'report_check' registered no version 42",
        ),
        (
            {"date_from": "2026-03-02", "date_to": "2026-03-01"},
            "Params 'date_from' (2026-03-02) and 'date_to'",
        ),
    ],
)
def test_bad_params_fail_the_run_naming_the_param(three_versions, airflow_db, conf, message, capfd):
    """Expect the run to fail in `plan`, without retries, with a message that names the Param."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(PROJECT / "dags" / "governance.py")).dags["compliance_audit_report"]
    run = dag.test(run_conf=conf)
    assert run.state == "failed"
    out, err = capfd.readouterr()  # dag.test() prints the task's log
    assert message in out + err


def test_a_malformed_date_is_refused_before_the_run(airflow_db):
    """Expect the trigger form's check (the Param's `format: date`) to refuse the run, naming the Param."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError

    dag = DagBag(dag_folder=str(PROJECT / "dags" / "governance.py")).dags["compliance_audit_report"]
    with pytest.raises(ParamValidationError, match="date_from"):
        dag.test(run_conf={"date_from": "2026-13-01"})


def test_reports_go_to_s3(three_versions, s3_bucket, monkeypatch):
    """Expect the four files written through the storage layer to an S3 lake, and listed by the index."""
    from llmops.reports.model_version import write_model_version_report
    from llmops.settings import get_settings
    from llmops.specs import load_pipeline

    bucket, conn_id = s3_bucket
    monkeypatch.setenv("LLMOPS_LAKE_ROOT", f"s3://{bucket}/lake")
    monkeypatch.setenv("LLMOPS_LAKE_CONN_ID", conn_id)
    written = write_model_version_report(load_pipeline(PIPELINE), three_versions, "2", generated_by="s3-run")
    assert all(
        f["uri"].startswith(f"s3://{bucket}/lake/reports/{PIPELINE}/") for f in written["files"].values()
    )
    for entry in written["files"].values():
        assert hashlib.sha256(storage.read_bytes(entry["uri"])).hexdigest() == entry["sha256"]
    [listed] = index.list_reports(get_settings().reports_root)
    assert listed["kind"] == "model version" and listed["model"] == f"{three_versions} v2"
    assert json.loads(
        index.read_report_json_bytes(get_settings().reports_root, PIPELINE, listed["report_id"])
    )
