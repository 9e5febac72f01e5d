"""Three splits per record key: train (trained on), validation (early stopping, best checkpoint,
search trials) and test (the evaluation job: gates and the champion comparison only).

The split of a record is a hash of its key, so it stays put as the data grows and a test row never
becomes a training row; the training job's config names train and validation files only.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from small_pipeline import ingest, inline_kind, inline_source, install, pipeline_spec

from llmops.orchestration.finetune.data import TrainingDataError, check_splits, split_of
from llmops.settings import get_settings
from llmops.specs import parse_spec
from llmops.specs.training import StageSpec

KEYS = [f"REC-{i:05d}" for i in range(10_000)]


# ----------------------------------------------------------------------------- split assignment


def test_a_key_always_gets_the_same_split() -> None:
    """Expect the split to depend on the key and seed only: the same on a retry, in any order."""
    first = {k: split_of(k, 0.1, 0.2, 42) for k in KEYS[:500]}
    assert first == {k: split_of(k, 0.1, 0.2, 42) for k in reversed(KEYS[:500])}
    assert set(first.values()) == {"train", "validation", "test"}
    assert first != {k: split_of(k, 0.1, 0.2, 7) for k in KEYS[:500]}  # the seed is part of the hash


@pytest.mark.parametrize(("validation", "test"), [(0.1, 0.1), (0.15, 0.05), (0.2, 0.3)])
def test_the_fractions_are_honoured_on_ten_thousand_keys(validation: float, test: float) -> None:
    counts = Counter(split_of(k, validation, test, 42) for k in KEYS)
    assert sum(counts.values()) == len(KEYS)  # every key in exactly one split: they are disjoint
    assert abs(counts["validation"] / len(KEYS) - validation) < 0.015
    assert abs(counts["test"] / len(KEYS) - test) < 0.015
    assert abs(counts["train"] / len(KEYS) - (1 - validation - test)) < 0.015


def test_test_rows_stay_test_rows_as_data_grows_and_validation_share_changes() -> None:
    """Expect a later, larger snapshot to keep every earlier test key in test (none leaks into
    training), and a changed validation_fraction to move no test key."""
    earlier = {k for k in KEYS[:2_000] if split_of(k, 0.1, 0.1, 42) == "test"}
    later = {k for k in KEYS if split_of(k, 0.1, 0.1, 42) == "test"}
    assert earlier and earlier <= later
    assert later == {k for k in KEYS if split_of(k, 0.3, 0.1, 42) == "test"}
    trained_later = {k for k in KEYS if split_of(k, 0.1, 0.1, 42) == "train"}
    assert not earlier & trained_later


# ----------------------------------------------------------------------------- spec fields


def _training(**fields: Any) -> dict[str, Any]:
    raw = yaml.safe_load((get_settings().pipelines_dir / "support_bot.yaml").read_text())
    raw["training"] = {
        k: v for k, v in raw["training"].items() if k not in ("validation_fraction", "test_fraction")
    }
    raw["training"].update(fields)
    return raw


def test_the_demo_specs_declare_both_held_out_fractions() -> None:
    for name in ("support_bot", "support_replies", "northwind_kb"):
        raw = yaml.safe_load((get_settings().pipelines_dir / f"{name}.yaml").read_text())
        training = parse_spec(raw).training
        assert (training.validation_fraction, training.test_fraction) == (0.1, 0.1), name
        assert "eval_fraction" not in raw["training"]


def test_eval_fraction_is_a_deprecated_alias_of_validation_fraction() -> None:
    training = parse_spec(_training(eval_fraction=0.2)).training
    assert training.validation_fraction == 0.2 and training.test_fraction == 0.1
    assert "eval_fraction" not in training.model_dump()
    with pytest.raises(ValueError, match="eval_fraction: deprecated alias of validation_fraction"):
        parse_spec(_training(eval_fraction=0.2, validation_fraction=0.2))
    stage = StageSpec(name="kb", method="continued_pretraining", text_columns=["body"], eval_fraction=0.3)
    assert stage.validation_fraction == 0.3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "must be below 1: the rest is the train split"),
        ({"validation_fraction": 0.7, "test_fraction": 0.4}, "must be below 1"),
        ({"test_fraction": 0}, "test_fraction"),
        ({"validation_fraction": 1}, "validation_fraction"),
        ({"test_fraction": -0.1}, "test_fraction"),
    ],
)
def test_fractions_must_be_in_the_open_interval_and_leave_training_rows(
    fields: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_spec(_training(**fields))


def test_an_empty_split_stops_the_build_naming_the_stage_and_the_field() -> None:
    stage = StageSpec(name="kb", method="continued_pretraining", text_columns=["body"])
    rows = {"train": [{"key": "a"}], "validation": [{"key": "b"}], "test": []}
    with pytest.raises(TrainingDataError) as caught:
        check_splits(stage, "kb", rows, 2, {})
    message = str(caught.value)
    assert message.startswith(
        "stage 'kb' (continued_pretraining): the split produced 1 train, 1 validation, 0 test"
    )
    assert "test empty; raise test_fraction (0.1)" in message
    rows = {"train": [], "validation": [{"key": "b"}], "test": []}
    with pytest.raises(
        TrainingDataError, match="lower validation_fraction \\+ test_fraction; raise test_fraction"
    ):
        check_splits(stage, "kb", rows, 1, {})
    check_splits(stage, "kb", {"train": [{}], "validation": [{}], "test": [{}]}, 3, {})


def test_the_demo_data_fills_every_split() -> None:
    """Expect the demo's smallest dataset (the knowledge base: 160 records) to give every split rows."""
    counts = Counter(split_of(f"KB-{i:04d}", 0.1, 0.1, 42) for i in range(160))
    assert min(counts[s] for s in ("train", "validation", "test")) >= 8, counts


# ----------------------------------------------------------------------------- the job configs

PIPELINE = "split_check"
ROWS = [{"ticket_id": f"T-{i:02d}", "body": f"parcel {i} arrived late and damaged"} for i in range(30)]


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A prepared training snapshot and the final training and evaluation job configs."""
    from llmops.orchestration.finetune.data import prepare_training_data, start_finetune

    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"prompt": "golden question", "completion": "golden answer"}) + "\n")
    spec = pipeline_spec(
        PIPELINE,
        [inline_source("pasted", ROWS)],
        evaluation={
            "compare_with_champion": False,
            "pii_probe": {"enabled": False},
            "golden_sets": [{"name": "reviewed", "uri": str(golden)}],
        },
    )
    with inline_kind():
        install(tmp_path, spec, monkeypatch.setenv)
        curated_id = ingest(PIPELINE, "manual__ingest_1")["curated"]["curated_snapshot_id"]
        start_finetune(PIPELINE, curated_id, {}, "manual__ft_1")
        data = prepare_training_data(PIPELINE, curated_id, "manual__ft_1")
        yield {"data": data, "root": tmp_path, "golden": str(golden)}


def _train_job(built: dict) -> dict[str, Any]:
    from llmops.orchestration.finetune.jobs import build_train_job, hyperparameters_with
    from llmops.specs.pinned import run_spec

    spec = run_spec(PIPELINE, "manual__ft_1")
    base = built["root"] / "base"
    base.mkdir(exist_ok=True)
    written = build_train_job(
        spec,
        {**built["data"], "base_model_dir": str(base)},
        "manual__ft_1",
        name="train",
        hyperparameters=hyperparameters_with(spec),
        lora=spec.training.lora.model_dump(),
        max_steps=None,
        mlflow=None,
    )
    return json.loads(Path(written["config_uri"]).read_text())


def _eval_job(built: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    from llmops.orchestration.finetune.evaluate import prepare_evaluate

    adapter = built["root"] / "adapter"
    adapter.mkdir(exist_ok=True)
    trained = {
        "sft_snapshot_id": built["data"]["sft_snapshot_id"],
        "base_model_dir": str(built["root"] / "base"),
        "adapter_dir": str(adapter),
        "mlflow_run_id": "r" * 32,
    }
    job = prepare_evaluate(PIPELINE, trained, "manual__ft_1")
    return job, json.loads(Path(job["config_uri"]).read_text())


def _rows_by_split(built: dict) -> dict[str, list[dict[str, str]]]:
    from llmops import snapshots
    from llmops.privacy.keys import get_key_ring

    ref = snapshots.snapshot_ref(
        get_settings().lake_root, "sft", PIPELINE, "prompt_completion", built["data"]["sft_snapshot_id"]
    )
    rows = snapshots.read_snapshot(ref, get_key_ring()).to_pylist()
    return {s: [r for r in rows if r["split"] == s] for s in ("train", "validation", "test")}


def _file_rows(location: str) -> list[dict[str, str]]:
    from llmops import snapshots
    from llmops.privacy.keys import get_key_ring

    return [json.loads(line) for line in snapshots.read_split_file(location, get_key_ring()).splitlines()]


def test_the_training_job_gets_train_and_validation_rows_and_never_a_test_row(built) -> None:
    """Expect eval_file (early stopping, best checkpoint, search trials) to be the validation split,
    no path in the config to lead to the test split or a golden set, and no test row's text in
    either file the training job reads."""
    job = _train_job(built)
    by_split = _rows_by_split(built)
    assert all(by_split.values()), {s: len(r) for s, r in by_split.items()}
    assert job["train_file"].endswith("/train.jsonl.enc") and job["eval_file"].endswith(
        "/validation.jsonl.enc"
    )
    text = json.dumps(job)
    assert "test.jsonl" not in text and "golden" not in text and built["golden"] not in text
    test_texts = {(r["prompt"], r["completion"]) for r in by_split["test"]}
    test_keys = {r["key"] for r in by_split["test"]}
    for field, split in (("train_file", "train"), ("eval_file", "validation")):
        rows = _file_rows(job[field])
        assert sorted((r["prompt"], r["completion"]) for r in rows) == sorted(
            (r["prompt"], r["completion"]) for r in by_split[split]
        )
        assert not {(r["prompt"], r["completion"]) for r in rows} & test_texts
        assert not test_keys & {r["key"] for r in by_split[split]}
    assert built["data"]["split_rows"] == {s: len(r) for s, r in by_split.items()}


def test_the_evaluation_job_measures_the_test_split_and_records_every_split_size(built) -> None:
    from llmops.orchestration.finetune.jobs import split_hashes
    from llmops.specs.pinned import run_spec

    job, config = _eval_job(built)
    by_split = _rows_by_split(built)
    assert config["eval_file"].endswith("/test.jsonl.enc") and config["eval_split"] == "test"
    hashes = split_hashes(run_spec(PIPELINE, "manual__ft_1"), built["data"]["sft_snapshot_id"])
    assert config["eval_sha256"] == hashes["test"] != hashes["validation"]
    assert [g["file"] for g in config["golden_sets"]] == [built["golden"]]  # golden sets: evaluation only
    rows = _file_rows(config["eval_file"])
    assert sorted(r["completion"] for r in rows) == sorted(r["completion"] for r in by_split["test"])
    assert job["data_splits"] == {"measured": "test", "rows": {s: len(r) for s, r in by_split.items()}}


def test_the_gates_judge_the_test_metrics_and_the_ledger_says_so(built, monkeypatch) -> None:
    """Expect collect_evaluate to record the measured split and split sizes with the metrics, and
    the gates to judge those (test) numbers."""
    from llmops.evaluation.gates import GateFailed
    from llmops.ledger import get_ledger
    from llmops.ledger.events import ModelEvaluated
    from llmops.orchestration.finetune.evaluate import check_gates, collect_evaluate
    from llmops.registry import mlflow_registry

    monkeypatch.setattr(mlflow_registry, "log_params_and_metrics", lambda *a, **k: None)
    job, config = _eval_job(built)
    output = Path(config["output_file"])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {"token_f1": 0.05, "eval_loss": 1.0, "eval_split": "test", "baseline": None, "champion": None}
        )
    )
    evaluation = collect_evaluate(PIPELINE, job, "manual__ft_1")
    assert evaluation["metrics"]["token_f1"] == 0.05
    [recorded] = get_ledger().records(pipeline=PIPELINE, event_type=ModelEvaluated.name)
    assert recorded.payload["metrics"]["data_splits"] == job["data_splits"]
    assert recorded.payload["metrics"]["eval_split"] == "test"
    with pytest.raises(GateFailed, match="token_f1"):  # the spec's gate: token_f1 min 0.1
        check_gates(PIPELINE, evaluation, {"mlflow_run_id": "r" * 32}, "manual__ft_1")
