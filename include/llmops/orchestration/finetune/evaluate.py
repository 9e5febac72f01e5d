"""Evaluation of a finetune run: the evaluation job (candidate, base, champion, probes) and the gates."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.evaluation.gates import flat_metrics
from llmops.lake import SPLITS, TRAINING_ZONE
from llmops.ledger import record
from llmops.ledger.events import ModelEvaluated, ModelGated
from llmops.orchestration.finetune.jobs import (
    JobResultMissing,
    SpecConflict,
    job_arguments,
    job_location,
    job_root,
    sft_files,
    split_hashes,
)
from llmops.settings import get_settings
from llmops.specs.pinned import run_spec

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)


def _golden_location(uri: str) -> str:
    if uri.startswith("s3://") or Path(uri).is_absolute():
        return uri
    return str(get_settings().project_dir / uri)


def _exists(location: str) -> bool:
    return location.startswith("s3://") or Path(location).is_dir()


def champion_adapter(
    spec: PipelineSpec, version: str | None, base_model_dir: str | None = None
) -> tuple[str | None, str, str | None]:
    """Champion ``version``'s adapter, a note, and its own base when it is not the candidate's.

    A champion trained on the spec's base model shares the candidate's base (one model, two
    adapters). A chained pipeline's versions each have their own base, that run's merged model
    (tag ``llmops.base_model_dir``): the champion is then scored on its own base, which must
    still exist. ``base_model_dir`` is the candidate's base.
    """
    from llmops.registry import mlflow_registry

    name = spec.registry.model_name
    if version is None:
        return None, "no champion yet: the first model sets the bar", None
    tags = mlflow_registry.model_version_info(name, version)["tags"]
    adapter = tags.get("llmops.adapter_uri")
    if not adapter:
        return None, f"champion v{version} has no recorded adapter location", None
    if tags.get("llmops.base_model") not in (None, spec.training.base_model.uri):
        return (
            None,
            f"champion v{version} was trained on another base model ({tags.get('llmops.base_model')})",
            None,
        )
    if not _exists(adapter):
        return None, f"champion v{version}'s adapter is no longer at {adapter}", None
    own_base = tags.get("llmops.base_model_dir")
    chained = bool(json.loads(tags.get("llmops.chain") or "[]"))
    if chained and own_base and own_base != base_model_dir:
        if not _exists(own_base):
            return (
                None,
                f"champion v{version}'s own base (a chain's merged model) is no longer at {own_base}",
                None,
            )
        return adapter, f"champion v{version} (on its own chained base)", own_base
    return adapter, f"champion v{version}", None


def split_rows(spec: PipelineSpec, sft_snapshot_id: str) -> dict[str, int | None]:
    """Rows per split (train, validation, test) of the final stage's training snapshot, as its
    manifest records them (None: a snapshot from before the test split)."""
    ref = snapshots.snapshot_ref(
        get_settings().lake_root, TRAINING_ZONE, spec.name, spec.training.dataset_name, sft_snapshot_id
    )
    manifest = snapshots.read_manifest(ref)
    return {split: manifest.get(f"{split}_rows") for split in SPLITS}


def prepare_evaluate(pipeline: str, trained: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Write the evaluation job: the held-out test split (never trained on, never used for early
    stopping or search), golden sets, champion, probes."""
    from llmops.evaluation.config import parse_eval_config
    from llmops.jobs.config import ConfigError
    from llmops.orchestration.finetune.leakage_probe import build_probe

    spec = run_spec(pipeline, run_id)
    evaluation = spec.evaluation
    _, _, test_file = sft_files(spec, trained["sft_snapshot_id"])
    root = storage.join(job_root(spec, run_id), "eval")
    champion, champion_note, champion_base = (None, "comparison off in the spec", None)
    compared: dict[str, Any] = {}  # which champion the gates judge against; promotion re-checks it
    if evaluation.compare_with_champion:
        from llmops.registry import mlflow_registry

        version = mlflow_registry.alias_version(spec.registry.model_name, mlflow_registry.CHAMPION)
        compared["champion_version"] = version
        champion, champion_note, champion_base = champion_adapter(spec, version, trained["base_model_dir"])
    probe = build_probe(spec, trained, root, run_id)
    job = {
        "base_model_path": trained["base_model_dir"],
        "adapter_path": trained["adapter_dir"],
        # The evaluated weights must be the trained ones: a swapped adapter folder is refused.
        "adapter_sha256": trained.get("adapter_sha256"),
        "eval_file": test_file,  # the test split: what the gates and the champion comparison judge
        "eval_sha256": split_hashes(spec, trained["sft_snapshot_id"])["test"],
        "eval_split": "test",
        "output_file": job_location(storage.join(root, "output", "metrics.json")),
        "max_samples": evaluation.max_samples,
        "max_new_tokens": evaluation.max_new_tokens,
        "seed": spec.training.hyperparameters.seed,
        "method": spec.training.method,
        "chat_template": spec.training.chat_template,
        "label_metrics": evaluation.label_metrics,
        "blocked_terms": evaluation.blocked_terms,
        "refusal_terms": evaluation.refusal_terms,
        "golden_sets": [{"name": g.name, "file": _golden_location(g.uri)} for g in evaluation.golden_sets],
        "champion_adapter_path": champion,
        "champion_base_model_path": champion_base,
        "pii_probe": (probe or {}).get("job"),
    }
    if spec.training.beta is not None:  # the spec allows it only for a method that uses it
        job["beta"] = spec.training.beta
    try:
        parse_eval_config(job, "evaluation job")
    except ConfigError as exc:
        raise SpecConflict(str(exc)) from None
    config_uri = storage.join(root, "job.json")
    storage.write_json(config_uri, job)
    location = job_location(config_uri)
    return {
        "name": "eval",
        "config_uri": location,
        "output_file": job["output_file"],
        "arguments": job_arguments("llmops.evaluation", location, spec),
        "mlflow_run_id": trained["mlflow_run_id"],
        "champion": champion_note if champion is None else champion_note,
        "compared_with_champion": champion is not None,
        "probe": (probe or {}).get("summary"),
        # Which split the gates judge, and every split's size: recorded with the metrics.
        "data_splits": {"measured": "test", "rows": split_rows(spec, trained["sft_snapshot_id"])},
        **compared,
    }


def collect_evaluate(pipeline: str, job: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Read the evaluation metrics from the lake, log them to MLflow and the ledger."""
    from llmops.registry import mlflow_registry

    spec = run_spec(pipeline, run_id)
    if not storage.exists(job["output_file"]):
        raise JobResultMissing(f"evaluation job {job['config_uri']} wrote no {job['output_file']}")
    metrics = json.loads(storage.read_bytes(job["output_file"]))
    if job.get("data_splits"):
        metrics["data_splits"] = job["data_splits"]
    flat = flat_metrics(metrics)
    baseline = flat_metrics(metrics.get("baseline") or {})
    champion = flat_metrics(metrics["champion"]) if metrics.get("champion") else None
    logged = {
        **flat,
        **{f"baseline_{k}": v for k, v in baseline.items() if "." not in k},
        **{f"champion_{k}": v for k, v in (champion or {}).items() if "." not in k},
    }
    mlflow_registry.log_params_and_metrics(job["mlflow_run_id"], params={}, metrics=logged)
    probe = {
        **(job.get("probe") or {}),
        **{k: v for k, v in (metrics.get("pii_probe") or {}).items() if k != "matched_hashes"},
    }
    record(
        spec,
        ModelEvaluated(metrics=metrics, champion=job.get("champion"), pii_probe=probe or None),
        f"mlflow-run/{job['mlflow_run_id']}",
        run_id,
    )
    return {
        "metrics": flat,
        "champion": champion,
        "baseline": baseline or None,
        "champion_note": job.get("champion"),
        "pii_probe": probe or None,
        **{k: job[k] for k in ("champion_version",) if k in job},
    }


def check_gates(
    pipeline: str, evaluation: dict[str, Any], trained: dict[str, Any], run_id: str
) -> dict[str, Any]:
    from llmops.evaluation.gates import evaluate_gates, raise_if_failed
    from llmops.evaluation.probes import leak_summary

    spec = run_spec(pipeline, run_id)
    leaks = leak_summary(evaluation.get("pii_probe"))
    # A champion that exists but was not scored (its adapter gone, another base model, a load error).
    unavailable = (
        evaluation.get("champion_note") or "not scored"
        if evaluation.get("champion_version") and evaluation.get("champion") is None
        else None
    )
    decision = evaluate_gates(
        list(spec.gates),
        evaluation["metrics"],
        evaluation.get("champion"),
        evaluation.get("baseline"),
        evidence={"pii_leakage_rate": leaks, "canary_exposure": leaks},
        champion_unavailable=unavailable,
        on_champion_unavailable=spec.evaluation.on_champion_unavailable,
    )
    decision["champion"] = evaluation.get("champion_note")
    if "champion_version" in evaluation:
        decision["champion_version"] = evaluation["champion_version"]
    record(spec, ModelGated(**decision), f"mlflow-run/{trained['mlflow_run_id']}", run_id)
    raise_if_failed(decision)
    return decision
