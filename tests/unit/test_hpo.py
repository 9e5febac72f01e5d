"""Hyperparameter search bookkeeping on a real Optuna study in SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmops.orchestration.finetune import study as hpo
from llmops.specs import parse_spec

SPEC_FILE = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "support_bot.yaml"
SEARCH = {
    "trials": 3,
    "space": {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "lora_r": {"type": "categorical", "choices": [4, 8, 16]},
        "epochs": {"type": "float", "low": 1, "high": 3},
    },
}


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_OPTUNA_URL", f"sqlite:///{tmp_path / 'optuna.db'}")
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    raw = yaml.safe_load(SPEC_FILE.read_text())
    raw["training"]["search"] = SEARCH
    return parse_spec(raw)


def test_trials_are_asked_once_per_run(spec):
    """Expect a retried plan to get the same trials back, and a new run new ones."""
    first = hpo.plan_trials(spec, "snap", "run-1")
    again = hpo.plan_trials(spec, "snap", "run-1")
    other = hpo.plan_trials(spec, "snap", "run-2")
    assert [t["number"] for t in first] == [0, 1, 2] and again == first
    assert [t["number"] for t in other] == [3, 4, 5]
    # A continued study explores new points instead of replaying the first run's.
    assert [t["params"] for t in other] != [t["params"] for t in first]
    for trial in first:
        assert 1e-4 <= trial["params"]["learning_rate"] <= 1e-2 and trial["params"]["lora_r"] in (4, 8, 16)


def test_failed_and_pruned_trials_do_not_fail_the_study(spec):
    """Expect the best completed trial to win, with failed and pruned trials recorded as such."""
    trials = hpo.plan_trials(spec, "snap", "run-1")
    results = [
        {"number": trials[0]["number"], "state": "succeeded", "value": 1.5},
        {"number": trials[1]["number"], "state": "failed", "error": "JobFailed: out of memory"},
        {"number": trials[2]["number"], "state": "pruned", "value": 3.0},
    ]
    summary = hpo.tell_results(spec, "snap", results, "run-1")
    assert summary["best"]["number"] == trials[0]["number"] and summary["best"]["value"] == 1.5
    import optuna

    study = optuna.load_study(study_name=hpo.study_name(spec, "snap"), storage=hpo.storage_url())
    states = {t.number: t.state.name for t in study.trials}
    assert states == {
        trials[0]["number"]: "COMPLETE",
        trials[1]["number"]: "FAIL",
        trials[2]["number"]: "PRUNED",
    }
    assert hpo.tell_results(spec, "snap", results, "run-1")["best"]["value"] == 1.5  # retried tell: no error


def test_overrides_map_lora_and_hyperparameters():
    assert hpo.overrides_for({"learning_rate": 0.01, "lora_r": 8, "lora_alpha": 16}) == {
        "hyperparameters": {"learning_rate": 0.01},
        "lora": {"r": 8, "alpha": 16},
    }


def test_search_space_validation():
    raw = yaml.safe_load(SPEC_FILE.read_text())
    raw["training"]["search"] = {"space": {"temperature": {"type": "float", "low": 0, "high": 1}}}
    with pytest.raises(Exception, match="cannot search temperature"):
        parse_spec(raw)
    raw["training"]["search"] = {
        "space": {"learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}
    }
    with pytest.raises(Exception, match="'log' needs a positive 'low'"):
        parse_spec(raw)
