"""The demo run's deployment and cost records (issue 9), from the session's real demo pipeline."""

from __future__ import annotations

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _records(event_type: str, run_id: str) -> list:
    from llmops.ledger import get_ledger

    return get_ledger().records(pipeline="support_bot", event_type=event_type, run_id=run_id)


def test_the_demo_champion_is_served_and_its_manifests_written(demo):
    """Expect the promoted champion to answer through MLflow's scoring server and the vLLM / KServe
    manifests to name its version; the weak run, which promoted nothing, deploys nothing."""
    from llmops import storage
    from llmops.deployment import manifests

    run_id = demo["finetune"].run_id
    deployed = {r.payload["target"]: r.payload for r in _records("model.deployed", run_id)}
    assert set(deployed) == {"mlflow", "vllm", "kserve"}
    smoke = deployed["mlflow"]["smoke_test"]
    assert smoke["passed"] and smoke["http_status"] == 200 and smoke["answer"]
    print(
        f"\ndemo champion v{deployed['mlflow']['version']} served: {smoke['answer']!r} "
        f"latency {smoke['latency_ms']} ms, server start {smoke['startup_s']} s"
    )
    for target in ("vllm", "kserve"):
        docs = list(yaml.safe_load_all(storage.read_bytes(deployed[target]["manifest_uri"])))
        assert all(manifests.validate(d) for d in docs)
        assert "models:/support_bot/1" in str(docs)
    assert _records("model.deployed", demo["weak"].run_id) == []
    assert _records("model.deployment_failed", demo["weak"].run_id) == []


def test_each_job_of_the_demo_run_has_its_usage_and_cost(demo):
    """Expect wall time, device, GPU-hours and cost for the 3 trials and the training, totals in the
    ledger, in MLflow and in the audit report."""
    from mlflow import MlflowClient

    from llmops import storage
    from llmops.registry.mlflow_registry import configure
    from llmops.settings import get_settings
    from llmops.storage import safe_run_id

    run_id = demo["finetune"].run_id
    [recorded] = _records("cost.recorded", run_id)
    payload = recorded.payload
    jobs = payload["jobs"]
    assert [j["job"] for j in jobs] == ["trial-0", "trial-1", "trial-2", "train"]
    for job in jobs:
        assert job["device"] == "cpu" and job["devices"] == 1 and job["gpu_hours"] == 0.0
        assert job["wall_s"] > 0 and job["price_key"] == "cpu" and job["cost"] > 0
    totals = payload["totals"]
    assert totals["currency"] == "EUR" and totals["budget"] == 20.0 and not totals["budget_exceeded"]
    assert totals["cost"] == pytest.approx(sum(j["cost"] for j in jobs), abs=1e-5)
    assert payload["trials_skipped_for_budget"] == 0
    print(
        f"\ndemo run cost: {totals['cost']} {totals['currency']} for {totals['wall_hours']} wall hours, "
        f"{totals['gpu_hours']} GPU-hours; per job: "
        + ", ".join(f"{j['job']} {j['wall_s']} s = {j['cost']}" for j in jobs)
    )

    configure()
    run = MlflowClient().get_run(payload["mlflow_run_id"])
    assert run.data.metrics["cost_total"] == pytest.approx(totals["cost"], abs=1e-6)
    assert run.data.metrics["wall_s"] > 0 and "gpu_hours_total" in run.data.metrics

    folder = storage.join(get_settings().reports_root, "support_bot", safe_run_id(run_id))
    report = storage.read_json(storage.join(folder, "audit_report.json"))
    assert report["cost"]["totals"]["cost"] == totals["cost"]
