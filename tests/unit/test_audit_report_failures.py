"""The run's audit report is written whatever the run got to: the ledger of a fine-tune run stopped
at each step in turn (start, data preparation, training, a diverged run's gates, evaluation,
registration, promotion) on a real SQLite ledger and lake folder, and the report states the failure.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from ledger_chains import ingest_run, sid

from llmops.ledger import get_ledger
from llmops.ledger.events import (
    FinalDatasetCreated,
    FinetuneStarted,
    ModelEvaluated,
    ModelGated,
    ModelRegistered,
    ModelTrained,
    PromotionSkipped,
    TaskFailed,
)
from llmops.specs import load_pipeline

PIPELINE = "support_bot"
RUN = "manual__2026-12-07T10:00:00+00:00"
STEPS = ("start", "data", "train", "evaluate", "gates", "register", "promote")


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("LLMOPS_LAKE_ROOT", str(tmp_path / "lake"))
    return tmp_path / "lake"


def _append(event: type, subject: str, payload: dict) -> None:
    get_ledger().append(
        pipeline=PIPELINE, event_type=event.name, subject=subject, run_id=RUN, payload=payload
    )


def _failed(task_id: str, error_type: str, error: str) -> None:
    """What the failure callback records."""
    payload = {"dag_id": f"{PIPELINE}__finetune", "task_id": task_id, "map_index": -1, "try_number": 1}
    _append(TaskFailed, f"task/{task_id}/try-1", {**payload, "error_type": error_type, "error": error})


def _trained(loss: float | None) -> dict:
    return {
        "mlflow_run_id": "r" * 32,
        "adapter_dir": "/lake/adapter",
        "base_model_dir": "/models/base",
        "manifest_path": None,
        "sft_snapshot_id": sid("sft"),
        "curated_snapshot_id": sid("i:curated"),
        "method": "sft",
        "chain": [],
        "train_loss": loss,
        "eval_loss": None,
        "base_model": "tiny-support-base",
        "launcher": "local",
        "lora": {"r": 8},
        "hyperparameters": {"learning_rate": 5.0},
        "tuned_by_search": False,
        "max_steps": 3,
        # A diverged job: the loss is NaN, the eval loss never computed, no step count.
        "result": {"status": "succeeded", "train_loss": loss, "eval_loss": None, "device": None},
        "usage": {},
    }


def _run_until(failed_step: str, *, diverged: bool = False) -> None:
    """The records a fine-tune run leaves when `failed_step` is the step that fails."""
    steps = STEPS[: STEPS.index(failed_step)]
    curated = ingest_run(get_ledger(), PIPELINE, "ingest-1", label="i")["curated"]
    if "start" in steps:
        _append(FinetuneStarted, f"curated/{curated}", {"curated_snapshot_id": curated, "params": {}})
    if "data" in steps:
        sft = {"curated_snapshot_id": curated, "sft_snapshot_id": sid("sft"), "stats": {}, "skipped_rows": 0}
        _append(FinalDatasetCreated, f"sft/{sid('sft')}", sft)
    if "train" in steps:
        _append(ModelTrained, f"mlflow-run/{'r' * 32}", _trained(math.nan if diverged else 0.4))
    if "evaluate" in steps:
        metrics = (
            {"token_f1": None, "eval_loss": math.nan} if diverged else {"token_f1": 0.8, "eval_loss": 0.4}
        )
        _append(
            ModelEvaluated,
            f"mlflow-run/{'r' * 32}",
            {"metrics": metrics, "champion": None, "pii_probe": None},
        )
    if "gates" in steps or failed_step == "gates":
        passed = failed_step != "gates"
        gate = {"metric": "token_f1", "observed": None if diverged else 0.8, "min": 0.6, "max": None}
        gate |= {
            "passed": passed,
            "reason": "within bounds" if passed else f"{gate['metric']} was not produced",
        }
        gated = {"passed": passed, "gates": [gate], "champion_compared": False, "base_compared": False}
        _append(ModelGated, f"mlflow-run/{'r' * 32}", {**gated, "champion": None})
    if "register" in steps:
        registered = {"model_name": "support_bot", "version": "7", "model_uri": "models:/m-x"}
        _append(
            ModelRegistered,
            "model/support_bot/7",
            {**registered, "mlflow_run_id": "r" * 32, "alias": "challenger"},
        )


CASES = [
    ("start", "start", "SnapshotNotFound", "curated snapshot abc does not exist", "failed during start"),
    ("data", "prepare_data", "DataContractError", "0 rows left", "failed during data preparation"),
    (
        "train",
        "collect_train",
        "RuntimeError",
        "training job failed: loss diverged",
        "failed during training",
    ),
    (
        "evaluate",
        "collect_evaluate",
        "JobResultMissing",
        "evaluation job wrote no metrics",
        "failed during evaluation",
    ),
    ("register", "register", "ExternalError", "MlflowException", "failed during registration"),
    ("promote", "promote", "RegistryUnavailable", "MLflow did not answer", "failed during promotion"),
]


@pytest.mark.parametrize(("step", "task_id", "error_type", "error", "decision"), CASES)
def test_report_of_a_run_failed_at_each_step_is_written_and_names_the_failure(
    lake, step, task_id, error_type, error, decision
):
    """Expect both files written, the decision naming the step, and the failed task in the summary."""
    from llmops.reports.audit import write_audit_report

    _run_until(step)
    _failed(task_id, error_type, error)
    paths = write_audit_report(load_pipeline(PIPELINE), RUN)
    assert paths["decision"] == decision
    report = json.loads(Path(paths["json"]).read_text())
    assert report["summary"]["failure"] == f"{task_id}: {error_type}: {error}"
    html = Path(paths["html"]).read_text()
    assert decision in html and f"{task_id}: {error_type}: {error}" in html
    if step != "start":  # the curated data the run started from is still traced to its sources
        assert [s["name"] for s in report["data"]["sources"]] == ["helpdesk_db"]


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def test_report_of_a_diverged_run_rejected_by_its_gates_renders_nan_and_missing_metrics(lake):
    """Expect a NaN loss, a metric never produced and a gate without an observation to render."""
    from llmops.reports.audit import write_audit_report

    _run_until("gates", diverged=True)
    _failed("check_gates", "GateFailed", "1 of 1 gate failed: token_f1 was not produced")
    paths = write_audit_report(load_pipeline(PIPELINE), RUN)
    assert paths["decision"] == "rejected by gates"
    html = Path(paths["html"]).read_text()
    assert "train loss nan, validation loss (early stopping) n/a, n/a steps" in html
    json.loads(Path(paths["json"]).read_text(), parse_constant=_refuse)  # strict JSON: no NaN
    assert "<td>token_f1</td><td>not produced</td>" in html
    assert "was not produced" in html and "check_gates: GateFailed" in html


def test_report_of_a_promotion_refused_for_a_changed_champion_states_why(lake):
    """Expect a registered version whose promotion was refused to be reported with the reason."""
    from llmops.reports.audit import write_audit_report

    _run_until("promote")
    reason = "support_bot v7 was gated against v5, but the champion is now v6: not compared with it"
    _append(
        PromotionSkipped, "model/support_bot/7", {"reason": reason, "champion": "6", "gated_against": "5"}
    )
    paths = write_audit_report(load_pipeline(PIPELINE), RUN)
    assert paths["decision"] == "registered, not promoted"
    report = json.loads(Path(paths["json"]).read_text())
    assert report["promotion"]["gated_against"] == "5" and report["summary"]["failure"] is None
    assert "gated against v5, but the champion is now v6" in Path(paths["html"]).read_text()
