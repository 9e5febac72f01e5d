"""The demo pipelines of the methods beyond SFT, run as `make demo` runs them.

``northwind_kb`` continues pre-training on knowledge-base articles; ``support_replies`` chains
sft (on the reviewers' preferred replies) into preference tuning (DPO on preferred vs rejected
replies). Each is ingested, validated, trained, evaluated, gated, registered and reported with
the same governance as the SFT demo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops import snapshots
from llmops.ledger import get_ledger
from llmops.settings import get_settings


@pytest.fixture(scope="session")
def methods(demo):
    """Ingest and fine-tune both method demos (after the SFT demo: same database, same server)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert not bag.import_errors
    runs = {}
    for pipeline in ("northwind_kb", "support_replies"):
        runs[f"{pipeline}_ingest"] = bag.dags[f"{pipeline}__ingest"].test()
        runs[pipeline] = bag.dags[f"{pipeline}__finetune"].test()
    # A second chained run: the champion (v1) is scored on its own merged base for the comparison.
    runs["again"] = bag.dags["support_replies__finetune"].test()
    # The stage gate stops the chain when the first stage cannot learn in one step.
    runs["stopped"] = bag.dags["support_replies__finetune"].test(run_conf={"max_steps": 1})
    return {**runs, "planted": demo["planted"]}


def _records(pipeline: str, event_type: str, run_id: str | None = None) -> list:
    return get_ledger().records(pipeline=pipeline, event_type=event_type, run_id=run_id)


def _payload(pipeline: str, event_type: str, run) -> dict:
    found = _records(pipeline, event_type, run.run_id)
    assert found, f"no {event_type} in {pipeline} run {run.run_id}"
    return found[-1].payload


def _training_rows(pipeline: str, dataset: str, snapshot_id: str) -> list[dict]:
    ref = snapshots.snapshot_ref(get_settings().lake_root, "sft", pipeline, dataset, snapshot_id)
    from llmops.privacy.keys import get_key_ring

    return snapshots.read_snapshot(ref, get_key_ring()).to_pylist()


def test_continued_pretraining_lowers_held_out_perplexity_and_is_registered(methods) -> None:
    from llmops.registry.mlflow_registry import alias_version, model_version_info

    assert methods["northwind_kb_ingest"].state == "success"
    run = methods["northwind_kb"]
    assert run.state == "success"
    data = _payload("northwind_kb", "dataset.sft.created", run)
    assert data["method"] == "continued_pretraining" and data["dataset"] == "text_corpus"
    assert data["suite"]["suite"] == "llmops_text_corpus" and data["suite"]["success"]
    rows = _training_rows("northwind_kb", "text_corpus", data["sft_snapshot_id"])
    assert rows and set(rows[0]) == {"key", "text", "split"}
    metrics = _payload("northwind_kb", "model.evaluated", run)["metrics"]
    assert metrics["method"] == "continued_pretraining"
    assert metrics["eval_perplexity"] < metrics["baseline"]["eval_perplexity"] * 0.8
    assert "token_f1" not in metrics  # no generation metrics without prompts
    gated = _payload("northwind_kb", "model.gated", run)
    assert gated["passed"] and {g["metric"] for g in gated["gates"]} >= {"eval_perplexity"}
    version = alias_version("northwind_kb", "champion")
    assert version is not None
    tags = model_version_info("northwind_kb", version)["tags"]
    assert tags["llmops.method"] == "continued_pretraining"
    assert json.loads(tags["llmops.chain"]) == []


def test_chained_stages_each_train_on_their_own_snapshot_and_mlflow_run(methods) -> None:
    from mlflow import MlflowClient

    run = methods["support_replies"]
    assert methods["support_replies_ingest"].state == "success"
    assert run.state == "success"
    final = _payload("support_replies", "dataset.sft.created", run)
    stage_data = _payload("support_replies", "dataset.stage.created", run)
    assert final["method"] == "preference" and stage_data["method"] == "sft"
    assert final["sft_snapshot_id"] != stage_data["snapshot_id"]
    pairs = _training_rows("support_replies", "preference_pairs", final["sft_snapshot_id"])
    assert all(r["chosen"] != r["rejected"] for r in pairs)
    assert final["skipped_by_rule"].get("chosen_reply equals rejected_reply") == 1
    stage = _payload("support_replies", "model.stage_trained", run)
    assert stage["stage"] == "answer" and stage["passed"]
    assert stage["metrics"]["eval_perplexity"] <= 2.0
    trained = _payload("support_replies", "model.trained", run)
    assert trained["base_model_dir"] == stage["merged_model_dir"]  # DPO started from the sft stage
    assert [c["stage"] for c in trained["chain"]] == ["answer"]
    client = MlflowClient()
    stage_run, final_run = client.get_run(stage["mlflow_run_id"]), client.get_run(trained["mlflow_run_id"])
    assert stage_run.info.run_id != final_run.info.run_id
    assert stage_run.data.params["method"] == "sft" and final_run.data.params["method"] == "preference"
    assert stage_run.data.tags["llmops.sft_snapshot_id"] == stage_data["snapshot_id"]


def test_preference_model_is_evaluated_on_held_out_pairs_gated_and_registered(methods) -> None:
    from llmops.registry.mlflow_registry import model_version_info

    run = methods["support_replies"]
    metrics = _payload("support_replies", "model.evaluated", run)["metrics"]
    assert metrics["method"] == "preference"
    assert metrics["preference_win_rate"] >= 0.8 and metrics["reward_accuracy"] >= 0.8
    assert metrics["reward_margin"] > 0
    assert "reward_margin" not in (metrics["baseline"] or {})  # the baseline is the reference
    assert metrics["pii_leakage_rate"] == 0.0
    gated = _payload("support_replies", "model.gated", run)
    assert gated["passed"]
    assert {"preference_win_rate", "reward_accuracy", "reward_margin"} <= {
        g["metric"] for g in gated["gates"]
    }
    version = _payload("support_replies", "model.registered", run)["version"]
    tags = model_version_info("support_replies", str(version))["tags"]
    assert tags["llmops.method"] == "preference"
    assert [c["stage"] for c in json.loads(tags["llmops.chain"])] == ["answer"]


def test_a_failed_stage_gate_stops_the_chain_and_keeps_the_champion(methods) -> None:
    from llmops.registry.mlflow_registry import alias_version

    stopped = methods["stopped"]
    assert stopped.state == "failed"
    stage = _payload("support_replies", "model.stage_trained", stopped)
    assert not stage["passed"] and stage["gates"][0]["metric"] == "eval_perplexity"
    assert not _records("support_replies", "model.trained", stopped.run_id)  # the final stage never ran
    assert not _records("support_replies", "model.registered", stopped.run_id)
    champion = _payload("support_replies", "model.registered", methods["again"])["version"]
    assert alias_version("support_replies", "champion") == str(champion)


def test_a_chained_champion_is_compared_on_its_own_base(methods) -> None:
    """The second chained run scores the v1 champion on v1's merged base, not on its own."""
    again = methods["again"]
    assert again.state == "success"
    first = _payload("support_replies", "model.trained", methods["support_replies"])
    second = _payload("support_replies", "model.trained", again)
    assert first["base_model_dir"] != second["base_model_dir"]
    evaluated = _payload("support_replies", "model.evaluated", again)
    metrics = evaluated["metrics"]
    assert metrics["champion_base_model_uri"] == first["base_model_dir"]
    assert "on its own chained base" in evaluated["champion"]
    # Same data, same seed, same settings: the champion scores what the candidate scores.
    assert metrics["champion"]["reward_accuracy"] == pytest.approx(metrics["reward_accuracy"], abs=0.05)
    gate = next(
        g
        for g in _payload("support_replies", "model.gated", again)["gates"]
        if g["beat_champion_by"] is not None
    )
    assert gate["passed"] and gate["champion"] is not None


def test_reports_cover_each_method_and_hold_no_pii(methods) -> None:
    from llmops import storage
    from llmops.reports.model_version import write_model_version_report
    from llmops.specs import load_pipeline

    planted = [v for values in methods["planted"].values() for v in values]
    for pipeline, method in (("northwind_kb", "continued_pretraining"), ("support_replies", "preference")):
        registered = _payload(pipeline, "model.registered", methods[pipeline])
        written = write_model_version_report(
            load_pipeline(pipeline), registered["model_name"], str(registered["version"])
        )
        texts = {k: storage.read_bytes(f["uri"]).decode() for k, f in written["files"].items()}
        report = json.loads(next(t for k, t in texts.items() if "json" in k))
        assert report["data"]["sft"]["method"] == method
        stages = report["data"]["stages"]
        assert [s["stage"] for s in stages] == (["answer"] if pipeline == "support_replies" else [])
        for text in texts.values():
            for value in planted:
                assert value not in text
    for pipeline in ("northwind_kb", "support_replies"):
        data = _payload(pipeline, "dataset.sft.created", methods[pipeline])
        dataset = data["dataset"]
        rows = _training_rows(pipeline, dataset, data["sft_snapshot_id"])
        blob = json.dumps(rows)
        assert not [v for v in planted if v in blob], f"planted PII in the {pipeline} training data"
