"""DAG shapes of issue 9: deploy after promote, notify as a teardown, rollback redeploys, batch DAG,
and the budget guard on search trials (local tasks and pods)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmops.orchestration.factory import build_pipeline_dags
from llmops.orchestration.finetune.dag import finetune_dag
from llmops.specs import parse_spec

PIPELINE = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "support_bot.yaml"


def _spec(**changes: Any) -> Any:
    raw = yaml.safe_load(PIPELINE.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return parse_spec(raw)


def test_deploy_follows_promote_and_the_report_still_closes_the_run() -> None:
    """Expect promote -> deploy -> audit_report (teardown), deploy deciding the run's state."""
    dag = finetune_dag(_spec())
    deploy = dag.get_task("deploy")
    assert deploy.upstream_task_ids == {"promote"}
    assert deploy.retries == 1 and not deploy.is_teardown
    assert dag.get_task("audit_report").upstream_task_ids >= {"deploy"}
    assert "notify" not in dag.task_ids  # no integrations in the demo spec


def test_without_targets_there_is_no_deploy_task() -> None:
    dag = finetune_dag(_spec(deployment=None))
    assert "deploy" not in dag.task_ids
    assert dag.get_task("audit_report").upstream_task_ids >= {"promote"}


def test_notify_is_a_teardown_after_the_report() -> None:
    """Expect notify to run after the audit report whatever happened, without deciding the run's state."""
    dag = finetune_dag(_spec(integrations={"webhook_conn_id": "events"}))
    notify = dag.get_task("notify")
    assert notify.is_teardown and not notify.on_failure_fail_dagrun
    assert notify.upstream_task_ids == {"audit_report", "start"}


def test_rollback_dag_deploys_then_notifies() -> None:
    from llmops.orchestration.rollback import rollback_dag

    dag = rollback_dag()
    assert dag.get_task("deploy").upstream_task_ids == {"rollback"}
    notify = dag.get_task("notify")
    assert notify.upstream_task_ids == {"deploy"} and notify.is_teardown
    assert not dag.get_task("rollback").is_setup  # clearing deploy must never re-run the rollback
    assert dag.get_task("rollback").retries == 0


def test_batch_inference_dag_only_with_the_spec_block() -> None:
    with_batch = {d.dag_id for d in build_pipeline_dags("support_bot", {})}
    assert "support_bot__batch_inference" in with_batch
    dag = next(d for d in build_pipeline_dags("support_bot", {}) if d.dag_id.endswith("batch_inference"))
    assert type(dag.timetable).__name__ == "NullTimetable"  # no schedule in the demo: triggered
    assert dag.task_ids == ["score"] and "batch-inference" in dag.tags


def test_trial_pods_get_a_budget_guard_only_with_a_budget() -> None:
    search_spec = {
        "trials": 2,
        "space": {"learning_rate": {"type": "float", "low": 0.001, "high": 0.01, "log": True}},
    }
    raw = yaml.safe_load(PIPELINE.read_text())
    raw["training"].update(
        launcher="kubernetes",
        kubernetes={"image": "registry.example/trainer@sha256:" + "a" * 64},
        search=search_spec,
    )
    dag = finetune_dag(parse_spec(raw))
    assert callable(dag.get_task("run_trial").partial_kwargs.get("pre_execute"))
    raw.pop("cost")
    dag = finetune_dag(parse_spec(raw))
    assert dag.get_task("run_trial").partial_kwargs.get("pre_execute") is None


def test_the_budget_guard_skips_a_pod_trial_once_the_budget_is_spent(tmp_path, monkeypatch) -> None:
    """Expect the pods' pre_execute hook to skip trial 1 (recorded) after trial 0 spent the budget."""
    import json
    from types import SimpleNamespace

    import pytest
    from airflow.sdk.exceptions import AirflowSkipException

    from llmops.ledger import get_ledger
    from llmops.orchestration.finetune import search
    from llmops.orchestration.finetune.dag import _trial_budget_guard

    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    raw = yaml.safe_load(PIPELINE.read_text())
    raw["cost"]["budget"] = 0.001
    spec = parse_spec(raw)
    monkeypatch.setattr(search, "run_spec", lambda name, run_id: spec)
    trials = []
    for n in range(2):
        (tmp_path / f"t{n}").mkdir()
        trials.append({"number": n, "output_dir": str(tmp_path / f"t{n}"), "params": {}, "study": "s"})
    result = {"status": "succeeded", "device": "cpu", "world_size": 1, "job_wall_s": 60.0}
    (tmp_path / "t0" / "result.json").write_text(json.dumps(result))  # 60 s x 0.10/h = 0.00167 EUR
    ti = SimpleNamespace(map_index=1, xcom_pull=lambda task_ids: trials)
    with pytest.raises(AirflowSkipException, match="trial 1 not started"):
        _trial_budget_guard(spec)({"ti": ti, "dag_run": SimpleNamespace(run_id="r1")})
    assert json.loads((tmp_path / "t1" / "result.json").read_text())["status"] == "skipped"
    assert len(get_ledger().records(pipeline="support_bot", event_type="hpo.trial_skipped")) == 1
