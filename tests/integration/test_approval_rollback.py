"""Approval before promotion and rollback, against a real MLflow tracking server.

The approval task is Airflow's human-in-the-loop operator; `promote` reads its answer. These tests
give `promote` the answers the operator returns (approved, rejected, timed out, wrong approver)
and run the `model_rollback` DAG for real (dag.test).
"""

from __future__ import annotations

import datetime as dt
import time
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
    raw.pop("deployment", None)  # echo models cannot pass a serving smoke test (test_deployment.py covers it)
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
    from llmops.orchestration.finetune.release import promote

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
    from llmops.orchestration.finetune.release import promote

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


def _two_approvers(pipelines: Path) -> None:
    path = pipelines / "approval_check.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["registry"]["approval"] = {"required": True, "approvers": ["alice", "carol"], "min_approvers": 2}
    path.write_text(yaml.safe_dump(raw))


@pytest.mark.parametrize(
    ("answers", "triggered_by", "outcome"),
    [
        ([_answer("Approve", "alice")], "alice", "approver_triggered_the_run"),
        ([_answer("Approve", "alice"), _answer("Approve", "alice")], "bob", "approvers_not_distinct"),
        ([_answer("Approve", "alice"), _answer("Reject", "carol")], "bob", "rejected"),
        ([_answer("Approve", "carol"), _answer("Approve", "alice")], "carol", "approver_triggered_the_run"),
    ],
    ids=["self-approval", "one-person-twice", "second-rejects", "trigger-among-two"],
)
def test_separation_of_duties(approval_pipeline, tmp_path, answers, triggered_by, outcome):
    """Expect the run's triggering user never to approve it, and two required approvals to need two
    distinct approvers; each refusal recorded with the answers and the triggering user."""
    from llmops.orchestration.finetune.release import promote

    if len(answers) > 1:
        _two_approvers(tmp_path / "pipelines")
    registry.promote(approval_pipeline, "1")
    registered = {"model_name": approval_pipeline, "version": "2"}
    result = promote(
        "approval_check",
        registered,
        f"run-{len(answers)}-{triggered_by}-{outcome}",
        approval=answers,
        triggered_by=triggered_by,
    )
    assert result == {"promoted": False, "reason": outcome, "champion": "1"}
    [rejected] = _records("model.rejected")
    assert rejected.payload["outcome"] == outcome and rejected.payload["triggered_by"] == triggered_by
    assert [a["id"] for a in rejected.payload["approvers"]] == [a["responded_by_user"]["id"] for a in answers]


def test_two_distinct_approvers_promote(approval_pipeline, tmp_path):
    from llmops.orchestration.finetune.release import promote

    _two_approvers(tmp_path / "pipelines")
    answers = [_answer("Approve", "carol"), _answer("Approve", "alice")]
    result = promote(
        "approval_check",
        {"model_name": approval_pipeline, "version": "2"},
        "run-2of2",
        approval=answers,
        triggered_by="bob",
    )
    assert result["promoted"] is True
    [approved] = _records("model.approved")
    assert [a["id"] for a in approved.payload["approvers"]] == ["carol", "alice"]


@pytest.mark.parametrize("approver", ["alice", "dag_test"], ids=["approver", "approver-who-triggered"])
@pytest.mark.slow
def test_approval_through_the_api_server_promotes_with_the_approvers_identity(
    approval_pipeline, airflow_db, tmp_path_factory, tmp_path, approver
):
    """A real round trip: the run parks in AWAITING_INPUT, the request shows the gate table, a
    user who is not an approver is refused (403), the approver answers through the HITL REST API
    (what the UI's Required actions page calls), and `promote` records them and moves the alias -
    unless the approver is the user who triggered the run (`dag.test` runs as `dag_test`): then
    Airflow takes the answer (the user is an assigned approver) but the promotion is refused."""
    import threading

    import httpx
    from airflow.sdk import DAG, get_current_context, task
    from airflow_api_server import run_api_server

    from llmops.orchestration.finetune import release
    from llmops.orchestration.finetune.dag import _approval_task
    from llmops.specs import load_pipeline

    if approver != "alice":
        path = tmp_path / "pipelines" / "approval_check.yaml"
        raw = yaml.safe_load(path.read_text())
        raw["registry"]["approval"]["approvers"] = ["alice", approver]
        path.write_text(yaml.safe_dump(raw))
    spec = load_pipeline("approval_check")
    model = approval_pipeline
    with DAG("hitl_approval_check", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) as dag:

        @task(task_id="collect_train")
        def collect_train() -> dict:
            return {"curated_snapshot_id": "c" * 20, "sft_snapshot_id": "s" * 20}

        @task(task_id="check_gates")
        def check_gates() -> dict:
            return {
                "passed": True,
                "gates": [
                    {
                        "metric": "token_f1",
                        "observed": 0.71,
                        "reason": "0.71 >= 0.6",
                        "champion": None,
                        "passed": True,
                    }
                ],
            }

        @task(task_id="register")
        def register() -> dict:
            return {"model_name": model, "version": "3"}

        @task(task_id="promote")
        def promote(registered: dict) -> dict:
            context = get_current_context()
            approval = context["ti"].xcom_pull(task_ids="approve")
            return release.promote(
                "approval_check",
                registered,
                context["dag_run"].run_id,
                approval=[approval],
                triggered_by=context["dag_run"].triggering_user_name,
            )

        registered = register()
        [collect_train(), check_gates()] >> registered
        registered >> _approval_task(spec) >> promote(registered)

    # dag.test() runs only DAGs the metadata DB knows: serialize this one as the DAG processor would.
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(tmp_path_factory.mktemp("no-dags")))
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    seen: dict = {}

    def answer_as_the_approvers(server) -> None:
        """What a person does in the UI, over the REST API the UI calls (dag.test owns the main thread)."""
        headers = {
            name: {"Authorization": f"Bearer {server.token(name)}"} for name in {"alice", "bob", approver}
        }
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            response = httpx.get(
                f"{server.base_url}/api/v2/dags/~/dagRuns/~/hitlDetails",
                params={"dag_id_pattern": "hitl_approval_check"},
                headers=headers["alice"],
                timeout=10,
                trust_env=False,
            )
            pending = [d for d in response.json().get("hitl_details", []) if not d.get("response_received")]
            if pending:
                detail = seen["detail"] = pending[0]
                run_id = detail["task_instance"]["dag_run_id"]
                url = (
                    f"{server.base_url}/api/v2/dags/hitl_approval_check/dagRuns/{run_id}"
                    "/taskInstances/approve/-1/hitlDetails"
                )
                answer = {"chosen_options": ["Approve"]}
                seen["bob"] = httpx.patch(
                    url, json=answer, headers=headers["bob"], timeout=10, trust_env=False
                )
                seen["approver"] = httpx.patch(
                    url, json=answer, headers=headers[approver], timeout=10, trust_env=False
                )
                return
            time.sleep(1)

    with run_api_server(
        tmp_path_factory.mktemp("hitl"), {"alice": "user", "bob": "op", approver: "user"}
    ) as server:
        responder = threading.Thread(target=answer_as_the_approvers, args=(server,), daemon=True)
        responder.start()
        run = dag.test()
        responder.join(timeout=30)
    detail = seen.get("detail")
    assert detail is not None, "the approval request never appeared"
    assert detail["options"] == ["Approve", "Reject"]
    assert "| token_f1 | 0.71 |" in detail["body"] and f"{model} version" in detail["body"]
    assert seen["bob"].status_code == 403, seen["bob"].text  # not an approver
    assert seen["approver"].status_code == 200, seen["approver"].text
    assert run.state == "success"
    if approver == "alice":
        assert registry.alias_version(model, "champion") == "3"
        [approved] = _records("model.approved")
        assert (
            approved.payload["approver"]["id"] == "alice" and approved.payload["triggered_by"] == "dag_test"
        )
    else:
        assert registry.alias_version(model, "champion") is None
        [refused] = _records("model.rejected")
        assert refused.payload["outcome"] == "approver_triggered_the_run"
        assert refused.payload["approver"]["id"] == refused.payload["triggered_by"] == "dag_test"


def test_finetune_dag_waits_for_approval_between_register_and_promote(approval_pipeline):
    from llmops.orchestration.finetune.dag import finetune_dag
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
