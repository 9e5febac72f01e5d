"""Serving the champion, against a real MLflow tracking server and real scoring server processes.

Two llmops model versions (the tiny base model + a LoRA adapter, the real pyfunc that `register`
logs) are registered on the session's tracking server. Promotion then `deploy` serves the champion
with ``mlflow models serve -m models:/<name>@champion`` and asks it a real question; the vLLM and
KServe manifests name the version; a rollback (the `model_rollback` DAG, run for real) deploys the
restored version again; a webhook receiver on 127.0.0.1 checks every signature.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from test_training_cpu import tiny_workspace
from webhook_receiver import WebhookReceiver

from llmops.registry import mlflow_registry as registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2]
SECRET = "whsec-serving-7d1f-never-logged"
PROMPT = "Ticket 7: the customer wrote to support. Category: billing\nAction:"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, Path]:
    """The shared tiny base model and two LoRA adapters on it (ranks 8 and 16), made in seconds."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_workspace(tmp_path_factory)["base"]
    root = tmp_path_factory.mktemp("adapters")
    out = {"base": base}
    for rank in (8, 16):
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base),
            LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"),
        )
        model.save_pretrained(root / f"r{rank}")
        AutoTokenizer.from_pretrained(base).save_pretrained(root / f"r{rank}")
        out[f"r{rank}"] = root / f"r{rank}"
    return out


@pytest.fixture
def serving_pipeline(mlflow_server, adapters, monkeypatch, tmp_path):
    """A pipeline `serving_check` deploying to mlflow, vllm and kserve, with two registered versions."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("LLMOPS_LAKE_ROOT", str(tmp_path / "lake"))
    model = f"serving-test-{uuid.uuid4().hex[:8]}"
    raw = yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())
    raw["name"] = "serving_check"
    raw["registry"] = {"model_name": model}
    raw["deployment"]["mlflow"] = {"smoke_prompt": PROMPT, "max_latency_ms": 60000}
    raw["integrations"] = {"webhook_conn_id": "serving_check_hooks"}
    raw.pop("batch_inference")
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "serving_check.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(pipelines))
    registry.configure()
    experiment = registry.ensure_experiment(model)
    from mlflow import MlflowClient

    for rank in (8, 16):
        run_id = MlflowClient().create_run(experiment, tags={"llmops.stage": "train"}).info.run_id
        if rank == 16:  # the training run's params name the rank (as collect_train logs them)
            registry.log_params_and_metrics(run_id, params={"lora.r": rank}, metrics={})
        registry.log_and_register_model(
            run_id=run_id,
            model_name=model,
            base_model_dir=adapters["base"],
            adapter_dir=adapters[f"r{rank}"],
            tags={"llmops.adapter_uri": str(adapters[f"r{rank}"]), "llmops.pipeline": "serving_check"},
            max_new_tokens=16,
            input_example=PROMPT,
        )
    return model


def _records(event_type: str, run_id: str | None = None) -> list:
    from llmops.ledger import get_ledger

    return get_ledger().records(pipeline="serving_check", event_type=event_type, run_id=run_id)


def _deployed(run_id: str) -> dict[str, dict]:
    return {r.payload["target"]: r.payload for r in _records("model.deployed", run_id)}


def test_promotion_deploys_the_champion_and_a_rollback_redeploys_the_previous(
    serving_pipeline, airflow_db, monkeypatch
):
    """Expect promote -> deploy to serve v1 for real (answer, latency) and write manifests naming v1;
    after v2 is promoted, the model_rollback DAG restores v1 and deploys it again; downstream gets
    signed `promoted` and `rolled_back` events."""
    from airflow.dag_processing.dagbag import DagBag

    from llmops import storage
    from llmops.deployment import manifests
    from llmops.orchestration import deploy as deploy_steps
    from llmops.orchestration.finetune import release

    model = serving_pipeline
    with WebhookReceiver(SECRET) as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_SERVING_CHECK_HOOKS", receiver.connection())

        release.promote("serving_check", {"model_name": model, "version": "1"}, "finetune-run-1")
        summary = deploy_steps.deploy("serving_check", "finetune-run-1")
        assert summary["deployed"] and summary["version"] == "1"
        deployed = _deployed("finetune-run-1")
        assert set(deployed) == {"mlflow", "vllm", "kserve"}
        smoke = deployed["mlflow"]["smoke_test"]
        assert smoke["passed"] and smoke["http_status"] == 200, smoke
        assert isinstance(smoke["answer"], str) and smoke["answer"].strip()
        assert 0 < smoke["latency_ms"] < 60000
        assert deployed["mlflow"]["endpoint"]["model_uri"] == f"models:/{model}@champion"
        print(f"\nserved answer (v1): {smoke['answer']!r} in {smoke['latency_ms']} ms "
              f"(server up in {smoke['startup_s']} s)")  # fmt: skip
        for target in ("vllm", "kserve"):
            docs = list(yaml.safe_load_all(storage.read_bytes(deployed[target]["manifest_uri"])))
            for doc in docs:
                manifests.validate(doc)
            assert f"models:/{model}/1" in json.dumps(docs)
        assert deployed["vllm"]["lora_rank"] == 8  # from the adapter's config (no run param)
        current = storage.read_json(
            str(Path(os.environ["LLMOPS_LAKE_ROOT"]) / "reports/serving_check/deployments/CURRENT.json")
        )
        assert current["version"] == "1" and set(current["targets"]) == {"mlflow", "vllm", "kserve"}

        deploy_steps.notify_finetune("serving_check", "finetune-run-1")
        [promoted] = [p for p in receiver.llmops if p["event"] == "llmops.model.promoted"]
        assert (promoted["model"], promoted["version"], promoted["alias"]) == (model, "1", "champion")
        assert promoted["previous_version"] is None
        assert {d["target"] for d in promoted["deployments"]} == {"mlflow", "vllm", "kserve"}
        deploy_steps.notify_finetune("serving_check", "finetune-run-1")  # a retried task: not sent twice
        assert len(receiver.llmops) == 1

        release.promote("serving_check", {"model_name": model, "version": "2"}, "finetune-run-2")
        deploy_steps.deploy("serving_check", "finetune-run-2")
        assert _deployed("finetune-run-2")["vllm"]["lora_rank"] == 16  # from the run's params

        bag = DagBag(dag_folder=str(PROJECT / "dags" / "governance.py"))
        run = bag.dags["model_rollback"].test(run_conf={"model_name": model, "reason": "INC-9 bad answers"})
        assert run.state == "success"
        assert registry.alias_version(model, "champion") == "1"
        redeployed = _deployed(run.run_id)
        assert set(redeployed) == {"mlflow", "vllm", "kserve"}
        assert {p["version"] for p in redeployed.values()} == {"1"}
        assert {p["trigger"] for p in redeployed.values()} == {"rollback"}
        assert redeployed["mlflow"]["smoke_test"]["passed"]
        vllm = storage.read_bytes(redeployed["vllm"]["manifest_uri"]).decode()
        assert f"models:/{model}/1" in vllm and f"models:/{model}/2" not in vllm
        current = storage.read_json(
            str(Path(os.environ["LLMOPS_LAKE_ROOT"]) / "reports/serving_check/deployments/CURRENT.json")
        )
        assert (current["version"], current["trigger"]) == ("1", "rollback")

        [rolled] = [p for p in receiver.llmops if p["event"] == "llmops.model.rolled_back"]
        assert (rolled["version"], rolled["rolled_back_version"], rolled["reason"]) == (
            "1",
            "2",
            "INC-9 bad answers",
        )
        assert rolled["dag_id"] == "model_rollback" and rolled["run_id"] == run.run_id
        assert receiver.refused == []


def test_scoring_server_answers_the_documented_requests_and_fetch_lays_out_a_version(
    serving_pipeline, tmp_path
):
    """Expect the champion behind `mlflow models serve` to answer the curl/Python request formats of
    docs/serving.md, and the init container's command to download a version as base/ + adapter/."""
    import requests

    from llmops.deployment.serving import invoke, scoring_server

    model = serving_pipeline
    registry.promote(model, "2")
    with scoring_server(
        f"models:/{model}@champion", tracking_uri=os.environ["MLFLOW_TRACKING_URI"]
    ) as server:
        answered = invoke(
            server.url, [PROMPT, "Ticket 9: the buyer called the help desk. Category: refund\nAction:"]
        )
        assert answered["status"] == 200
        predictions = answered["body"]["predictions"]
        assert len(predictions) == 2 and all(isinstance(p, str) and p for p in predictions)
        split = requests.post(
            f"{server.url}/invocations",
            json={"dataframe_split": {"columns": ["prompt"], "data": [[PROMPT]]}},
            timeout=60,
        )
        assert (
            split.status_code == 200 and split.json()["predictions"] == predictions[:1]
        )  # greedy: same answer
        bad = requests.post(
            f"{server.url}/invocations", json={"dataframe_records": [{"question": "x"}]}, timeout=60
        )
        assert bad.status_code == 400  # the signature's column is `prompt`

    dest = tmp_path / "models"
    argv = [
        sys.executable,
        "-m",
        "llmops.deployment.fetch",
        "--model-uri",
        f"models:/{model}/2",
        "--dest",
        str(dest),
    ]
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "include")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (dest / "base" / "config.json").is_file()
    assert json.loads((dest / "adapter" / "adapter_config.json").read_text())["r"] == 16
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "already fetched" in again.stdout
