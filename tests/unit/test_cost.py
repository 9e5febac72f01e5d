"""Cost arithmetic: device type and count from a job's result, prices by device, totals, budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmops.governance import cost
from llmops.specs import parse_spec

PIPELINES = Path(__file__).resolve().parents[2] / "include" / "pipelines"
PRICES = {"cpu": 0.1, "nvidia-h100": 4.0, "nvidia-a100-80gb": 3.0, "nvidia-a100": 2.5, "gpu": 1.5}


def _spec(prices=PRICES, budget=None, **training):
    raw = yaml.safe_load((PIPELINES / "support_bot.yaml").read_text())
    raw["cost"] = {"prices_per_hour": prices, "currency": "EUR", **({"budget": budget} if budget else {})}
    raw["training"].update(training)
    return parse_spec(raw)


def _gpu_result(name="NVIDIA H100 80GB HBM3", wall=1800.0, world=1):
    return {
        "status": "succeeded",
        "device": "cuda",
        "world_size": world,
        "hardware": {"accelerator": name, "accelerator_count": 8},
        "job_wall_s": wall,
        "train_runtime_s": wall - 100,
    }


CPU_RESULT = {"status": "succeeded", "device": "cpu", "world_size": 1, "hardware": {}, "job_wall_s": 90.0}


def test_gpu_job_costs_wall_hours_times_gpus_times_price():
    """Expect a 30-minute job on 2 H100 processes to be 1 GPU-hour, 4.00 EUR (prefix price match)."""
    usage = cost.job_usage(_spec(), "train", "train", _gpu_result(world=2))
    assert usage["device"] == "nvidia-h100-80gb-hbm3" and usage["price_key"] == "nvidia-h100"
    assert usage["devices"] == 2 and usage["device_kind"] == "gpu"
    assert usage["gpu_hours"] == 1.0 and usage["cost"] == 4.0 and usage["wall_s"] == 1800.0


def test_longest_matching_price_wins_then_gpu_fallback():
    """Expect 'nvidia-a100-80gb' over 'nvidia-a100' for an A100 80GB, and 'gpu' for an unknown GPU."""
    a100 = cost.job_usage(_spec(), "t", "trial", _gpu_result("NVIDIA A100-SXM4-80GB"))
    assert a100["price_key"] == "nvidia-a100" and a100["cost"] == 1.25  # 'a100-sxm4-80gb' != 'a100-80gb'
    exact = cost.job_usage(_spec(), "t", "trial", _gpu_result("NVIDIA A100 80GB"))
    assert exact["price_key"] == "nvidia-a100-80gb" and exact["cost"] == 1.5
    other = cost.job_usage(_spec(), "t", "trial", _gpu_result("NVIDIA L4"))
    assert other["price_key"] == "gpu" and other["cost"] == 0.75


def test_cpu_job_is_one_device_and_no_gpu_hours():
    usage = cost.job_usage(_spec(), "train", "train", CPU_RESULT)
    assert (usage["device"], usage["devices"], usage["gpu_hours"]) == ("cpu", 1, 0.0)
    assert usage["cost"] == pytest.approx(90 / 3600 * 0.1, abs=1e-6)


def test_kubernetes_pods_pay_for_the_gpus_they_requested():
    """Expect a pod with 4 requested GPUs to be billed for 4 even when its job ran one process."""
    spec = _spec(launcher="kubernetes", kubernetes={"image": "registry.example/trainer:1", "gpus": 4})
    usage = cost.job_usage(spec, "train", "train", _gpu_result(world=1, wall=3600))
    assert usage["devices"] == 4 and usage["gpu_hours"] == 4.0 and usage["cost"] == 16.0


def test_unpriced_device_and_missing_result_are_recorded_not_guessed():
    """Expect no cost (with the reason) for a device without a price and for a job without a result."""
    spec = _spec(prices={"cpu": 0.1})
    usage = cost.job_usage(spec, "t", "trial", _gpu_result("NVIDIA L4"))
    assert (
        usage["cost"] is None
        and usage["gpu_hours"] == 0.5
        and "no price for device 'nvidia-l4'" in usage["note"]
    )
    missing = cost.job_usage(spec, "t", "trial", None)
    assert missing["cost"] is None and missing["wall_s"] is None and "no result.json" in missing["note"]


def test_failed_jobs_use_elapsed_and_old_results_the_trainer_runtime():
    assert cost.wall_seconds({"status": "failed", "elapsed_s": 12.5}) == 12.5
    assert cost.wall_seconds({"train_runtime_s": 40.0}) == 40.0
    assert cost.wall_seconds({"job_wall_s": 50.0, "train_runtime_s": 40.0}) == 50.0
    assert cost.wall_seconds({}) is None


def test_without_a_cost_block_usage_is_still_recorded():
    raw = yaml.safe_load((PIPELINES / "support_bot.yaml").read_text())
    raw.pop("cost")
    usage = cost.job_usage(parse_spec(raw), "train", "train", _gpu_result())
    assert usage["gpu_hours"] == 0.5 and usage["cost"] is None and "no cost block" in usage["note"]


def test_totals_and_budget():
    """Expect totals over jobs, unpriced jobs counted apart, and the budget flagged once reached."""
    spec = _spec(budget=5.0)
    jobs = [
        cost.job_usage(spec, "trial-0", "trial", _gpu_result(wall=1800)),  # 2.00
        cost.job_usage(spec, "trial-1", "trial", _gpu_result(wall=900)),  # 1.00
        cost.job_usage(spec, "train", "train", CPU_RESULT),
    ]
    totals = cost.totals(spec, jobs)
    assert totals["gpu_hours"] == 0.75 and totals["cost"] == pytest.approx(3.0025, abs=1e-6)
    assert totals["wall_hours"] == pytest.approx((1800 + 900 + 90) / 3600, abs=1e-6)
    assert totals["currency"] == "EUR" and totals["budget"] == 5.0 and not totals["budget_exceeded"]
    jobs.append(cost.job_usage(spec, "trial-2", "trial", _gpu_result(wall=1800)))
    assert cost.totals(spec, jobs)["budget_exceeded"] is True
    assert cost.budget_left(spec, 3.0) == 2.0


def test_trial_budget_check_skips_and_records(tmp_path, monkeypatch):
    """Expect a trial to be refused (result.json 'skipped', hpo.trial_skipped) once finished trials
    cost the budget, and allowed while they cost less."""
    import json

    from llmops.ledger import get_ledger
    from llmops.orchestration.finetune import search

    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    spec = _spec(budget=3.0)
    monkeypatch.setattr(search, "run_spec", lambda name, run_id: spec)
    trials = []
    for n in range(3):
        out = tmp_path / f"trial-{n}" / "output"
        out.mkdir(parents=True)
        trials.append({"number": n, "output_dir": str(out), "params": {"lora_r": 16}, "study": "s"})
    (tmp_path / "trial-0" / "output" / "result.json").write_text(json.dumps(_gpu_result(wall=1800)))
    assert search.check_trial_budget("support_bot", trials[1], trials, "run-1")["spent"] == 2.0
    (tmp_path / "trial-1" / "output" / "result.json").write_text(json.dumps(_gpu_result(wall=900)))
    with pytest.raises(search.BudgetExceeded, match=r"trial 2 not started: .* cost 3\.0000 EUR, the budget"):
        search.check_trial_budget("support_bot", trials[2], trials, "run-1")
    skipped = json.loads((tmp_path / "trial-2" / "output" / "result.json").read_text())
    assert skipped["status"] == "skipped" and skipped["reason"] == "budget"
    [event] = get_ledger().records(pipeline="support_bot", event_type="hpo.trial_skipped")
    assert event.payload["trial"] == 2 and event.payload["spent"] == 3.0
