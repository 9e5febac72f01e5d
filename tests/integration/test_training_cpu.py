"""End to end on CPU: build a tiny base model, fine-tune it with LoRA through the real CLI in a
subprocess (as the Airflow side launches it), then evaluate adapter against base.

The task is learnable only through the prompt: each completion is a fixed sentence chosen by
the category word in the prompt, so a working adapter must beat the base model clearly.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmops.training.artifacts import weights_sha256
from llmops.training.tiny_model import BUILD_INFO_FILE, PLACEHOLDER_TOKENS, build_tiny_model

pytestmark = pytest.mark.slow

INCLUDE = Path(__file__).resolve().parents[2] / "include"
RESPONSES = {
    "billing": "Forward the ticket to the billing team and confirm the invoice amount.",
    "shipping": "Check the courier tracking number and share the new delivery date.",
    "refund": "Approve the refund and send the customer a confirmation email.",
    "login": "Reset the password and ask the user to sign in again.",
    "privacy": "Open a data request and reply within thirty days.",
}
WHO = ("customer", "user", "client", "member", "buyer")
DID = ("wrote to support", "called the help desk", "sent a message", "opened a chat", "left a review")
TINY = {
    "vocab_size": 512,
    "hidden_size": 64,
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
    "max_position": 256,
    "pretrain_steps": 150,
    "block_size": 64,
    "seed": 0,
}


def make_corpus(n: int = 300, seed: int = 0) -> list[str]:
    """General text with the task's vocabulary, but never the category -> answer mapping."""
    rng = random.Random(seed)
    sentences = list(RESPONSES.values())
    sentences += [
        f"The {rng.choice(WHO)} {rng.choice(DID)} about {c} yesterday." for c in RESPONSES for _ in range(5)
    ]
    sentences += [f"Ticket {i}: Category: {c}. Action: pending." for i, c in enumerate(RESPONSES)]
    sentences += [f"Please do not share {p} in a ticket." for p in PLACEHOLDER_TOKENS]
    return [" ".join(rng.choice(sentences) for _ in range(rng.randint(2, 4))) for _ in range(n)]


def make_rows(n: int = 200, seed: int = 1) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        category = rng.choice(sorted(RESPONSES))
        prompt = f"Ticket {i}: the {rng.choice(WHO)} {rng.choice(DID)}. Category: {category}\nAction:"
        rows.append({"prompt": prompt, "completion": " " + RESPONSES[category]})
    return rows


def run_module(
    module: str, config: dict[str, Any], path: Path, timeout: int = 240
) -> subprocess.CompletedProcess:
    path.write_text(json.dumps(config, indent=2))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(INCLUDE), os.environ.get("PYTHONPATH", "")) if p),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MLFLOW_RUN_ID", None)
    return subprocess.run(
        [sys.executable, "-m", module, "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _check(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, (
        f"exit {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sft")
    base = root / "base"
    build_tiny_model(make_corpus(), base, **TINY)
    rows = make_rows()
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:160]))
    (root / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[160:]))
    return {"root": root, "base": base, "train": root / "train.jsonl", "eval": root / "eval.jsonl"}


def _job(ws: dict[str, Path], output_dir: Path, **overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "run_name": "test-sft",
        "base_model_path": str(ws["base"]),
        "train_file": str(ws["train"]),
        "eval_file": str(ws["eval"]),
        "output_dir": str(output_dir),
        "device": "cpu",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "hyperparameters": {
            "learning_rate": 0.01,
            "epochs": 8,
            "batch_size": 8,
            "max_length": 128,
            "lr_scheduler": "linear",
            "seed": 7,
        },
    }
    job.update(overrides)
    return job


@pytest.fixture(scope="module")
def trained(workspace: dict[str, Path]) -> dict[str, Any]:
    output_dir = workspace["root"] / "run"
    done = run_module("llmops.training", _job(workspace, output_dir), workspace["root"] / "job.json")
    _check(done)
    return {
        "output_dir": output_dir,
        "stdout": done.stdout,
        "result": json.loads((output_dir / "result.json").read_text()),
    }


def test_tiny_model_loads_with_from_pretrained(workspace: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = json.loads((workspace["base"] / BUILD_INFO_FILE).read_text())
    assert info["weights_sha256"] == weights_sha256(workspace["base"])
    assert info["final_loss"] < info["initial_loss"] / 3
    tokenizer = AutoTokenizer.from_pretrained(workspace["base"])
    model = AutoModelForCausalLM.from_pretrained(workspace["base"])
    assert model.config.model_type == "llama"
    assert model.config.num_key_value_heads == TINY["kv_heads"]
    for placeholder in PLACEHOLDER_TOKENS:
        assert len(tokenizer(placeholder, add_special_tokens=False)["input_ids"]) == 1, placeholder
    ids = tokenizer("Contact [EMAIL] today")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] != tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Contact [EMAIL] today"


def test_tiny_model_build_is_deterministic_and_cli_works(tmp_path: Path) -> None:
    from llmops.training import tiny_model

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(make_corpus(60, seed=3)))
    small = ["--vocab-size", "320", "--hidden-size", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1"]
    small += ["--max-position", "64", "--pretrain-steps", "5", "--seed", "11"]
    assert tiny_model.main(["--corpus", str(corpus), "--out", str(tmp_path / "a"), *small]) == 0
    assert tiny_model.main(["--corpus", str(corpus), "--out", str(tmp_path / "b"), *small]) == 0
    a = json.loads((tmp_path / "a" / BUILD_INFO_FILE).read_text())
    b = json.loads((tmp_path / "b" / BUILD_INFO_FILE).read_text())
    assert a["weights_sha256"] == b["weights_sha256"]
    assert a["final_loss"] == b["final_loss"]


def test_training_result(trained: dict[str, Any], workspace: dict[str, Path]) -> None:
    result = trained["result"]
    assert result["status"] == "succeeded"
    assert result["method"] == "sft" and result["run_name"] == "test-sft"
    assert result["device"] == "cpu" and result["dtype"] == "float32"
    assert result["seed"] == 7
    assert result["global_step"] == 160  # 160 rows / batch 8 * 8 epochs
    assert result["epochs"] == pytest.approx(8.0)
    assert result["train_tokens"] > 0 and result["tokens_per_second"] > 0
    assert result["train_runtime_s"] > 0
    assert 0 < result["trainable_params"] < result["total_params"]
    for key in ("base_model_sha256", "adapter_sha256", "config_sha256"):
        assert len(result[key]) == 64
    assert set(result["library_versions"]) == {"torch", "transformers", "peft", "trl"}
    assert result["mlflow_run_id"] is None
    # Logs are readable lines on stdout, not progress bars.
    assert "train step 160/160" in trained["stdout"]
    assert "\r" not in trained["stdout"]


def test_base_weights_unchanged_and_adapter_trained(
    trained: dict[str, Any], workspace: dict[str, Path]
) -> None:
    import torch
    from safetensors.torch import load_file

    result = trained["result"]
    assert result["base_weights_unchanged"] is True
    assert result["adapter_weights_changed"] is True
    build_info = json.loads((workspace["base"] / BUILD_INFO_FILE).read_text())
    assert result["base_model_sha256"] == build_info["weights_sha256"] == weights_sha256(workspace["base"])

    adapter_dir = trained["output_dir"] / "adapter"
    assert result["adapter_sha256"] == weights_sha256(adapter_dir)
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    assert tensors and all("lora_" in name for name in tensors), "the adapter must hold LoRA weights only"
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(t) > 0 for t in lora_b), (
        "lora_B starts at zero; training moves it"
    )
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["r"] == 16 and adapter_config["lora_alpha"] == 32
    assert (adapter_dir / "tokenizer.json").is_file()
    leftovers = [p.name for p in trained["output_dir"].iterdir() if p.name.startswith(".")]
    assert leftovers == [], "temp and scratch directories must be cleaned up"


def test_eval_loss_improves_over_the_base_model(trained: dict[str, Any]) -> None:
    result = trained["result"]
    assert result["eval_loss"] < result["base_eval_loss"] * 0.6


def test_evaluation_shows_lift_over_baseline(trained: dict[str, Any], workspace: dict[str, Path]) -> None:
    output_file = workspace["root"] / "eval" / "metrics.json"
    config = {
        "base_model_path": str(workspace["base"]),
        "adapter_path": str(trained["output_dir"] / "adapter"),
        "eval_file": str(workspace["eval"]),
        "output_file": str(output_file),
        "max_samples": 20,
        "max_new_tokens": 24,
        "seed": 7,
        "device": "cpu",
    }
    done = run_module("llmops.evaluation", config, workspace["root"] / "eval.json")
    _check(done)
    text = output_file.read_text()
    metrics = json.loads(text)
    baseline = metrics["baseline"]
    for key in (
        "eval_loss",
        "eval_perplexity",
        "token_f1",
        "exact_match",
        "rouge_l",
        "latency_ms_mean",
        "latency_ms_p95",
    ):
        assert isinstance(metrics[key], float), key
        assert isinstance(baseline[key], float), key
    assert metrics["n_samples"] == baseline["n_samples"] == 20
    assert metrics["device"] == "cpu"
    assert metrics["token_f1"] > baseline["token_f1"] + 0.3
    assert metrics["rouge_l"] > baseline["rouge_l"]
    assert metrics["eval_loss"] < baseline["eval_loss"]
    assert metrics["eval_loss"] == pytest.approx(trained["result"]["eval_loss"], rel=0.05)
    assert metrics["latency_ms_p95"] >= metrics["latency_ms_mean"] * 0.5
    # No raw prompts or generations in the metrics file: they may carry personal data.
    for phrase in ("Ticket", "Category", *RESPONSES.values()):
        assert phrase not in text


def test_training_logs_into_a_given_mlflow_run(workspace: dict[str, Path], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("sft-test", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment_id, run_name="owned-by-airflow").info.run_id
    output_dir = tmp_path / "run"
    job = _job(workspace, output_dir, max_steps=4, mlflow={"tracking_uri": uri, "run_id": run_id})
    done = run_module("llmops.training", job, tmp_path / "job.json")
    _check(done)
    result = json.loads((output_dir / "result.json").read_text())
    assert result["global_step"] == 4
    assert result["mlflow_run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING", "a run owned by the orchestrator keeps its status"
    assert {"train_loss", "eval_loss", "loss"} <= set(run.data.metrics)
    history = client.get_metric_history(run_id, "eval_loss")
    assert sorted(m.step for m in history) == [0, 4]  # base model before training, adapter after
    assert len(client.search_runs([experiment_id])) == 1, "no extra run may be created"


def test_bad_inputs_fail_fast_with_a_failed_result(workspace: dict[str, Path], tmp_path: Path) -> None:
    output_dir = tmp_path / "run"
    job = _job(workspace, output_dir, train_file=str(tmp_path / "missing.jsonl"))
    done = run_module("llmops.training", job, tmp_path / "job.json", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "train_file: file not found" in done.stdout
    result = json.loads((output_dir / "result.json").read_text())
    assert result["status"] == "failed"
    assert "train_file" in result["error"]

    bad = run_module("llmops.training", {**job, "lora": {"r": -1}}, tmp_path / "bad.json", timeout=60)
    assert bad.returncode == 2
    assert "lora.r" in bad.stdout
