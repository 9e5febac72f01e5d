"""Promotion re-checks the champion the gates were judged against, under the promotion lock,
against a real MLflow tracking server.

Two fine-tune runs evaluated while v1 was champion must not both be promoted one after the other:
the second was never compared with the first. Its promotion is refused, recorded with the reason,
and the newer champion stays.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
import yaml

from llmops.registry import mlflow_registry as registry

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
PIPELINE = "recheck_check"
METRICS = {"eval_perplexity": 1.5, "token_f1": 0.8, "pii_leakage_rate": 0.0, "toxicity_rate": 0.0}


@pytest.fixture
def model(mlflow_server, monkeypatch, tmp_path):
    """A pipeline (support_bot's gates, incl. beat_champion_by) with four registered versions."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    name = f"recheck-test-{uuid.uuid4().hex[:8]}"
    raw = yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())
    raw["name"] = PIPELINE
    raw["registry"] = {"model_name": name}
    raw.pop("deployment", None)
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(pipelines))
    registry.configure()

    class EchoModel(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run(experiment_id=registry.ensure_experiment(name)):
        info = mlflow.pyfunc.log_model(name="model", python_model=EchoModel(), pip_requirements=["mlflow"])
    for _ in range(4):
        mlflow.register_model(info.model_uri, name)
    return name


def _gate(run_id: str, champion_version: str | None) -> dict:
    """The gates step as the DAG runs it: the evaluation names the champion current at evaluation."""
    from llmops.orchestration.finetune.evaluate import check_gates

    champion = None if champion_version is None else {**METRICS, "token_f1": 0.79}
    evaluation = {
        "metrics": METRICS,
        "champion": champion,
        "champion_note": f"champion v{champion_version}" if champion_version else "no champion yet",
        "champion_version": champion_version,
    }
    return check_gates(PIPELINE, evaluation, {"mlflow_run_id": f"mlflow-{run_id}"}, run_id)


def _records(event_type: str) -> list:
    from llmops.ledger import get_ledger

    return get_ledger().records(pipeline=PIPELINE, event_type=event_type)


def test_unchanged_champion_is_replaced_and_the_gated_champion_recorded(model):
    """Expect the normal path to promote, and ModelGated to name the champion it compared with."""
    from llmops.orchestration.finetune.release import promote

    registry.promote(model, "1")
    decision = _gate("run-a", "1")
    assert decision["passed"] and decision["champion_version"] == "1"
    result = promote(PIPELINE, {"model_name": model, "version": "2"}, "run-a")
    assert result == {"promoted": True, "champion": "2", "previous": "1"}
    [gated] = _records("model.gated")
    assert gated.payload["champion_version"] == "1"
    assert _records("model.promotion_skipped") == []


def test_second_run_gated_against_the_old_champion_is_refused_and_the_reason_recorded(model):
    """Expect two runs gated against v1: the first promoted (v2), the second refused, v2 kept."""
    from llmops.orchestration.finetune.release import promote

    registry.promote(model, "1")
    _gate("run-a", "1")
    _gate("run-b", "1")
    assert promote(PIPELINE, {"model_name": model, "version": "2"}, "run-a")["promoted"] is True

    result = promote(PIPELINE, {"model_name": model, "version": "3"}, "run-b")
    assert result == {"promoted": False, "reason": "champion_changed", "champion": "2"}
    assert registry.alias_version(model, "champion") == "2"
    assert registry.alias_version(model, "previous") == "1"
    [refused] = _records("model.promotion_skipped")
    assert refused.run_id == "run-b" and refused.subject == f"model/{model}/3"
    assert refused.payload["gated_against"] == "1" and refused.payload["champion"] == "2"
    assert "gated against v1, but the champion is now v2" in refused.payload["reason"]
    assert [r.run_id for r in _records("model.promoted")] == ["run-a"]

    # A retry of the first run's promotion (its alias already moved) is not refused.
    assert promote(PIPELINE, {"model_name": model, "version": "2"}, "run-a")["promoted"] is True


def test_a_first_model_is_refused_when_a_champion_appeared_after_its_evaluation(model):
    """Expect a run evaluated with no champion yet not to replace one promoted meanwhile."""
    from llmops.orchestration.finetune.release import promote

    _gate("run-first", None)
    registry.promote(model, "1")  # another run got there first
    result = promote(PIPELINE, {"model_name": model, "version": "2"}, "run-first")
    assert result == {"promoted": False, "reason": "champion_changed", "champion": "1"}
    assert registry.alias_version(model, "champion") == "1"
    [refused] = _records("model.promotion_skipped")
    assert (
        refused.payload["gated_against"] is None and "gated against no champion" in refused.payload["reason"]
    )


def test_concurrent_promotions_gated_against_one_champion_move_it_once(model):
    """Expect the check to stand under the lock: of two racing promotions, one wins, one is refused."""
    registry.promote(model, "1")
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def race(version: str) -> None:
        barrier.wait()
        try:
            outcomes[version] = registry.promote(model, version, "1")
        except registry.ChampionChanged as exc:
            outcomes[version] = exc

    threads = [threading.Thread(target=race, args=(v,)) for v in ("3", "4")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    won = [v for v, o in outcomes.items() if isinstance(o, dict)]
    lost = [o for o in outcomes.values() if isinstance(o, registry.ChampionChanged)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert registry.alias_version(model, "champion") == won[0]
    assert registry.alias_version(model, "previous") == "1"
    assert lost[0].expected == "1" and lost[0].current == won[0]


def _spec_allowing_unavailable_champion(tmp_path: Path) -> None:
    path = Path(tmp_path) / "pipelines" / f"{PIPELINE}.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["evaluation"]["on_champion_unavailable"] = "pass"
    path.write_text(yaml.safe_dump(raw))


@pytest.mark.parametrize("allowed", [False, True], ids=["default-fails", "spec-says-pass"])
def test_a_champion_whose_adapter_is_gone_fails_the_comparison_unless_the_spec_allows(
    model, tmp_path, allowed
):
    """Expect the champion comparison to fail closed when the champion exists but cannot be scored
    (its adapter deleted): the gate names why; `on_champion_unavailable: pass` lets it pass, recorded."""
    from mlflow import MlflowClient

    from llmops.evaluation.gates import GateFailed
    from llmops.orchestration.finetune.evaluate import champion_adapter, check_gates
    from llmops.specs import load_pipeline

    adapter = tmp_path / "champion-adapter"
    adapter.mkdir()
    client = MlflowClient()
    client.set_model_version_tag(model, "1", "llmops.adapter_uri", str(adapter))
    client.set_model_version_tag(model, "1", "llmops.base_model", "tiny-support-base")
    registry.promote(model, "1")
    adapter.rmdir()  # deleted by hand, or by retention
    if allowed:
        _spec_allowing_unavailable_champion(tmp_path)
    spec = load_pipeline(PIPELINE)
    path, note, _ = champion_adapter(spec, "1")
    assert path is None and "no longer at" in note
    evaluation = {"metrics": METRICS, "champion": None, "champion_note": note, "champion_version": "1"}
    run_id = f"run-unavailable-{allowed}"
    if allowed:
        decision = check_gates(PIPELINE, evaluation, {"mlflow_run_id": f"mlflow-{run_id}"}, run_id)
        (gate,) = [g for g in decision["gates"] if g["beat_champion_by"] is not None]
        assert gate["passed"] and "passed as the spec allows" in gate["reason"]
    else:
        with pytest.raises(GateFailed, match="the champion could not be scored"):
            check_gates(PIPELINE, evaluation, {"mlflow_run_id": f"mlflow-{run_id}"}, run_id)
    [gated] = _records("model.gated")
    assert gated.payload["passed"] is allowed
    assert "no longer at" in gated.payload["champion_unavailable"]
    assert gated.payload["on_champion_unavailable"] == ("pass" if allowed else "fail")
