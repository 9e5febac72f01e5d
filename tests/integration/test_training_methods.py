"""Training methods beyond SFT, end to end on CPU with the tiny model, through the real CLI.

* ``continued_pretraining``: LoRA next-token training on raw domain text packed into blocks; the
  held-out split is more of the same domain text, so its perplexity must fall below the base
  model's.
* ``preference``: DPO on prompt/chosen/rejected pairs where the chosen answer is the on-topic
  response and the rejected one is off-topic; a few steps must move the reward margin and the
  reward accuracy above the untrained adapter's (0: policy equals reference).

Both reuse the SFT driver, so the same integrity checks (base weights unchanged, adapter
trained), manifest and result keys apply.
"""

from __future__ import annotations

import json
import math
import random
from typing import TYPE_CHECKING, Any

import pytest
from test_training_cpu import RESPONSES, WHO, check_done, job_config, run_module, tiny_workspace

from llmops.jobs.artifacts import weights_sha256
from llmops.training.tiny_model import BUILD_INFO_FILE

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOMAIN = (
    "Warranty claims need the serial number and a photo of the damaged part.",
    "Spare parts ship from the central depot within two working days.",
    "A technician visit is booked only after the remote diagnosis has failed.",
    "Firmware updates are installed overnight and never during business hours.",
    "Loaner devices are returned to the depot when the repair is complete.",
    "The repair desk closes every ticket with a short summary for the customer.",
)
OFF_TOPIC = (
    " The weather was lovely and we went for a walk by the river.",
    " My favourite colour is green and I like to paint on weekends.",
    " Bananas are yellow and monkeys like to eat them for lunch.",
    " The concert last night was loud and the band played until midnight.",
)


def make_texts(n: int, seed: int) -> list[dict[str, str]]:
    """Domain text the base model never saw: the same few sentences in varying order."""
    rng = random.Random(seed)
    return [{"text": " ".join(rng.sample(DOMAIN, 3))} for _ in range(n)]


def make_pairs(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        category = rng.choice(sorted(RESPONSES))
        rows.append(
            {
                "prompt": f"Ticket {i}: the {rng.choice(WHO)} wrote to support. Category: {category}\nAction:",
                "chosen": " " + RESPONSES[category],
                "rejected": rng.choice(OFF_TOPIC),
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ws = tiny_workspace(tmp_path_factory)
    root = ws["root"]
    ws["text_train"] = write_jsonl(root / "text_train.jsonl", make_texts(40, seed=1))
    ws["text_eval"] = write_jsonl(root / "text_eval.jsonl", make_texts(10, seed=2))
    ws["pairs_train"] = write_jsonl(root / "pairs_train.jsonl", make_pairs(32, seed=3))
    ws["pairs_eval"] = write_jsonl(root / "pairs_eval.jsonl", make_pairs(16, seed=4))
    return ws


def _run(ws: dict[str, Path], name: str, **overrides: Any) -> tuple[Path, dict[str, Any]]:
    output_dir = ws["root"] / name
    done = run_module("llmops.training", job_config(ws, output_dir, **overrides), ws["root"] / f"{name}.json")
    check_done(done)
    return output_dir, json.loads((output_dir / "result.json").read_text())


def _check_common(output_dir: Path, result: dict[str, Any], ws: dict[str, Path], method: str) -> None:
    assert result["status"] == "succeeded" and result["method"] == method
    assert result["base_weights_unchanged"] is True and result["adapter_weights_changed"] is True
    build_info = json.loads((ws["base"] / BUILD_INFO_FILE).read_text())
    assert result["base_model_sha256"] == build_info["weights_sha256"] == weights_sha256(ws["base"])
    assert (output_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert weights_sha256(output_dir / "adapter") == result["adapter_sha256"]
    manifest = json.loads((output_dir / "manifest.json").read_text())
    assert manifest["method"] == method and manifest["config"]["method"] == method
    for key in ("train_loss", "eval_loss", "base_eval_loss"):
        assert math.isfinite(result[key]), key


def test_continued_pretraining_lowers_held_out_perplexity(workspace: dict[str, Path]) -> None:
    hyper = {"learning_rate": 0.01, "epochs": 4, "batch_size": 4, "max_length": 64, "seed": 7}
    output_dir, result = _run(
        workspace,
        "cpt",
        method="continued_pretraining",
        run_name="test-cpt",
        train_file=str(workspace["text_train"]),
        eval_file=str(workspace["text_eval"]),
        hyperparameters=hyper,
    )
    _check_common(output_dir, result, workspace, "continued_pretraining")
    assert result["packing"]["enabled"] is True and result["packing"]["strategy"] == "wrapped"
    assert result["train_tokens"] > 0
    for key in ("eval_perplexity", "base_eval_perplexity"):
        assert math.isfinite(result[key]) and result[key] >= 1.0, key
    assert result["eval_perplexity"] == pytest.approx(math.exp(result["eval_loss"]))
    assert result["base_eval_perplexity"] == pytest.approx(math.exp(result["base_eval_loss"]))
    assert result["eval_perplexity"] < result["base_eval_perplexity"] / 2, result


def test_preference_moves_the_reward_margin(workspace: dict[str, Path]) -> None:
    hyper = {"learning_rate": 0.005, "epochs": 3, "batch_size": 8, "max_length": 96, "seed": 7}
    output_dir, result = _run(
        workspace,
        "dpo",
        method="preference",
        run_name="test-dpo",
        train_file=str(workspace["pairs_train"]),
        eval_file=str(workspace["pairs_eval"]),
        hyperparameters=hyper,
        beta=0.1,
    )
    _check_common(output_dir, result, workspace, "preference")
    assert result["config"]["beta"] == 0.1
    assert result["global_step"] == 12  # 32 pairs / batch 8 * 3 epochs
    # Untrained adapter: the policy is the reference, every reward is 0 and the loss is log 2.
    assert result["base_eval_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert result["base_eval_reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert result["base_eval_reward_accuracy"] == 0.0
    for key in ("eval_reward_accuracy", "eval_reward_margin", "eval_reward_chosen", "eval_reward_rejected"):
        assert math.isfinite(result[key]), key
    assert 0.0 <= result["eval_reward_accuracy"] <= 1.0
    assert result["eval_reward_accuracy"] >= 0.75, result
    assert result["eval_reward_margin"] > 0.0
    assert result["eval_loss"] < result["base_eval_loss"]

    # A rerun (e.g. a retried task) resumes from the final checkpoint instead of training again.
    done = run_module(
        "llmops.training",
        json.loads((workspace["root"] / "dpo.json").read_text()),
        workspace["root"] / "dpo.json",
    )
    check_done(done)
    rerun = json.loads((output_dir / "result.json").read_text())
    assert rerun["resumed_from_step"] == 12 and rerun["global_step"] == 12
    assert rerun["adapter_sha256"] == result["adapter_sha256"]
    assert rerun["eval_reward_accuracy"] == pytest.approx(result["eval_reward_accuracy"])


def test_preference_job_on_a_text_dataset_fails_naming_the_field(
    workspace: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A preference job needs pairs: text rows are refused before any model is loaded (exit 2)."""
    from llmops.training import runner

    output_dir = tmp_path / "run"
    path = tmp_path / "job.json"
    job = job_config(
        workspace,
        output_dir,
        method="preference",
        train_file=str(workspace["text_train"]),
        eval_file=str(workspace["text_eval"]),
    )
    path.write_text(json.dumps(job))
    assert runner.main(["--config", str(path)]) == 2
    assert "train_file: " in caplog.text and "'prompt' must be a string (method 'preference'" in caplog.text
    result = json.loads((output_dir / "result.json").read_text())
    assert result["status"] == "failed" and result["method"] == "preference"
