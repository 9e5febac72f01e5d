"""The evaluation job on adapters of the other training methods, through the real CLI.

* ``continued_pretraining``: an adapter trained briefly on domain text must score lower held-out
  perplexity than the base on more text of that domain; every token of every text is scored
  (one text is longer than the model's context, so it is scored in windows) and nothing is
  generated for the split, which has no prompts (golden sets still are).
* ``preference``: after a short DPO job the candidate's DPO reward against the base is positive
  and agrees with the trainer's own evaluation; the baseline (the reference) has no reward; a
  champion whose ``lora_B`` is zero *is* the base, so its margin is exactly 0. On pairs that are
  harder for the base (half of them reject another category's answer, so its win rate is neither
  0 nor 1), swapping chosen and rejected must flip the win rate to ``1 - win rate`` and the
  margin's sign for the same models (and a doubled beta doubles the margin).

Plus the config and row-shape errors, which must name the field and exit 2 before any model loads.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import pytest
from test_evaluation_job import _zero_lora_b
from test_training_cpu import RESPONSES, TINY, check_done, job_config, run_module, tiny_workspace
from test_training_methods import DOMAIN, make_pairs, make_texts, write_jsonl

from llmops.evaluation.config import parse_eval_config
from llmops.jobs.config import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GENERATION = ("token_f1", "exact_match", "rouge_l", "latency_ms_mean", "latency_ms_p95", "n_samples")
REWARDS = ("reward_accuracy", "reward_margin")
TRAIN_BETA = 0.1


def wrong_answer_pairs(pairs: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same prompts and chosen answers, rejecting another category's (on-topic) answer."""
    answers = sorted(RESPONSES.values())
    return [
        {**p, "rejected": " " + answers[(answers.index(p["chosen"].strip()) + 1) % len(answers)]}
        for p in pairs
    ]


def _eval_config(ws: dict[str, Path], name: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "base_model_path": str(ws["base"]),
        "output_file": str(ws["root"] / name / "metrics.json"),
        "max_samples": 4,
        "max_new_tokens": 8,
        "batch_size": 8,
        "seed": 7,
        "device": "cpu",
    }
    config.update(overrides)
    return config


def _evaluate(ws: dict[str, Path], name: str, config: dict[str, Any]) -> dict[str, Any]:
    done = run_module("llmops.evaluation", config, ws["root"] / f"{name}.json")
    check_done(done)
    return {
        "metrics": json.loads((ws["root"] / name / "metrics.json").read_text()),
        "logs": done.stdout + done.stderr,
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ws: dict[str, Any] = tiny_workspace(tmp_path_factory)
    root = ws["root"]
    ws["text_train"] = write_jsonl(root / "text_train.jsonl", make_texts(40, seed=1))
    # Held-out text of the domain, and one text longer than the model's context (scored in windows).
    ws["held_out_texts"] = [*make_texts(9, seed=2), {"text": " ".join(DOMAIN * 4)}]
    ws["text_eval"] = write_jsonl(root / "text_eval.jsonl", ws["held_out_texts"])
    ws["pairs_train"] = write_jsonl(root / "pairs_train.jsonl", make_pairs(32, seed=3))
    pairs = make_pairs(16, seed=4)
    ws["pairs_eval"] = write_jsonl(root / "pairs_eval.jsonl", pairs)
    mixed = pairs[:8] + wrong_answer_pairs(pairs[8:])
    ws["pairs_mixed"] = write_jsonl(root / "pairs_mixed.jsonl", mixed)
    swapped = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in mixed]
    ws["pairs_swapped"] = write_jsonl(root / "pairs_swapped.jsonl", swapped)
    ws["golden"] = write_jsonl(
        root / "golden.jsonl", [json.loads(line) for line in ws["eval"].read_text().splitlines()[:3]]
    )
    return ws


def _train(ws: dict[str, Any], name: str, **overrides: Any) -> tuple[Path, dict[str, Any]]:
    output_dir = ws["root"] / name
    done = run_module(
        "llmops.training", job_config(ws, output_dir, **overrides), ws["root"] / f"{name}-train.json"
    )
    check_done(done)
    return output_dir / "adapter", json.loads((output_dir / "result.json").read_text())


@pytest.fixture(scope="module")
def cpt(workspace: dict[str, Any]) -> dict[str, Any]:
    adapter, _ = _train(
        workspace,
        "cpt",
        method="continued_pretraining",
        run_name="test-eval-cpt",
        train_file=str(workspace["text_train"]),
        eval_file=str(workspace["text_eval"]),
        hyperparameters={"learning_rate": 0.01, "epochs": 4, "batch_size": 4, "max_length": 64, "seed": 7},
    )
    config = _eval_config(
        workspace,
        "cpt-eval",
        method="continued_pretraining",
        adapter_path=str(adapter),
        eval_file=str(workspace["text_eval"]),
        golden_sets=[{"name": "faq", "file": str(workspace["golden"])}],
    )
    return {"adapter": adapter, "config": config, **_evaluate(workspace, "cpt-eval", config)}


@pytest.fixture(scope="module")
def dpo(workspace: dict[str, Any]) -> dict[str, Any]:
    adapter, trained = _train(
        workspace,
        "dpo",
        method="preference",
        run_name="test-eval-dpo",
        train_file=str(workspace["pairs_train"]),
        eval_file=str(workspace["pairs_eval"]),
        hyperparameters={"learning_rate": 0.005, "epochs": 3, "batch_size": 8, "max_length": 96, "seed": 7},
        beta=TRAIN_BETA,
    )
    champion = _zero_lora_b(adapter, workspace["root"] / "dpo-champion")

    def evaluate(name: str, eval_file: str, **overrides: Any) -> dict[str, Any]:
        settings = {"beta": TRAIN_BETA, **overrides}
        config = _eval_config(
            workspace,
            name,
            method="preference",
            adapter_path=str(adapter),
            eval_file=str(workspace[eval_file]),
            **settings,
        )
        return _evaluate(workspace, name, config)

    return {
        "trained": trained,
        **evaluate("dpo-eval", "pairs_eval", champion_adapter_path=str(champion)),
        "mixed": evaluate("dpo-mixed", "pairs_mixed")["metrics"],
        "swapped": evaluate("dpo-swapped", "pairs_swapped", beta=2 * TRAIN_BETA)["metrics"],
        # The candidate itself as a champion on its own (copied) base: a chained version's case.
        "own_base": evaluate(
            "dpo-own-base",
            "pairs_eval",
            champion_adapter_path=str(adapter),
            champion_base_model_path=str(_copy_base(workspace)),
        )["metrics"],
    }


def _copy_base(ws: dict[str, Any]) -> Path:
    import shutil

    target = ws["root"] / "champion-own-base"
    if not target.exists():
        shutil.copytree(ws["base"], target)
    return target


def test_cpt_adapter_lowers_held_out_perplexity(cpt: dict[str, Any]) -> None:
    metrics, baseline = cpt["metrics"], cpt["metrics"]["baseline"]
    assert metrics["method"] == "continued_pretraining" and "beta" not in metrics
    for block in (metrics, baseline):
        assert math.isfinite(block["eval_loss"]) and block["eval_perplexity"] >= 1.0
        assert block["eval_perplexity"] == pytest.approx(math.exp(block["eval_loss"]))
        # No prompts in the split: nothing generated, no generation metrics.
        assert not set(GENERATION) & set(block), sorted(block)
        assert not set(REWARDS) & set(block)
    assert metrics["eval_perplexity"] < baseline["eval_perplexity"] / 2, (metrics, baseline)
    assert "eval_perplexity=" in cpt["logs"] and "n_loss_tokens=" in cpt["logs"]
    assert not any(sentence in cpt["logs"] for sentence in DOMAIN), "no text in the logs"


def test_cpt_scores_every_token_of_every_text(cpt: dict[str, Any], workspace: dict[str, Any]) -> None:
    from llmops.jobs.runtime import load_tokenizer

    tokenizer = load_tokenizer(cpt["adapter"])
    lengths = [
        len(tokenizer(text=r["text"] + tokenizer.eos_token)["input_ids"]) for r in workspace["held_out_texts"]
    ]
    assert lengths[-1] > TINY["max_position"], "the long text must need more than one window"
    metrics = cpt["metrics"]
    # Every token but each text's first (no context) is a target exactly once, windows included.
    expected = sum(n - 1 for n in lengths)
    assert metrics["n_loss_tokens"] == metrics["baseline"]["n_loss_tokens"] == expected
    assert metrics["n_loss_rows"] == len(workspace["held_out_texts"])


def test_cpt_golden_sets_are_still_generated_for(cpt: dict[str, Any]) -> None:
    golden = cpt["metrics"]["golden"]["faq"]
    assert golden["n_loss_rows"] == 3 and golden["n_samples"] == 3
    for key in ("eval_loss", "token_f1", "rouge_l", "exact_match"):
        assert isinstance(golden[key], float), key


def test_dpo_candidate_has_a_positive_reward_against_the_base(dpo: dict[str, Any]) -> None:
    metrics, trained = dpo["metrics"], dpo["trained"]
    assert metrics["method"] == "preference" and metrics["beta"] == TRAIN_BETA
    assert metrics["n_pairs"] == metrics["n_loss_rows"] == 16
    for key in ("eval_loss", "eval_perplexity", *GENERATION, "preference_win_rate", *REWARDS):
        assert isinstance(metrics[key], int | float), key
    assert metrics["n_samples"] == 4
    assert metrics["reward_margin"] > 0 and metrics["reward_accuracy"] >= 0.75, metrics
    # The same implicit reward the trainer measured on the same pairs (same beta, same reference).
    assert metrics["reward_accuracy"] == pytest.approx(trained["eval_reward_accuracy"])
    assert metrics["reward_margin"] == pytest.approx(trained["eval_reward_margin"], rel=0.05, abs=1e-3)
    for key in ("preference_win_rate", "reward_accuracy", "reward_margin"):
        assert f"{key}=" in dpo["logs"], key


def test_dpo_baseline_is_the_reference_and_a_zero_champion_equals_it(dpo: dict[str, Any]) -> None:
    metrics = dpo["metrics"]
    baseline, champion = metrics["baseline"], metrics["champion"]
    assert not set(REWARDS) & set(baseline), "the baseline is the reference: no reward against itself"
    assert baseline["n_pairs"] == 16 and 0.0 <= baseline["preference_win_rate"] <= 1.0
    # The champion's lora_B is zero: it is the base, so it moved nowhere from the reference.
    assert champion["reward_margin"] == pytest.approx(0.0, abs=1e-9)
    assert champion["reward_accuracy"] == 0.0
    for key in ("preference_win_rate", "eval_loss", "n_loss_tokens"):
        assert champion[key] == pytest.approx(baseline[key], rel=1e-9), key
    # DPO pushed the candidate towards the chosen answers, reference-free too.
    assert metrics["preference_win_rate"] >= baseline["preference_win_rate"]
    assert metrics["eval_loss"] != baseline["eval_loss"]


def test_swapping_chosen_and_rejected_flips_the_pair_metrics(dpo: dict[str, Any]) -> None:
    metrics, swapped = dpo["mixed"], dpo["swapped"]
    assert metrics["beta"] == TRAIN_BETA and swapped["beta"] == 2 * TRAIN_BETA
    # Not a foregone conclusion: on these pairs the base prefers the chosen answer only sometimes.
    assert 0.0 < metrics["baseline"]["preference_win_rate"] < 1.0, metrics["baseline"]
    for original, flipped in ((metrics, swapped), (metrics["baseline"], swapped["baseline"])):
        assert flipped["preference_win_rate"] == pytest.approx(1 - original["preference_win_rate"])
    # Margins change sign, and scale with beta (here doubled).
    assert swapped["reward_margin"] == pytest.approx(-2 * metrics["reward_margin"], rel=1e-6)
    assert swapped["reward_accuracy"] == pytest.approx(1 - metrics["reward_accuracy"])
    # The loss is now of the other answers.
    assert swapped["eval_loss"] != pytest.approx(metrics["eval_loss"])


@pytest.mark.parametrize(
    ("method", "eval_key", "expected"),
    [
        ("continued_pretraining", "eval", "'text' must be a string (method 'continued_pretraining'"),
        ("preference", "text_eval", "'prompt' must be a string (method 'preference'"),
        ("preference", "eval", "'chosen' must be a string (method 'preference'"),
    ],
)
def test_rows_of_another_method_exit_2_naming_the_field(
    cpt: dict[str, Any],
    workspace: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    method: str,
    eval_key: str,
    expected: str,
) -> None:
    from llmops.evaluation import runner

    output = tmp_path / "out" / "metrics.json"
    config = {
        **cpt["config"],
        "method": method,
        "eval_file": str(workspace[eval_key]),
        "output_file": str(output),
    }
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(config))
    assert runner.main(["--config", str(path)]) == 2
    assert "eval_file: " in caplog.text and expected in caplog.text
    assert not output.exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"beta": 0.5}, "beta: only used by method 'preference'"),
        ({"method": "continued_pretraining", "beta": 0.3}, "beta: only used by method 'preference'"),
        ({"method": "continued_pretraining", "chat_template": True}, "chat_template: continued_pretraining"),
        ({"method": "preference", "beta": 0}, "beta:"),
        ({"method": "dpo"}, "method:"),
    ],
)
def test_method_settings_are_config_errors_naming_the_field(overrides: dict[str, Any], expected: str) -> None:
    raw = {"base_model_path": "/m", "adapter_path": "/a", "eval_file": "/e.jsonl", "output_file": "/o.json"}
    with pytest.raises(ConfigError) as info:
        parse_eval_config({**raw, **overrides})
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_default_beta_is_accepted_with_every_method() -> None:
    raw = {"base_model_path": "/m", "adapter_path": "/a", "eval_file": "/e.jsonl", "output_file": "/o.json"}
    for method in ("sft", "continued_pretraining", "preference"):
        config = parse_eval_config({**raw, "method": method})
        # A dumped config (beta at its default included) parses back to itself.
        assert parse_eval_config(config.model_dump()) == config
    assert parse_eval_config({**raw, "method": "preference", "beta": 0.25}).beta == 0.25


def test_beta_with_sft_exits_2_through_the_cli(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from llmops.evaluation import runner

    path = tmp_path / "eval.json"
    path.write_text(
        json.dumps(
            {
                "base_model_path": "m",
                "adapter_path": "a",
                "eval_file": "e.jsonl",
                "output_file": "o.json",
                "beta": 0.2,
            }
        )
    )
    assert runner.main(["--config", str(path)]) == 2
    assert "beta: only used by method 'preference'" in caplog.text


def test_a_champion_on_its_own_base_is_loaded_after_the_candidate_and_scored_alike(
    dpo: dict[str, Any],
) -> None:
    """A chained champion has its own base: scored as a second model, with its own reference."""
    metrics = dpo["own_base"]
    champion = metrics["champion"]
    assert metrics["champion_base_model_uri"].endswith("champion-own-base")
    assert metrics["champion_base_model_sha256"] == metrics["base_model_sha256"]
    for key in ("eval_loss", "preference_win_rate", "reward_accuracy", "reward_margin", "token_f1"):
        assert champion[key] == pytest.approx(metrics[key], rel=1e-6, abs=1e-9), key


def test_champion_base_needs_a_champion_adapter() -> None:
    with pytest.raises(ConfigError, match="champion_base_model_path: only used with champion_adapter_path"):
        parse_eval_config(
            {
                "base_model_path": "/m",
                "adapter_path": "/a",
                "eval_file": "/e.jsonl",
                "output_file": "/o.json",
                "champion_base_model_path": "/b",
            }
        )
