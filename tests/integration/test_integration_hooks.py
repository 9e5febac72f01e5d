"""Integration hooks against a real HTTP receiver on 127.0.0.1 that verifies every signature, and
MLflow 3.17's registry webhooks fired by the real tracking server.

The receiver's secret is the Airflow connection's password; llmops events carry
``X-Llmops-Signature`` (HMAC-SHA256 of the body), MLflow's carry ``X-MLflow-Signature``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from webhook_receiver import WebhookReceiver

from llmops.registry import mlflow_registry as registry

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
SECRET = "whsec-hooks-3b8e-never-logged"
CONN = "hooks_check_events"


@pytest.fixture
def hooks_pipeline(mlflow_server, monkeypatch, tmp_path):
    """Pipeline `hooks_check`: a webhook integration, no deployment, two registered echo versions."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("LLMOPS_LAKE_ROOT", str(tmp_path / "lake"))
    model = f"hooks-test-{uuid.uuid4().hex[:8]}"
    raw = yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())
    raw["name"] = "hooks_check"
    raw["registry"] = {"model_name": model}
    raw["integrations"] = {"webhook_conn_id": CONN, "mlflow_registry_webhook": True}
    for key in ("deployment", "batch_inference"):
        raw.pop(key)
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "hooks_check.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(pipelines))
    registry.configure()

    class EchoModel(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run(experiment_id=registry.ensure_experiment(model)):
        info = mlflow.pyfunc.log_model(name="model", python_model=EchoModel(), pip_requirements=["mlflow"])
    for _ in range(2):
        mlflow.register_model(info.model_uri, model)
    return model


@pytest.fixture
def receiver(monkeypatch):
    with WebhookReceiver(SECRET) as running:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", running.connection())
        yield running


def _evaluated(run_id: str, token_f1: float) -> None:
    from llmops.ledger import record
    from llmops.ledger.events import ModelEvaluated
    from llmops.specs import load_pipeline

    metrics = {"eval_loss": 0.4, "eval_perplexity": 1.5, "token_f1": token_f1, "pii_leakage_rate": 0.0}
    event = ModelEvaluated(metrics=metrics, champion=None, pii_probe=None)
    record(load_pipeline("hooks_check"), event, f"mlflow-run/{run_id}", run_id)


def test_promotion_is_sent_signed_with_metrics_once(hooks_pipeline, receiver):
    """Expect one signed `promoted` event with version, alias, previous version, metrics and the
    report link; a retried notify task sends nothing new; the delivery is in the ledger."""
    from llmops import storage
    from llmops.ledger import get_ledger
    from llmops.orchestration import deploy as deploy_steps
    from llmops.orchestration.finetune import release
    from llmops.settings import get_settings
    from llmops.storage import safe_run_id

    model = hooks_pipeline
    registry.promote(model, "1")
    run_id = "manual__2026-12-01T10:00:00+00:00"
    _evaluated(run_id, 0.81)
    release.promote("hooks_check", {"model_name": model, "version": "2"}, run_id)
    report = storage.join(
        get_settings().reports_root, "hooks_check", safe_run_id(run_id), "audit_report.html"
    )
    storage.write_bytes(report, b"<html>report</html>")

    sent = deploy_steps.notify_finetune("hooks_check", run_id, dag_id="hooks_check__finetune")
    assert [e["sent"] for e in sent["events"]] == [True]
    [event] = receiver.llmops
    assert event["event"] == "llmops.model.promoted" and event["pipeline"] == "hooks_check"
    assert (event["model"], event["version"], event["alias"], event["previous_version"]) == (
        model,
        "2",
        "champion",
        "1",
    )
    assert event["metrics"]["token_f1"] == 0.81 and event["report"] == report
    assert event["run_id"] == run_id and event["dag_id"] == "hooks_check__finetune"
    assert event["text"] == f"[llmops] {model} v2 is now champion (was v1)"
    assert len(event["event_id"]) == 32 and event["sent_at"]

    again = deploy_steps.notify_finetune("hooks_check", run_id)
    assert again["events"][0]["reason"] == "already delivered"
    assert len(receiver.llmops) == 1 and receiver.refused == []
    [delivered] = get_ledger().records(pipeline="hooks_check", event_type="integration.notified")
    assert delivered.payload["http_status"] == 200 and delivered.payload["event_id"] == event["event_id"]
    assert SECRET not in str(delivered.payload)


def test_gate_failure_is_sent_with_the_failed_gates(hooks_pipeline, receiver):
    """Expect a run whose gates failed to send `gate_failed` naming each failed gate, champion unchanged."""
    from llmops.evaluation.gates import GateFailed
    from llmops.orchestration import deploy as deploy_steps
    from llmops.orchestration.finetune import evaluate

    model = hooks_pipeline
    registry.promote(model, "1")
    run_id = "weak-run"
    _evaluated(run_id, 0.2)
    metrics = {"eval_perplexity": 1.5, "token_f1": 0.2, "pii_leakage_rate": 0.0, "toxicity_rate": 0.0}
    with pytest.raises(GateFailed):
        evaluate.check_gates(
            "hooks_check", {"metrics": metrics, "champion": None}, {"mlflow_run_id": "r-weak"}, run_id
        )

    deploy_steps.notify_finetune("hooks_check", run_id)
    [event] = receiver.llmops
    assert event["event"] == "llmops.model.gate_failed" and event["champion_version"] == "1"
    assert [g["metric"] for g in event["failed"]] == ["token_f1"]
    assert event["metrics"]["token_f1"] == 0.2
    assert "failed its gates (token_f1); champion unchanged" in event["text"]


def test_an_unreachable_then_recovering_receiver_gets_the_event_after_retries(hooks_pipeline, monkeypatch):
    """Expect 503s to be retried with backoff and the event delivered once the receiver recovers."""
    from llmops.deployment import webhooks
    from llmops.ledger import get_ledger
    from llmops.specs import load_pipeline

    with WebhookReceiver(SECRET, fail_first=2) as flaky:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", flaky.connection())
        result = webhooks.send(
            load_pipeline("hooks_check"),
            "rolled_back",
            f"model/{hooks_pipeline}/1",
            "rollback-run",
            {"model": hooks_pipeline, "version": "1", "alias": "champion"},
        )
    assert result["sent"] and result["attempts"] == 3 and flaky.attempts == 3
    assert [e["event"] for e in flaky.llmops] == ["llmops.model.rolled_back"]
    [delivered] = get_ledger().records(pipeline="hooks_check", event_type="integration.notified")
    assert delivered.payload["attempts"] == 3


def test_mlflow_registry_webhooks_fire_on_alias_moves_of_a_tracking_server(hooks_pipeline, receiver):
    """Expect MLflow's own registry webhook (registered once, updated after) to deliver signed
    `model_version_alias.created` events when a promotion moves `champion` and `previous`."""
    from mlflow import MlflowClient

    from llmops.deployment import webhooks
    from llmops.orchestration.finetune import release
    from llmops.specs import load_pipeline

    model = hooks_pipeline
    spec = load_pipeline("hooks_check")
    first = webhooks.ensure_mlflow_webhook(spec)
    assert first["registered"] and first["action"] in ("created", "updated")
    assert webhooks.ensure_mlflow_webhook(spec)["action"] == "updated"  # idempotent: one webhook
    names = [w.name for w in MlflowClient().list_webhooks(max_results=100)]
    assert names.count(webhooks.mlflow_webhook_name(CONN)) == 1

    registry.promote(model, "1")
    release.promote("hooks_check", {"model_name": model, "version": "2"}, "mlflow-hooks-run")

    def alias_event(alias: str, version: str):
        return lambda m: (
            (m["entity"], m["action"]) == ("model_version_alias", "created")
            and m["data"] == {"name": model, "alias": alias, "version": version}
        )

    assert receiver.wait_for(alias_event("champion", "2")), receiver.mlflow
    assert receiver.wait_for(alias_event("previous", "1")), receiver.mlflow
    assert receiver.refused == []  # every MLflow delivery carried a valid X-MLflow-Signature


def test_mlflow_registry_webhooks_need_a_tracking_server(hooks_pipeline, monkeypatch, tmp_path):
    """Expect an embedded (database) registry to be reported as not covered, not silently accepted."""
    from llmops.deployment import webhooks
    from llmops.specs import load_pipeline

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    outcome = webhooks.ensure_mlflow_webhook(load_pipeline("hooks_check"))
    assert outcome["registered"] is False and "tracking server" in outcome["reason"]
