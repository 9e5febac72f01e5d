"""Fine-tuning steps: training data, training, evaluation, gates, registry, report.

Each function is the body of one task of the `<pipeline>__finetune` DAG, a plain function of
small JSON-able arguments. Heavy work runs in job processes (`llmops.training`,
`llmops.evaluation`) through the spec's launcher; these steps prepare, record and register.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.errors import PermanentError
from llmops.ledger import get_ledger
from llmops.orchestration.common import record, safe_run_id
from llmops.settings import get_settings
from llmops.specs import load_pipeline, spec_hash

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)

CURATED_DATASET = "records"
EVAL_METRICS = (
    "eval_loss",
    "eval_perplexity",
    "token_f1",
    "exact_match",
    "rouge_l",
    "latency_ms_mean",
    "latency_ms_p95",
)


def start_finetune(pipeline: str, curated_snapshot_id: str, params: dict[str, Any], run_id: str) -> str:
    """Record the run's parameters and resolve 'latest' to a concrete snapshot id."""
    spec = load_pipeline(pipeline)
    if not curated_snapshot_id or curated_snapshot_id == "latest":
        curated_snapshot_id = snapshots.get_latest(
            get_settings().lake_root, "curated", spec.name, CURATED_DATASET
        ).snapshot_id
    record(
        spec,
        "finetune.started",
        f"curated/{curated_snapshot_id}",
        run_id,
        {"curated_snapshot_id": curated_snapshot_id, "params": params},
    )
    return curated_snapshot_id


class PurposeNotAllowed(PermanentError, ValueError):
    """Data whose governance tags do not cover the pipeline's purpose cannot be trained on."""


def check_purpose(spec: PipelineSpec, snapshot_id: str, manifest: dict[str, Any]) -> None:
    """Enforce purpose limitation from the tags the data carries (not only from today's spec)."""
    from llmops.specs.schema import Governance

    problems = []
    for source, tags in sorted((manifest.get("governance") or {}).items()):
        problem = Governance.model_validate(tags).allows(spec.purpose)
        if problem:
            problems.append(f"source '{source}': {problem}")
    if not manifest.get("governance"):
        problems.append("it carries no governance tags")
    if problems:
        raise PurposeNotAllowed(
            f"curated snapshot {snapshot_id} cannot feed '{spec.name}' (purpose '{spec.purpose}'): "
            + "; ".join(problems)
        )


def _split_of(key: str, eval_fraction: float, seed: int) -> str:
    """Deterministic split by key hash: a record stays in the same split across runs and retries."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"


def prepare_training_data(pipeline: str, curated_snapshot_id: str | None, run_id: str) -> dict[str, Any]:
    """Render prompt/completion pairs from the curated snapshot and split them train/eval."""
    import pyarrow as pa

    spec = load_pipeline(pipeline)
    settings = get_settings()
    if not curated_snapshot_id or curated_snapshot_id == "latest":
        c_ref = snapshots.get_latest(settings.lake_root, "curated", spec.name, CURATED_DATASET)
    else:
        c_ref = snapshots.snapshot_ref(
            settings.lake_root, "curated", spec.name, CURATED_DATASET, curated_snapshot_id
        )
    c_manifest = snapshots.read_manifest(c_ref)
    check_purpose(spec, c_ref.snapshot_id, c_manifest)
    df = snapshots.read_snapshot(c_ref).to_pandas()
    training = spec.training
    seed = training.hyperparameters.seed
    rows: dict[str, list[dict[str, str]]] = {"train": [], "eval": []}
    skipped = 0
    for row in df.to_dict(orient="records"):
        completion = row.get(training.completion_column)
        if not isinstance(completion, str) or not completion.strip():
            skipped += 1
            continue
        values = {k: ("" if v is None else str(v)) for k, v in row.items()}
        prompt = training.prompt_template.format(**values)
        split = _split_of(str(row[spec.dataset.key]), training.eval_fraction, seed)
        rows[split].append(
            {"key": str(row[spec.dataset.key]), "prompt": prompt, "completion": " " + completion.strip()}
        )
    if not rows["train"] or not rows["eval"]:
        raise ValueError(
            f"split produced {len(rows['train'])} train and {len(rows['eval'])} eval rows: need both"
        )
    table = pa.Table.from_pylist(
        [{**r, "split": split} for split in ("train", "eval") for r in rows[split]],
        schema=pa.schema(
            [
                ("key", pa.string()),
                ("prompt", pa.string()),
                ("completion", pa.string()),
                ("split", pa.string()),
            ]
        ),
    )
    ref, manifest = snapshots.write_snapshot(
        lake_root=settings.lake_root,
        zone="sft",
        pipeline=spec.name,
        dataset="prompt_completion",
        table=table,
        metadata={
            "inputs": {"curated_snapshot_id": c_ref.snapshot_id},
            "template": training.prompt_template,
            "completion_column": training.completion_column,
            "governance": c_manifest.get("governance"),
            "purpose": spec.purpose,
            "eval_fraction": training.eval_fraction,
            "split_seed": seed,
            "train_rows": len(rows["train"]),
            "eval_rows": len(rows["eval"]),
            "skipped_rows": skipped,
        },
        run_id=run_id,
        identity={"curated": c_ref.snapshot_id, "eval_fraction": training.eval_fraction, "seed": seed},
    )
    for split in ("train", "eval"):
        lines = "".join(
            json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n" for r in rows[split]
        )
        uri = storage.join(ref.uri, f"{split}.jsonl")
        if not storage.exists(uri):
            storage.write_bytes(uri, lines.encode())
    stats = {
        split: {
            "rows": len(rows[split]),
            "prompt_chars_mean": round(sum(len(r["prompt"]) for r in rows[split]) / len(rows[split]), 1),
            "completion_chars_mean": round(
                sum(len(r["completion"]) for r in rows[split]) / len(rows[split]), 1
            ),
        }
        for split in ("train", "eval")
    }
    record(
        spec,
        "dataset.sft.created",
        f"sft/{ref.snapshot_id}",
        run_id,
        {
            "curated_snapshot_id": c_ref.snapshot_id,
            "sft_snapshot_id": ref.snapshot_id,
            "sha256": manifest["content_sha256"],
            "stats": stats,
            "skipped_rows": skipped,
            "template": training.prompt_template,
        },
    )
    return {
        "curated_snapshot_id": c_ref.snapshot_id,
        "sft_snapshot_id": ref.snapshot_id,
        "train_rows": len(rows["train"]),
        "eval_rows": len(rows["eval"]),
    }


def resolve_base_model(uri: str) -> Path:
    """A base model reference from the spec, as a local directory with a Hugging Face model."""
    settings = get_settings()
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(
            f"training.base_model.uri {uri!r}: the local launcher loads base models from a local "
            f"directory (absolute, or relative to LLMOPS_MODEL_STORE)"
        )
    path = Path(uri.removeprefix("file://"))
    if not path.is_absolute():
        path = Path(settings.model_store) / path
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"base model '{uri}' not found at {path} (no config.json); build the demo base model with "
            f"`llmops build-demo-model` or point training.base_model.uri at a Hugging Face model directory"
        )
    return path


def _run_dir(spec: PipelineSpec, run_id: str) -> Path:
    path = get_settings().home / "runs" / spec.name / safe_run_id(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def train(
    pipeline: str, data: dict[str, Any], run_id: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fine-tune the base model with LoRA through the spec's launcher; track it in MLflow."""
    from llmops.launch.local import run_local
    from llmops.registry import mlflow_registry

    spec = load_pipeline(pipeline)
    settings = get_settings()
    sft_ref = snapshots.snapshot_ref(
        settings.lake_root, "sft", spec.name, "prompt_completion", data["sft_snapshot_id"]
    )
    base_model = resolve_base_model(spec.training.base_model.uri)
    hyper = spec.training.hyperparameters.model_dump()
    hyper.update({k: v for k, v in (overrides or {}).items() if v is not None and k in hyper})
    max_steps = (overrides or {}).get("max_steps")

    experiment_id = mlflow_registry.ensure_experiment(spec.registry.model_name)
    mlflow_run_id = mlflow_registry.find_or_create_run(
        experiment_id,
        run_name=f"{spec.name}-{safe_run_id(run_id)}",
        tags={
            "llmops.pipeline": spec.name,
            "llmops.airflow_run_id": run_id,
            "llmops.stage": "train",
            "llmops.spec_hash": spec_hash(spec),
            "llmops.sft_snapshot_id": sft_ref.snapshot_id,
            "llmops.curated_snapshot_id": data["curated_snapshot_id"],
        },
    )
    work = _run_dir(spec, run_id)
    output_dir = work / "train"
    job = {
        "run_name": f"{spec.name}-{safe_run_id(run_id)}",
        "base_model_path": str(base_model),
        "train_file": str(storage.local_path(storage.join(sft_ref.uri, "train.jsonl"))),
        "eval_file": str(storage.local_path(storage.join(sft_ref.uri, "eval.jsonl"))),
        "output_dir": str(output_dir),
        "lora": spec.training.lora.model_dump(),
        "hyperparameters": hyper,
        "max_steps": max_steps,
        "mlflow": {
            "tracking_uri": settings.mlflow_tracking_uri,
            "experiment_name": spec.registry.model_name,
            "run_id": mlflow_run_id,
        },
    }
    config_path = work / "train_job.json"
    storage.write_json(str(config_path), job)
    run_local("llmops.training", config_path)
    result = json.loads((output_dir / "result.json").read_text())
    mlflow_registry.log_params_and_metrics(
        mlflow_run_id,
        params={
            "base_model": spec.training.base_model.uri,
            "base_model_sha256": result.get("base_model_sha256"),
            **{f"lora.{k}": v for k, v in spec.training.lora.model_dump().items()},
            **{f"hp.{k}": v for k, v in hyper.items()},
            "sft_snapshot_id": sft_ref.snapshot_id,
            "config_sha256": result.get("config_sha256"),
        },
        metrics={
            k: v
            for k, v in result.items()
            if k in ("train_loss", "eval_loss", "tokens_per_second", "train_runtime_s")
        },
    )
    summary = {
        "mlflow_run_id": mlflow_run_id,
        "adapter_dir": str(output_dir / "adapter"),
        "base_model_dir": str(base_model),
        "sft_snapshot_id": sft_ref.snapshot_id,
        "curated_snapshot_id": data["curated_snapshot_id"],
        "train_loss": result.get("train_loss"),
        "eval_loss": result.get("eval_loss"),
    }
    record(
        spec,
        "model.trained",
        f"mlflow-run/{mlflow_run_id}",
        run_id,
        {
            **summary,
            "base_model": spec.training.base_model.uri,
            "method": spec.training.method,
            "launcher": spec.training.launcher,
            "lora": spec.training.lora.model_dump(),
            "hyperparameters": hyper,
            "max_steps": max_steps,
            "result": result,
        },
    )
    return summary


def evaluate(pipeline: str, trained: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Score the adapter (and the base model, for the lift) on the held-out split."""
    from llmops.launch.local import run_local
    from llmops.registry import mlflow_registry

    spec = load_pipeline(pipeline)
    settings = get_settings()
    sft_ref = snapshots.snapshot_ref(
        settings.lake_root, "sft", spec.name, "prompt_completion", trained["sft_snapshot_id"]
    )
    work = _run_dir(spec, run_id)
    output_file = work / "eval" / "metrics.json"
    job = {
        "base_model_path": trained["base_model_dir"],
        "adapter_path": trained["adapter_dir"],
        "eval_file": str(storage.local_path(storage.join(sft_ref.uri, "eval.jsonl"))),
        "output_file": str(output_file),
        "max_samples": spec.evaluation.max_samples,
        "max_new_tokens": spec.evaluation.max_new_tokens,
        "seed": spec.training.hyperparameters.seed,
    }
    config_path = work / "eval_job.json"
    storage.write_json(str(config_path), job)
    run_local("llmops.evaluation", config_path)
    metrics = json.loads(output_file.read_text())
    flat = {k: metrics[k] for k in EVAL_METRICS if isinstance(metrics.get(k), int | float)}
    baseline = metrics.get("baseline") or {}
    flat.update(
        {f"baseline_{k}": baseline[k] for k in EVAL_METRICS if isinstance(baseline.get(k), int | float)}
    )
    mlflow_registry.log_params_and_metrics(trained["mlflow_run_id"], params={}, metrics=flat)
    record(spec, "model.evaluated", f"mlflow-run/{trained['mlflow_run_id']}", run_id, {"metrics": metrics})
    return {"metrics": flat}


def check_gates(
    pipeline: str, evaluation: dict[str, Any], trained: dict[str, Any], run_id: str
) -> dict[str, Any]:
    from llmops.evaluation.gates import evaluate_gates, raise_if_failed

    spec = load_pipeline(pipeline)
    decision = evaluate_gates(list(spec.gates), evaluation["metrics"])
    record(spec, "model.gated", f"mlflow-run/{trained['mlflow_run_id']}", run_id, decision)
    raise_if_failed(decision)
    return decision


def register(pipeline: str, trained: dict[str, Any], decision: dict[str, Any], run_id: str) -> dict[str, Any]:
    from llmops import __version__
    from llmops.registry import mlflow_registry

    spec = load_pipeline(pipeline)
    ledger = get_ledger()
    existing = ledger.records(pipeline=spec.name, event_type="model.registered", run_id=run_id)
    if existing:  # a retry after the version was created: do not register a second version
        return {k: existing[-1].payload[k] for k in ("model_name", "version", "model_uri")}
    sft_rows = json.loads(
        storage.read_bytes(
            storage.join(
                snapshots.snapshot_ref(
                    get_settings().lake_root,
                    "sft",
                    spec.name,
                    "prompt_completion",
                    trained["sft_snapshot_id"],
                ).uri,
                "eval.jsonl",
            )
        ).splitlines()[0]
    )
    registered = mlflow_registry.log_and_register_model(
        run_id=trained["mlflow_run_id"],
        model_name=spec.registry.model_name,
        base_model_dir=Path(trained["base_model_dir"]),
        adapter_dir=Path(trained["adapter_dir"]),
        tags={
            "llmops.pipeline": spec.name,
            "llmops.spec_hash": spec_hash(spec),
            "llmops.code_version": __version__,
            "llmops.curated_snapshot_id": trained["curated_snapshot_id"],
            "llmops.sft_snapshot_id": trained["sft_snapshot_id"],
            "llmops.airflow_run_id": run_id,
            "llmops.gates_passed": str(decision["passed"]).lower(),
            "llmops.gates": json.dumps(decision["gates"])[:4900],
        },
        max_new_tokens=spec.evaluation.max_new_tokens,
        input_example=sft_rows["prompt"],
    )
    record(
        spec,
        "model.registered",
        f"model/{registered['model_name']}/{registered['version']}",
        run_id,
        {**registered, "mlflow_run_id": trained["mlflow_run_id"], "alias": mlflow_registry.CHALLENGER},
    )
    return registered


def promote(pipeline: str, registered: dict[str, Any], run_id: str, enabled: bool = True) -> dict[str, Any]:
    from llmops.registry import mlflow_registry

    spec = load_pipeline(pipeline)
    if not enabled:
        record(
            spec,
            "model.promotion_skipped",
            f"model/{registered['model_name']}/{registered['version']}",
            run_id,
            {"reason": "promotion disabled for this run (Param promote=false)"},
        )
        return {
            "promoted": False,
            "champion": mlflow_registry.alias_version(registered["model_name"], "champion"),
        }
    moved = mlflow_registry.promote(registered["model_name"], registered["version"])
    record(
        spec,
        "model.promoted",
        f"model/{registered['model_name']}/{registered['version']}",
        run_id,
        {
            "model_name": registered["model_name"],
            "version": registered["version"],
            **moved,
        },
    )
    return {"promoted": True, **moved}


def audit_report(pipeline: str, run_id: str) -> dict[str, Any]:
    from llmops.reports.audit import write_audit_report

    spec = load_pipeline(pipeline)
    paths = write_audit_report(spec, run_id)
    record(spec, "report.generated", f"report/{safe_run_id(run_id)}", run_id, paths)
    return paths
