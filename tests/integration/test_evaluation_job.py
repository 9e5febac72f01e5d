"""The evaluation job's optional evidence, through the real CLI on the tiny model.

One short training gives the candidate adapter. The champion is a copy of it with every
``lora_B`` zeroed: a valid adapter whose output is exactly the base model's, so the champion's
numbers must equal the baseline's. That proves the second adapter is really applied (and the
candidate's numbers are not the champion's), without a second training.

The PII probe's targets are salted hashes of n-grams the candidate really produces for one probe
prompt, found by generating in this process with the job's own code; the job, which only sees
the hashes, must then report exactly the leaks computed here. Nothing textual may reach the output or the logs.
"""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING, Any

import pytest
from test_training_cpu import RESPONSES, check_done, job_config, run_module, tiny_workspace

from llmops.evaluation.probes import ngram_hashes, score_leakage, value_hash

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow

SALT = "test-salt-5f1e2d"
CANARY = "zq-canary-7781 quartz-otter"
PROBE_PROMPTS = [
    "Ticket 901: the customer wrote to support. Category: billing\nAction:",
    "Ticket 902: the user called the help desk. Category: login\nAction:",
    f"Ticket 903: the member sent a message about {CANARY}. Category: refund\nAction:",
    "Ticket 904: the buyer opened a chat. Category: shipping\nAction:",
]
MAX_SAMPLES = 5
MAX_NEW_TOKENS = 12
PROBE_TOKENS = 16
MAX_NGRAM = 8
METRICS = ("eval_loss", "eval_perplexity", "token_f1", "exact_match", "rouge_l")
LABEL_METRICS = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
RATES = ("toxicity_rate", "refusal_rate")


def _zero_lora_b(adapter_dir: Path, target: Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter_dir, target)
    weights = target / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    zeroed = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in tensors.items()}
    assert any("lora_B" in k for k in tensors)
    save_file(zeroed, str(weights), metadata={"format": "pt"})
    return target


def _generate_here(base_dir: Path, adapter_dir: Path, prompts: list[str]) -> list[str]:
    """The candidate's greedy generations, with the job's own loading and generation code."""
    from peft import PeftModel

    from llmops.evaluation.measure import generate
    from llmops.jobs.runtime import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(adapter_dir)
    model = PeftModel.from_pretrained(load_base_model(base_dir, "cpu"), str(adapter_dir))
    model.eval()
    generations, _ = generate(model, tokenizer, prompts, max_new_tokens=PROBE_TOKENS, device="cpu")
    return generations


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ws = tiny_workspace(tmp_path_factory)
    root = ws["root"]
    done = run_module(
        "llmops.training", job_config(ws, root / "run", max_steps=8), root / "train.json", timeout=180
    )
    check_done(done)
    adapter_dir = root / "run" / "adapter"
    champion_dir = _zero_lora_b(adapter_dir, root / "champion")

    # Golden set: the first 10 eval rows, so its generated rows are the eval split's first 5.
    eval_lines = ws["eval"].read_text().splitlines(keepends=True)
    golden_file = root / "golden_faq.jsonl"
    golden_file.write_text("".join(eval_lines[:10]))
    probe_file = root / "probe.jsonl"
    probe_file.write_text(
        "".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROBE_PROMPTS))
    )

    generations = _generate_here(ws["base"], adapter_dir, PROBE_PROMPTS)
    # Targets: n-grams the candidate produces for the first prompt, preferably ones it produces
    # for no other prompt (then exactly that prompt leaks; a briefly trained model may answer
    # every prompt alike), plus a canary value that was never generated.
    per_prompt = [ngram_hashes(SALT, g, MAX_NGRAM) for g in generations]
    assert per_prompt[0], "the candidate must generate something for the first probe prompt"
    unique_to_first = per_prompt[0].difference(*per_prompt[1:])
    targets = [*sorted(unique_to_first or per_prompt[0])[:6], value_hash(SALT, CANARY)]
    expected_probe = score_leakage(SALT, generations, targets, MAX_NGRAM)

    output_file = root / "eval" / "metrics.json"
    config = {
        "base_model_path": str(ws["base"]),
        "adapter_path": str(adapter_dir),
        "eval_file": str(ws["eval"]),
        "output_file": str(output_file),
        "max_samples": MAX_SAMPLES,
        "max_new_tokens": MAX_NEW_TOKENS,
        "seed": 7,
        "device": "cpu",
        "label_metrics": True,
        "blocked_terms": ["ticket", "idiot"],
        "refusal_terms": ["i cannot help", "as an ai"],
        "golden_sets": [{"name": "faq", "file": str(golden_file)}],
        "champion_adapter_path": str(champion_dir),
        "pii_probe": {
            "prompts_file": str(probe_file),
            "target_hashes": targets,
            "salt": SALT,
            "max_new_tokens": PROBE_TOKENS,
            "max_ngram": MAX_NGRAM,
        },
    }
    done = run_module("llmops.evaluation", config, root / "eval.json", timeout=240)
    check_done(done)
    text = output_file.read_text()
    return {
        "metrics": json.loads(text),
        "text": text,
        "logs": done.stdout + done.stderr,
        "generations": generations,
        "expected_probe": expected_probe,
        "distinct_first": bool(unique_to_first),
        "config": config,
        "root": root,
    }


def test_output_has_every_requested_metric_in_range(evaluated: dict[str, Any]) -> None:
    metrics = evaluated["metrics"]
    for block in (metrics, metrics["baseline"], metrics["champion"], metrics["golden"]["faq"]):
        for key in (*METRICS, *LABEL_METRICS, *RATES):
            assert isinstance(block[key], float), key
        for key in ("token_f1", "exact_match", "rouge_l", *LABEL_METRICS, *RATES):
            assert 0.0 <= block[key] <= 1.0, key
        assert block["n_samples"] == MAX_SAMPLES
    assert set(metrics["golden"]) == {"faq"}
    assert set(metrics["champion"]["golden"]) == {"faq"}
    assert metrics["golden_file_uris"] == {"faq": evaluated["config"]["golden_sets"][0]["file"]}
    assert metrics["champion_adapter_uri"] == evaluated["config"]["champion_adapter_path"]
    assert len(metrics["champion_adapter_sha256"]) == 64
    assert metrics["champion_adapter_sha256"] != metrics["adapter_sha256"]


def test_golden_set_is_measured_like_the_eval_split(evaluated: dict[str, Any]) -> None:
    metrics = evaluated["metrics"]
    golden = metrics["golden"]["faq"]
    assert golden["n_loss_rows"] == 10 and metrics["n_loss_rows"] == 40
    # Same first rows generated, same scoring: the generation metrics agree exactly.
    for key in ("token_f1", "exact_match", "rouge_l", *LABEL_METRICS, *RATES):
        assert golden[key] == pytest.approx(metrics[key]), key
    assert golden["eval_loss"] != metrics["eval_loss"]  # but the loss is over its own rows


def test_champion_is_its_own_adapter_on_the_same_rows(evaluated: dict[str, Any]) -> None:
    metrics = evaluated["metrics"]
    champion, baseline = metrics["champion"], metrics["baseline"]
    # The champion's lora_B is zero: its output is exactly the base model's.
    for key in (*METRICS, *LABEL_METRICS, *RATES, "n_loss_tokens"):
        assert champion[key] == pytest.approx(baseline[key], rel=1e-6), key
    # ... and the candidate (measured on the same base weights) is not the champion.
    assert metrics["eval_loss"] < champion["eval_loss"]
    assert metrics["n_loss_tokens"] == champion["n_loss_tokens"]
    assert champion["golden"]["faq"]["n_loss_rows"] == 10


def test_pii_probe_reports_exactly_the_leaks_found_by_hash(evaluated: dict[str, Any]) -> None:
    metrics = evaluated["metrics"]
    expected = evaluated["expected_probe"]
    targets = evaluated["config"]["pii_probe"]["target_hashes"]
    # The job, seeing hashes only, finds exactly what the generations here contain.
    assert metrics["pii_probe"] == expected
    assert metrics["pii_probe"]["prompts"] == len(PROBE_PROMPTS)
    assert metrics["pii_probe"]["matched_hashes"] == sorted(targets[:-1])
    assert metrics["pii_probe"]["leaked_prompts"] >= 1
    if evaluated["distinct_first"]:
        assert metrics["pii_probe"]["leaked_prompts"] == 1
    assert metrics["pii_leakage_rate"] == metrics["pii_probe"]["leaked_prompts"] / len(PROBE_PROMPTS)
    assert value_hash(SALT, CANARY) not in metrics["pii_probe"]["matched_hashes"]
    assert set(metrics["pii_probe"]["matched_hashes"]) <= set(
        evaluated["config"]["pii_probe"]["target_hashes"]
    )


def test_no_text_salt_or_prompt_reaches_the_output_or_the_logs(evaluated: dict[str, Any]) -> None:
    leaky = [
        "Ticket",
        "Category",
        "Action:",
        CANARY,
        "zq-canary",
        SALT,
        *RESPONSES.values(),
        *PROBE_PROMPTS,
        *(g for g in evaluated["generations"] if len(g) >= 12),
    ]
    for where in ("text", "logs"):
        for phrase in leaky:
            assert phrase not in evaluated[where], (where, phrase)
    # The only hashes in the output are matched targets (already known to the orchestrator).
    generated_hashes = set().union(*(ngram_hashes(SALT, g, MAX_NGRAM) for g in evaluated["generations"]))
    unmatched = generated_hashes - set(evaluated["metrics"]["pii_probe"]["matched_hashes"])
    assert not any(h in evaluated["text"] for h in unmatched)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"golden_sets": [{"name": "faq", "file": "missing.jsonl"}]}, "golden_sets[0].file: file not found"),
        ({"golden_sets": [{"name": "faq", "file": "broken.jsonl"}]}, "golden_sets[0].file:"),
        (
            {
                "golden_sets": [
                    {"name": "a", "file": "golden_faq.jsonl"},
                    {"name": "b", "file": "broken.jsonl"},
                ]
            },
            "golden_sets[1].file:",
        ),
        (
            {"pii_probe": {"prompts_file": "broken.jsonl", "target_hashes": [], "salt": "s"}},
            "pii_probe.prompts_file:",
        ),
        ({"champion_adapter_path": "golden_faq.jsonl"}, "champion_adapter_path:"),
    ],
)
def test_unusable_inputs_exit_2_naming_the_field(
    evaluated: dict[str, Any], change: dict[str, Any], field: str, caplog: pytest.LogCaptureFixture
) -> None:
    from llmops.evaluation import runner

    root = evaluated["root"]
    (root / "broken.jsonl").write_text('{"prompt": 3}\n')  # unusable as golden rows and as probe prompts
    config = {**evaluated["config"], "output_file": str(root / "failed" / "metrics.json"), **change}
    path = root / "bad-eval.json"
    path.write_text(json.dumps(config))  # relative paths resolve against the config's folder
    assert runner.main(["--config", str(path)]) == 2
    assert field in caplog.text
    assert not (root / "failed" / "metrics.json").exists()


def test_optional_metrics_are_absent_unless_asked_for() -> None:
    from llmops.evaluation.measure import score_generations

    plain = score_generations(["Billing"], ["billing"], [5.0])
    assert set(plain) == {"token_f1", "exact_match", "rouge_l", "latency_ms_mean", "latency_ms_p95"}
    full = score_generations(
        ["Billing\nI cannot help", "refund"],
        [" billing", "login"],
        [5.0, 7.0],
        label_metrics=True,
        blocked_terms=["idiot"],
        refusal_terms=["I cannot help"],
    )
    assert full["accuracy"] == 0.5 and full["refusal_rate"] == 0.5 and full["toxicity_rate"] == 0.0
