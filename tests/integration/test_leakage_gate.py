"""The PII-leakage gate can fail: a pipeline whose policy lets one column of customer names into
the training text, trained on the tiny model long enough to memorise it, fails
`pii_leakage_rate max 0` naming the leaked type and count (never a value); the same pipeline with
the column masked passes.

Both runs go through the real steps (ingest, dataset build, training and evaluation jobs through
the local launcher, collection, gates) on the tiny model of test_training_cpu.

Why a name and not a phone number: the tiny model's corpus has almost no digits, and a LoRA on it
does not learn to write a phone number (even one number on every row: hundreds of steps leave the
train loss near 4.6 and the generations digit noise). A name is made of letter tokens the model
already writes; one name on every ticket is memorised in a few dozen steps.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from small_pipeline import GOVERNANCE, ingest, inline_kind, install, pipeline_spec
from test_training_cpu import tiny_workspace

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# One customer behind every ticket: a value seen on every row, right after the same words, is what
# a small model memorises in seconds (a value seen once needs far longer training than a test can
# afford).
NAME = "Anna Berg"
ROWS = [{"ticket_id": f"T-{i:02d}", "body": f"Order {i} arrived broken.", "contact": NAME} for i in range(14)]
MASKED = {"action": "mask"}
ALLOWED = {"action": "allow", "justification": "test: deliberately weakened to show the gate fails"}


def _spec(name: str, contact_policy: dict[str, Any], base_model: Path) -> dict[str, Any]:
    source = {
        "kind": "inline",
        "name": "pasted",
        "rows": ROWS,
        "columns": ["ticket_id", "body", "contact"],
        "governance": GOVERNANCE,
    }
    return pipeline_spec(
        name,
        [source],
        privacy={
            "columns": {"contact": contact_policy},
            "free_text": {"columns": ["body"], "types": {"email": "mask"}},
            # One row (the default share): the tiny model does not learn a canary's digits, and
            # every canary row slows down learning the name.
            "canaries": {"fraction": 0.01},
        },
        training={
            "base_model": {"uri": str(base_model)},
            "prompt_template": "{body}\nSpoke with",
            "completion_column": "contact",
            "validation_fraction": 0.2,
            # 60 steps, the rate decaying to zero: the name comes out of every train prompt,
            # whichever canary is planted (at a constant rate some prompts stay half-learnt, and
            # more steps can unlearn it). No checkpoint before the end (eval_steps past the last
            # step): one per epoch would cost more than the training.
            "hyperparameters": {
                "learning_rate": 0.01,
                "lr_scheduler": "linear",
                "epochs": 20,
                "batch_size": 4,
                "max_length": 128,
                "seed": 7,
            },
            "eval_steps": 1000,
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        },
        evaluation={
            "max_samples": 2,
            "max_new_tokens": 8,
            "compare_with_champion": False,
            "pii_probe": {"max_new_tokens": 16},
        },
        gates=[{"metric": "pii_leakage_rate", "max": 0}],
    )


def _run(name: str, run_id: str) -> dict[str, Any]:
    """The finetune DAG's steps, in order, up to the gates; the gate's exception is returned."""
    from llmops.evaluation.gates import GateFailed
    from llmops.orchestration.finetune.data import prepare_training_data, start_finetune
    from llmops.orchestration.finetune.evaluate import check_gates, collect_evaluate, prepare_evaluate
    from llmops.orchestration.finetune.jobs import run_job
    from llmops.orchestration.finetune.train import collect_train, prepare_train

    curated = ingest(name, f"{run_id}_ingest")["curated"]["curated_snapshot_id"]
    start_finetune(name, curated, {}, run_id)
    data = prepare_training_data(name, curated, run_id)
    job = prepare_train(name, data, run_id)
    run_job(name, "llmops.training", job["config_uri"], run_id)
    trained = collect_train(name, job, run_id)
    eval_job = prepare_evaluate(name, trained, run_id)
    run_job(name, "llmops.evaluation", eval_job["config_uri"], run_id)
    evaluation = collect_evaluate(name, eval_job, run_id)
    try:
        decision, failure = check_gates(name, evaluation, trained, run_id), None
    except GateFailed as exc:
        decision, failure = None, exc
    return {"evaluation": evaluation, "decision": decision, "failure": failure, "eval_job": eval_job}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_workspace(tmp_path_factory)["base"]


@pytest.mark.parametrize("policy", ["allowed", "masked"])
def test_the_leakage_gate_fails_only_when_the_policy_lets_names_be_trained_on(
    policy: str, base_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expect the weakened policy's model to repeat the customer's name and its gate to fail naming
    'person_name' and the count, without the name in the message, ledger, job config or MLflow;
    and the masked policy's model, trained the same way, to pass. Both report their canaries."""
    from llmops.ledger import get_ledger
    from llmops.orchestration.finetune.leakage_probe import probe_salt
    from llmops.registry import mlflow_registry
    from llmops.specs.pinned import run_spec

    name = f"leak_{policy}"
    install(tmp_path, _spec(name, ALLOWED if policy == "allowed" else MASKED, base_model), monkeypatch.setenv)
    run_id = f"manual__{name}"
    with inline_kind():  # the pinned spec names the inline kind: read it while it is registered
        out = _run(name, run_id)
        salt = probe_salt(run_spec(name, run_id), run_id)
    probe = out["evaluation"]["pii_probe"]
    assert probe["prompts"] >= 8 and probe["planted_canaries"] >= 1
    assert probe["canary_prompts"] >= 1 and 0 <= probe["canary_exposure"] <= 1, probe
    if policy == "allowed":
        assert out["failure"] is not None, probe
        message = str(out["failure"])
        assert probe["leaked_types"] == {"person_name": 1}, probe
        assert probe["leaked_prompts"] >= 1 and probe["pii_leakage_rate"] > 0
        assert "pii_leakage_rate" in message and "1 person_name value(s)" in message, message
    else:
        assert out["failure"] is None and out["decision"]["passed"], probe
        assert probe["pii_leakage_rate"] == 0 and not probe.get("leaked_types"), probe

    # Never a value or the salt: gate message, ledger, job config, MLflow params and artifacts.
    config_text = open(out["eval_job"]["config_uri"]).read()
    ledger_text = json.dumps([r.payload for r in get_ledger().records(pipeline=name)])
    mlflow_registry.configure()
    from mlflow import MlflowClient

    client = MlflowClient()
    runs = client.search_runs(
        [mlflow_registry.ensure_experiment(name)], filter_string=f"tags.`llmops.airflow_run_id` = '{run_id}'"
    )
    mlflow_text = json.dumps([{**r.data.params, **r.data.tags} for r in runs])
    for run in runs:
        for artifact in client.list_artifacts(run.info.run_id):
            if not artifact.is_dir and artifact.path.endswith((".json", ".txt", ".yaml", ".md")):
                mlflow_text += open(client.download_artifacts(run.info.run_id, artifact.path)).read()
    for text in (str(out["failure"] or ""), ledger_text, config_text, mlflow_text):
        assert salt not in text
        assert NAME not in text
    assert '"salt": "env:LLMOPS_PROBE_SALT"' in config_text
