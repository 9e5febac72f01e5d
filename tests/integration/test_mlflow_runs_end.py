"""No MLflow run stays RUNNING: the runs an Airflow run opens (search parent, trials, the final run)
are ended when its last task is done, each with the status it earned, against a real tracking
server. The jobs log through the same context manager a training job uses."""

from __future__ import annotations

import contextlib
import uuid

import pytest

pytestmark = [pytest.mark.integration]


def _job(tracking_uri: str, run_id: str, *, fails: bool) -> None:
    """What a training job does with the run it was given: log, then end with its outcome."""
    from llmops.training.config import MlflowTarget
    from llmops.training.trainer_parts import mlflow_run

    target = MlflowTarget(tracking_uri=tracking_uri, run_id=run_id)
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext(), mlflow_run(target, "job"):
        import mlflow

        mlflow.log_metric("train_loss", 1.0)
        if fails:
            raise RuntimeError("out of memory")


def _open_runs(tracking_uri: str, airflow_run_id: str) -> dict[str, str]:
    """Create the runs a finetune run opens, as the orchestrator does; run the trial jobs."""
    from llmops.registry import mlflow_registry

    experiment = mlflow_registry.ensure_experiment(f"runs-end-{uuid.uuid4().hex[:8]}")

    def run(stage: str, **tags: str) -> str:
        return mlflow_registry.find_or_create_run(
            experiment,
            run_name=stage,
            tags={"llmops.airflow_run_id": airflow_run_id, "llmops.stage": stage, **tags},
        )

    runs = {"experiment": experiment, "search": run("search"), "final": run("final")}
    runs["trial-0"] = run("trial-0", **{"mlflow.parentRunId": runs["search"]})
    runs["trial-1"] = run("trial-1", **{"mlflow.parentRunId": runs["search"]})
    _job(tracking_uri, runs["trial-0"], fails=False)
    _job(tracking_uri, runs["trial-1"], fails=True)
    _job(tracking_uri, runs["final"], fails=False)
    return runs


def _statuses(runs: dict[str, str]) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient()
    return {name: client.get_run(run_id).info.status for name, run_id in runs.items() if name != "experiment"}


@pytest.mark.parametrize("airflow_failed", [False, True], ids=["run-succeeded", "run-failed"])
def test_every_run_ends_with_the_status_it_earned(mlflow_server, monkeypatch, airflow_failed):
    from llmops.registry import mlflow_registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    airflow_run_id = f"manual__{uuid.uuid4().hex}"
    runs = _open_runs(mlflow_server, airflow_run_id)
    # A failed job ends its run; a finished one leaves the orchestrator's run open (evaluation and
    # registration log into it next), and so did every run before this change, for good.
    before = _statuses(runs)
    assert before.pop("trial-1") == "FAILED" and set(before.values()) == {"RUNNING"}

    ended = mlflow_registry.end_open_runs(runs["experiment"], airflow_run_id, failed=airflow_failed)

    statuses = _statuses(runs)
    assert statuses["trial-0"] == "FINISHED"  # trained well, whatever happened to the run later
    assert statuses["trial-1"] == "FAILED"  # its job failed
    expected = "FAILED" if airflow_failed else "FINISHED"
    assert statuses["search"] == expected and statuses["final"] == expected
    assert sum(ended.values()) == 3
    # Retried: nothing left to end, nothing changed.
    assert mlflow_registry.end_open_runs(runs["experiment"], airflow_run_id, failed=not airflow_failed) == {
        "FINISHED": 0,
        "FAILED": 0,
    }
    assert _statuses(runs) == statuses
