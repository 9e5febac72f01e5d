"""Job configs for the training and evaluation entrypoints: defaults, spec compatibility and
error messages that name the offending field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmops.evaluation.config import EvalJobConfig, load_eval_config, parse_eval_config
from llmops.specs.schema import BaseModelSpec, Hyperparameters, LoraSpec, TrainingSpec
from llmops.training import runner
from llmops.training.config import ConfigError, load_job_config, parse_job_config

INCLUDE = Path(__file__).resolve().parents[2] / "include"


def _job(**overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "base_model_path": "/models/base",
        "train_file": "/data/train.jsonl",
        "eval_file": "/data/eval.jsonl",
        "output_dir": "/runs/1",
    }
    job.update(overrides)
    return job


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_job_config(raw, "job.json")
    assert "job.json" in str(info.value)
    return info.value.problems


def test_minimal_config_uses_the_spec_defaults() -> None:
    config = parse_job_config(_job())
    assert config.method == "sft"
    assert config.lora == LoraSpec()
    assert config.hyperparameters == Hyperparameters()
    assert config.packing is False
    assert config.gradient_checkpointing is False
    assert config.device == "auto"
    assert config.max_steps is None
    assert config.mlflow is None
    assert config.train_file == "/data/train.jsonl"


def test_spec_blocks_are_accepted_verbatim() -> None:
    spec = TrainingSpec(
        base_model=BaseModelSpec(uri="tiny"),
        prompt_template="{body}",
        completion_column="resolution",
        lora=LoraSpec(r=16, alpha=32, dropout=0.0, target_modules=["q_proj", "v_proj"]),
        hyperparameters=Hyperparameters(learning_rate=4e-3, epochs=4, batch_size=16, lr_scheduler="cosine"),
    )
    config = parse_job_config(
        _job(
            lora=spec.lora.model_dump(),
            hyperparameters=spec.hyperparameters.model_dump(),
            mlflow={"tracking_uri": "sqlite:///m.db", "experiment_name": "x", "run_id": "abc123"},
            max_steps=10,
        )
    )
    assert config.lora == spec.lora
    assert config.hyperparameters == spec.hyperparameters
    assert config.mlflow is not None and config.mlflow.run_id == "abc123"
    # Round trip through JSON, as the Airflow side writes it.
    assert parse_job_config(json.loads(json.dumps(config.resolved_dict()))) == config


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"lora": {"r": 0}}, "lora.r: Input should be greater than 0 (got 0)"),
        ({"lora": {"rank": 8}}, "lora.rank: unknown field"),
        ({"lora": {"target_modules": 5}}, "lora.target_modules:"),
        ({"hyperparameters": {"lr_scheduler": "step"}}, "hyperparameters.lr_scheduler:"),
        ({"hyperparameters": {"learning_rate": -1}}, "hyperparameters.learning_rate:"),
        ({"device": "tpu"}, "device:"),
        ({"max_steps": 0}, "max_steps:"),
        ({"packing": "sometimes"}, "packing:"),
        ({"mlflow": {"experiment_name": "x"}}, "mlflow.tracking_uri: required field is missing"),
        ({"mlflow": {"tracking_uri": "sqlite:///m.db", "run_id": "../etc"}}, "mlflow.run_id:"),
        ({"base_model_path": "http://example.com/model"}, "base_model_path:"),
        ({"method": "dpo"}, "method:"),
        ({"epochs": 3}, "epochs: unknown field"),
    ],
)
def test_bad_values_name_the_field(overrides: dict[str, Any], expected: str) -> None:
    problems = _problems(_job(**overrides))
    assert any(p.startswith(expected) for p in problems), problems


def test_union_branch_tags_do_not_leak_into_field_paths() -> None:
    problems = _problems(_job(lora={"target_modules": 5}))
    assert all(p.startswith("lora.target_modules:") for p in problems), problems
    assert not any("literal[" in p or "list[str]" in p for p in problems)


def test_missing_required_fields_are_listed() -> None:
    problems = _problems({"base_model_path": "/m"})
    for name in ("train_file", "eval_file", "output_dir"):
        assert f"{name}: required field is missing" in problems


def test_load_resolves_relative_paths_against_the_config_directory(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    path = job_dir / "job.json"
    path.write_text(
        json.dumps(
            {
                "base_model_path": "models/base",
                "train_file": "train.jsonl",
                "eval_file": "/abs/eval.jsonl",
                "output_dir": "out",
                "mlflow": {"tracking_uri": "sqlite:///relative.db"},
            }
        )
    )
    config = load_job_config(path)
    assert config.base_model_path == str(job_dir / "models" / "base")
    assert config.train_file == str(job_dir / "train.jsonl")
    assert config.eval_file == "/abs/eval.jsonl"
    assert config.output_dir == str(job_dir / "out")
    assert config.mlflow is not None and config.mlflow.tracking_uri == "sqlite:///relative.db"


def test_s3_base_model_uri_is_kept_as_is(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(_job(base_model_path="s3://bucket/models/base")))
    assert load_job_config(path).base_model_path == "s3://bucket/models/base"


def test_load_reports_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_job_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"base_model_path": "/m",\n  "train_file": }')
    with pytest.raises(ConfigError, match="JSON syntax error at line 2"):
        load_job_config(broken)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object, got list"):
        load_job_config(listing)


def test_cli_rejects_a_bad_config_with_exit_code_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(_job(hyperparameters={"batch_size": 0})))
    assert runner.main(["--config", str(path)]) == 2
    assert "hyperparameters.batch_size" in caplog.text


def test_unknown_training_method_lists_the_known_ones() -> None:
    from dataclasses import replace

    from llmops.training.methods import get_method, register_method

    with pytest.raises(ValueError, match="known: sft, continued_pretraining, preference"):
        runner.get_trainer("dpo")
    with pytest.raises(ValueError, match="module:function"):
        register_method(replace(get_method("preference"), name="dpo", trainer="not_a_target"))
    assert callable(runner.get_trainer("sft"))
    assert callable(runner.get_trainer("continued_pretraining"))
    assert callable(runner.get_trainer("preference"))


def test_method_defaults_and_beta() -> None:
    preference = parse_job_config(_job(method="preference"))
    assert preference.beta is None and preference.dpo_beta == 0.1
    assert preference.data_format == ("prompt", "chosen", "rejected")
    assert parse_job_config(_job(method="preference", beta=0.5)).dpo_beta == 0.5
    cpt = parse_job_config(_job(method="continued_pretraining"))
    assert cpt.data_format == ("text",)
    assert parse_job_config(_job()).data_format == ("prompt", "completion")


def test_unset_method_fields_keep_the_config_digest() -> None:
    """An SFT config's resolved form (config_sha256, resume fingerprint) is what it was before beta."""
    assert "beta" not in parse_job_config(_job()).resolved_dict()
    assert parse_job_config(_job(method="preference", beta=0.2)).resolved_dict()["beta"] == 0.2


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"method": "preference", "beta": 0}, "beta: Input should be greater than 0 (got 0)"),
        ({"method": "preference", "beta": -0.1}, "beta: Input should be greater than 0"),
        ({"method": "preference", "beta": "high"}, "beta:"),
        ({"beta": 0.1}, "beta: only used by method 'preference', but method is 'sft'"),
        ({"method": "continued_pretraining", "beta": 0.1}, "beta: only used by method 'preference'"),
        ({"method": "preference", "packing": True}, "packing: preference (DPO) compares each chosen"),
        ({"method": "continued_pretraining", "packing": True}, "packing: continued_pretraining always"),
        ({"method": "continued_pretraining", "chat_template": True}, "chat_template: continued_pretraining"),
        ({"method": "pretraining"}, "method:"),
    ],
)
def test_method_specific_fields_are_validated(overrides: dict[str, Any], expected: str) -> None:
    problems = _problems(_job(**overrides))
    assert any(p.startswith(expected) for p in problems), problems


def test_preference_rows_need_pairs(tmp_path: Path) -> None:
    """The data contract per method: errors name the field, file, line and the expected keys."""
    from llmops.jobs.runtime import JobInputError, read_jsonl_rows

    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    with pytest.raises(JobInputError, match=r"train_file: .*rows.jsonl:1: 'chosen' must be a string"):
        read_jsonl_rows(path, "train_file", ("prompt", "chosen", "rejected"), "preference")
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": " "}) + "\n")
    with pytest.raises(JobInputError, match="'rejected' is empty"):
        read_jsonl_rows(path, "eval_file", ("prompt", "chosen", "rejected"), "preference")
    path.write_text(json.dumps({"text": "hello", "id": 3}) + "\n\n")
    assert read_jsonl_rows(path, "train_file", ("text",), "continued_pretraining") == [{"text": "hello"}]
    path.write_text("")
    with pytest.raises(JobInputError, match="has no rows"):
        read_jsonl_rows(path, "train_file", ("text",), "continued_pretraining")


def test_config_modules_do_not_import_ml_libraries() -> None:
    """The Airflow side imports the config modules while parsing DAGs: they must stay light."""
    code = (
        "import sys, llmops.training.config, llmops.evaluation.config, llmops.evaluation.metrics;"
        "heavy = {'torch', 'transformers', 'peft', 'trl', 'mlflow', 'datasets'} & set(sys.modules);"
        "print(sorted(heavy)); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(INCLUDE)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- evaluation job config -------------------------------------------------------------------


def _eval_job(**overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "base_model_path": "/models/base",
        "adapter_path": "/runs/1/adapter",
        "eval_file": "/data/eval.jsonl",
        "output_file": "/runs/1/metrics.json",
    }
    job.update(overrides)
    return job


def test_eval_config_defaults_match_the_spec() -> None:
    config = parse_eval_config(_eval_job())
    assert isinstance(config, EvalJobConfig)
    assert config.include_baseline is True
    assert config.max_samples == 64 and config.max_new_tokens == 64
    assert config.device == "auto"
    # The optional evidence is off unless asked for, so existing callers keep their output.
    assert config.label_metrics is False
    assert config.blocked_terms == [] and config.refusal_terms == []
    assert config.golden_sets == []
    assert config.champion_adapter_path is None
    assert config.pii_probe is None


HASH = "ab" * 32


def test_eval_config_accepts_the_optional_evidence() -> None:
    config = parse_eval_config(
        _eval_job(
            label_metrics=True,
            blocked_terms=["idiot", "shut up"],
            refusal_terms=["i can't help"],
            golden_sets=[
                {"name": "faq", "file": "/data/faq.jsonl"},
                {"name": "edge_cases", "file": "s3://lake/golden/edge.jsonl"},
            ],
            champion_adapter_path="s3://lake/models/champion/adapter",
            pii_probe={
                "prompts_file": "/data/probe.jsonl",
                "target_hashes": [HASH.upper()],
                "salt": "pepper",
            },
        )
    )
    assert [g.name for g in config.golden_sets] == ["faq", "edge_cases"]
    assert config.golden_sets[1].file == "s3://lake/golden/edge.jsonl"
    assert config.champion_adapter_path == "s3://lake/models/champion/adapter"
    probe = config.pii_probe
    assert probe is not None
    assert probe.target_hashes == [HASH]  # hex is compared lower-case
    assert probe.max_new_tokens == 48 and probe.max_ngram == 8
    assert "pepper" not in repr(config), "the salt stays out of reprs (and so out of logs)"
    assert parse_eval_config(json.loads(json.dumps(config.model_dump()))) == config


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"max_samples": 0}, "max_samples:"),
        ({"max_new_tokens": 100_000}, "max_new_tokens:"),
        ({"include_baseline": "maybe"}, "include_baseline:"),
        ({"adapter": "/x"}, "adapter: unknown field"),
        ({"label_metrics": "maybe"}, "label_metrics:"),
        ({"blocked_terms": "idiot"}, "blocked_terms:"),
        ({"blocked_terms": ["ok", "!!"]}, "blocked_terms[1]: Value error, a term needs at least one letter"),
        ({"refusal_terms": [3]}, "refusal_terms[0]:"),
        ({"golden_sets": [{"name": "faq"}]}, "golden_sets[0].file: required field is missing"),
        ({"golden_sets": [{"name": "f a q", "file": "/g"}]}, "golden_sets[0].name:"),
        ({"golden_sets": [{"name": "faq", "file": "http://x/g"}]}, "golden_sets[0].file:"),
        ({"golden_sets": [{"name": "faq", "file": "/g", "uri": "/g"}]}, "golden_sets[0].uri: unknown field"),
        (
            {"golden_sets": [{"name": "faq", "file": "/a"}, {"name": "faq", "file": "/b"}]},
            "golden_sets: Value error, golden set names must be unique; repeated: faq",
        ),
        ({"champion_adapter_path": ""}, "champion_adapter_path:"),
        ({"champion_adapter_path": "gs://b/adapter"}, "champion_adapter_path:"),
        ({"pii_probe": {"target_hashes": [], "salt": "s"}}, "pii_probe.prompts_file: required field"),
        ({"pii_probe": {"prompts_file": "/p", "salt": "s"}}, "pii_probe.target_hashes: required field"),
        (
            {"pii_probe": {"prompts_file": "/p", "target_hashes": ["xyz"], "salt": "s"}},
            "pii_probe.target_hashes[0]:",
        ),
        ({"pii_probe": {"prompts_file": "/p", "target_hashes": [], "salt": ""}}, "pii_probe.salt:"),
        (
            {"pii_probe": {"prompts_file": "/p", "target_hashes": [], "salt": "s", "max_ngram": 0}},
            "pii_probe.max_ngram:",
        ),
        (
            {"pii_probe": {"prompts_file": "/p", "target_hashes": [], "salt": "s", "max_new_tokens": 10**6}},
            "pii_probe.max_new_tokens:",
        ),
    ],
)
def test_eval_config_errors_name_the_field(overrides: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_eval_config(_eval_job(**overrides))
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_eval_config_resolves_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(_eval_job(adapter_path="out/adapter", output_file="out/metrics.json")))
    config = load_eval_config(path)
    assert config.adapter_path == str(tmp_path / "out" / "adapter")
    assert config.output_file == str(tmp_path / "out" / "metrics.json")


def test_eval_config_resolves_nested_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    job = _eval_job(
        champion_adapter_path="champion/adapter",
        golden_sets=[{"name": "faq", "file": "golden/faq.jsonl"}, {"name": "abs", "file": "/g/abs.jsonl"}],
        pii_probe={"prompts_file": "probe.jsonl", "target_hashes": [HASH], "salt": "s"},
    )
    path.write_text(json.dumps(job))
    config = load_eval_config(path)
    assert config.champion_adapter_path == str(tmp_path / "champion" / "adapter")
    assert [g.file for g in config.golden_sets] == [str(tmp_path / "golden" / "faq.jsonl"), "/g/abs.jsonl"]
    assert config.pii_probe is not None and config.pii_probe.prompts_file == str(tmp_path / "probe.jsonl")


def test_eval_config_resolves_nested_paths_against_a_config_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.evaluation import config as eval_config

    job = _eval_job(
        golden_sets=[{"name": "faq", "file": "golden/faq.jsonl"}],
        pii_probe={"prompts_file": "../probe.jsonl", "target_hashes": [], "salt": "s"},
    )
    monkeypatch.setattr(eval_config, "read_json_config", lambda _: json.loads(json.dumps(job)))
    config = load_eval_config("s3://lake/jobs/run1/eval/job.json")
    assert config.golden_sets[0].file == "s3://lake/jobs/run1/eval/golden/faq.jsonl"
    assert config.pii_probe is not None and config.pii_probe.prompts_file == "s3://lake/jobs/run1/probe.jsonl"
