"""Approval before promotion and rollback, against a real MLflow tracking server.

The approval task is Airflow's human-in-the-loop operator; `promote` reads its answer. These tests
give `promote` the answers the operator returns (approved, rejected, timed out, wrong approver)
and run the `model_rollback` DAG for real (dag.test).
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import yaml

from llmops.registry import mlflow_registry as registry

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def approval_pipeline(mlflow_server, monkeypatch, tmp_path):
    """A pipeline whose model needs alice's approval, with three registered versions."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    model = f"approval-test-{uuid.uuid4().hex[:8]}"
    raw = yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())
    raw["name"] = "approval_check"
    raw["registry"] = {"model_name": model, "approval": {"required": True, "approvers": ["alice"]}}
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "approval_check.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(pipelines))
    registry.configure()

    class EchoModel(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    experiment = registry.ensure_experiment(model)
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(name="model", python_model=EchoModel(), pip_requirements=["mlflow"])
    for _ in range(3):
        mlflow.register_model(info.model_uri, model)
    return model


def _answer(option: str, user: str | None) -> dict:
    """What the HITL operator returns (its XCom) once answered, or resolved by its timeout."""
    return {
        "chosen_options": [option],
        "params_input": {},
        "responded_at": dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.UTC),
        "responded_by_user": {"id": user, "name": user.title()} if user else None,
    }


def _records(event_type: str) -> list:
    from llmops.ledger import get_ledger

    return get_ledger().records(pipeline="approval_check", event_type=event_type)


def test_approved_version_is_promoted_and_the_approver_recorded(approval_pipeline):
    from llmops.orchestration.finetune import promote

    registered = {"model_name": approval_pipeline, "version": "1"}
    result = promote("approval_check", registered, "run-1", approval=_answer("Approve", "alice"))
    assert result["promoted"] is True
    assert registry.alias_version(approval_pipeline, "champion") == "1"
    [approved] = _records("model.approved")
    assert approved.payload["approver"] == {"id": "alice", "name": "Alice"}
    assert approved.payload["responded_at"].startswith("2026-11-28T09:30")
    # The approval is recorded before the promotion.
    [promoted] = _records("model.promoted")
    assert promoted.seq > approved.seq


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (_answer("Reject", "alice"), "rejected"),
        (_answer("Reject", None), "timed_out"),  # no answer in time: the default, Reject
        (_answer("Approve", "mallory"), "approver_not_allowed"),
        (None, "no_decision"),
    ],
)
def test_no_approval_leaves_the_champion_untouched(approval_pipeline, answer, outcome):
    from llmops.orchestration.finetune import promote

    registry.promote(approval_pipeline, "1")
    registered = {"model_name": approval_pipeline, "version": "2"}
    result = promote("approval_check", registered, "run-2", approval=answer)
    assert result == {"promoted": False, "reason": outcome, "champion": "1"}
    assert registry.alias_version(approval_pipeline, "champion") == "1"
    [rejected] = _records("model.rejected")
    assert rejected.payload["outcome"] == outcome
    assert _records("model.promoted") == []


def test_rollback_dag_restores_the_previous_champion_and_records_why(approval_pipeline, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    registry.promote(approval_pipeline, "1")
    registry.promote(approval_pipeline, "2")
    bag = DagBag(dag_folder=str(PROJECT / "dags" / "governance.py"))
    rollback = bag.dags["model_rollback"]
    run = rollback.test(run_conf={"model_name": approval_pipeline, "reason": "INC-4711 wrong answers"})
    assert run.state == "success"
    assert registry.alias_version(approval_pipeline, "champion") == "1"
    assert registry.alias_version(approval_pipeline, "rolled_back") == "2"
    [record] = _records("model.rolled_back")
    assert record.payload["reason"] == "INC-4711 wrong answers"
    assert record.payload["champion"] == "1" and record.payload["rolled_back"] == "2"

    # Nothing left to roll back to: the run fails with the reason, the champion stays.
    again = rollback.test(run_conf={"model_name": approval_pipeline, "reason": "second try"})
    assert again.state == "failed"
    assert registry.alias_version(approval_pipeline, "champion") == "1"
    unknown = rollback.test(run_conf={"model_name": "no-such-model", "reason": "typo"})
    assert unknown.state == "failed"


def test_finetune_dag_waits_for_approval_between_register_and_promote(approval_pipeline):
    from llmops.orchestration.factory import finetune_dag
    from llmops.specs import load_pipeline

    dag = finetune_dag(load_pipeline("approval_check"))
    approve = dag.get_task("approve")
    assert type(approve).__name__ == "HITLOperator"
    assert approve.options == ["Approve", "Reject"] and approve.defaults == ["Reject"]
    assert approve.response_timeout == dt.timedelta(hours=72)
    assert approve.assigned_users == [{"id": "alice", "name": "alice"}]
    assert approve.upstream_task_ids == {"register"}
    assert dag.get_task("promote").upstream_task_ids == {"register", "approve"}
    assert "check_gates" in approve.body and "Reject" in approve.body
