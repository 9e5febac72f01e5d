"""What each Airflow task does, as plain functions of small JSON-able arguments.

DAG files wrap these in tasks; tests can call them directly. Every step is retry-safe: its
outputs are content-addressed snapshots or keyed by the Airflow run id, and its ledger events
have deterministic ids. Only ids, counts and paths are returned (they land in XCom): never rows,
PII or secrets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.ledger import get_ledger
from llmops.settings import get_settings
from llmops.specs import PipelineSpec, load_pipeline, spec_hash

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SOURCE_COLUMN = "_source"
EVAL_METRICS = (
    "eval_loss",
    "eval_perplexity",
    "token_f1",
    "exact_match",
    "rouge_l",
    "latency_ms_mean",
    "latency_ms_p95",
)
QUARANTINE_REASON = "_quarantine_reason"


class QuarantineLimitExceeded(RuntimeError):
    """More rows failed validation than the spec tolerates; the source is probably broken."""


class PiiResidualFound(RuntimeError):
    """PII of a handled type is still detectable after the privacy policy ran."""


def safe_run_id(run_id: str) -> str:
    """A run id usable as a path segment (Airflow run ids contain ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


def _record(spec: PipelineSpec, event_type: str, subject: str, run_id: str, payload: dict[str, Any]) -> None:
    get_ledger().append(
        pipeline=spec.name,
        event_type=event_type,
        subject=subject,
        run_id=run_id,
        payload={"spec_hash": spec_hash(spec), **payload},
    )


def record_task_failure(
    pipeline: str,
    *,
    run_id: str,
    dag_id: str,
    task_id: str,
    map_index: int,
    try_number: int | None,
    error: BaseException | str | None,
) -> None:
    """Record a failed task in the ledger, so the audit trail shows failures as well as successes.

    Messages of this package's errors name fields, rows and counts, never values; the message is
    still cut short, and a failure to record must not hide the task's own error.
    """
    try:
        spec = load_pipeline(pipeline)
        message = str(error)[:500] if error is not None else ""
        kind = type(error).__name__ if isinstance(error, BaseException) else "error"
        subject = f"task/{dag_id}/{task_id}" + (
            f"[{map_index}]" if map_index is not None and map_index >= 0 else ""
        )
        get_ledger().append(
            pipeline=spec.name,
            event_type="task.failed",
            subject=f"{subject}/try-{try_number}",
            run_id=run_id,
            payload={
                "dag_id": dag_id,
                "task_id": task_id,
                "map_index": map_index,
                "try_number": try_number,
                "error_type": kind,
                "error": message,
            },
        )
    except Exception:  # pragma: no cover - the callback must never mask the real failure
        log.exception("could not record the task failure in the ledger")


# --------------------------------------------------------------------------------------- ingest


def extract_source(pipeline: str, source_name: str, run_id: str) -> dict[str, Any]:
    """Extract one source into an encrypted, content-addressed raw snapshot."""
    from llmops.ingest.rest import extract_rest
    from llmops.ingest.sql import extract_sql
    from llmops.privacy.keys import get_kek

    spec = load_pipeline(pipeline)
    source = next((s for s in spec.sources if s.name == source_name), None)
    if source is None:
        raise ValueError(f"pipeline '{pipeline}' has no source '{source_name}'")
    if source.kind == "sql":
        table, meta = extract_sql(source, order_by=spec.dataset.key)
    else:
        table, meta = extract_rest(source, order_by=spec.dataset.key)
    settings = get_settings()
    ref, manifest = snapshots.write_snapshot(
        lake_root=settings.lake_root,
        zone="raw",
        pipeline=spec.name,
        dataset=source.name,
        table=table,
        metadata={"source": meta, "governance": source.governance.model_dump()},
        kek=get_kek(),
        run_id=run_id,
    )
    _record(
        spec,
        "snapshot.raw.created",
        f"raw/{source.name}/{ref.snapshot_id}",
        run_id,
        {
            "source": source.name,
            "kind": source.kind,
            "conn_id": source.conn_id,
            "location": meta.get("table") or meta.get("url"),
            "snapshot_id": ref.snapshot_id,
            "uri": ref.uri,
            "row_count": manifest["row_count"],
            "sha256": manifest["files"][0]["sha256"],
            "encryption": manifest["encryption"],
            "schema_drift": meta.get("schema_drift"),
            "governance": manifest["governance"],
        },
    )
    return {"source": source.name, "snapshot_id": ref.snapshot_id, "row_count": manifest["row_count"]}


def _normalise(df: pd.DataFrame, spec: PipelineSpec) -> tuple[pd.DataFrame, dict[str, Any]]:
    rules = spec.dataset.normalization
    counts: dict[str, Any] = {"input_rows": len(df)}
    text_columns = [c for c in df.columns if c != SOURCE_COLUMN]
    changed = 0
    for column in text_columns:
        original = df[column]

        def fix(value: Any, lower: bool = column in rules.lowercase_columns) -> Any:
            if not isinstance(value, str):
                return value
            if rules.unicode_nfc:
                value = unicodedata.normalize("NFC", value)
            if rules.trim:
                value = value.strip()
            if lower:
                value = value.lower()
            return value

        df[column] = original.map(fix)
        changed += int((df[column].fillna("\0") != original.fillna("\0")).sum())
    counts["values_changed"] = changed
    if rules.dedupe_on_key:
        before = len(df)
        df = df.drop_duplicates(subset=[c for c in df.columns if c != SOURCE_COLUMN], keep="first")
        counts["exact_duplicates_removed"] = before - len(df)
        before = len(df)
        df = df.drop_duplicates(subset=[spec.dataset.key], keep="first")
        counts["key_conflicts_removed"] = before - len(df)
    counts["output_rows"] = len(df)
    return df.reset_index(drop=True), counts


def _pii_masker() -> Any:
    """A function that masks every PII type in a string: used on validation samples."""
    from llmops.privacy.pii import redact_text

    actions = {
        t: "mask" for t in ("email", "phone", "payment_card", "iban", "us_ssn", "ip_address", "person_name")
    }

    def mask(value: str) -> str:
        return redact_text(value, actions, None)[0]

    return mask


def validate(pipeline: str, raw: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    """Normalise, check contracts and the GX suite; quarantine failing rows; fail on blocking ones."""
    import pandas as pd
    import pyarrow as pa

    from llmops.privacy.keys import get_kek
    from llmops.quality.contracts import check_contract, enforce
    from llmops.quality.expectations import BlockingExpectationFailed, load_suite, validate_dataframe

    spec = load_pipeline(pipeline)
    settings = get_settings()
    kek = get_kek()
    frames = []
    contracts = []
    for item in sorted(raw, key=lambda r: r["source"]):
        source = next(s for s in spec.sources if s.name == item["source"])
        ref = snapshots.snapshot_ref(settings.lake_root, "raw", spec.name, source.name, item["snapshot_id"])
        manifest = snapshots.read_manifest(ref)
        table = snapshots.read_snapshot(ref, kek)
        contracts.append(
            check_contract(
                source.name, list(source.columns), table.column_names, manifest["source"].get("schema_drift")
            )
        )
        frame = table.to_pandas()
        frame[SOURCE_COLUMN] = source.name
        frames.append(frame)
    enforce(contracts)
    columns = list(dict.fromkeys(c for s in spec.sources for c in s.columns))
    df = pd.concat([f.reindex(columns=[*columns, SOURCE_COLUMN]) for f in frames], ignore_index=True)
    df, normalisation = _normalise(df, spec)

    suite = load_suite(settings.gx_dir, spec.validation.suite)
    outcome = validate_dataframe(df.drop(columns=[SOURCE_COLUMN]), suite, _pii_masker())

    failed_rows = sorted(outcome.row_failures)
    quarantined = df.iloc[failed_rows].copy()
    quarantined[QUARANTINE_REASON] = ["; ".join(outcome.row_failures[i]) for i in failed_rows]
    accepted = df.drop(index=failed_rows).reset_index(drop=True)
    reasons: dict[str, int] = {}
    for row_reasons in outcome.row_failures.values():
        for reason in row_reasons:
            reasons[reason] = reasons.get(reason, 0) + 1

    identity = {"inputs": sorted(r["snapshot_id"] for r in raw), "suite": spec.validation.suite}
    q_ref, _ = snapshots.write_snapshot(
        lake_root=settings.lake_root,
        zone="quarantine",
        pipeline=spec.name,
        dataset="rows",
        table=pa.Table.from_pandas(quarantined, preserve_index=False),
        metadata={"reasons": reasons},
        kek=kek,
        run_id=run_id,
        identity=identity,
    )
    v_ref, v_manifest = snapshots.write_snapshot(
        lake_root=settings.lake_root,
        zone="raw",
        pipeline=spec.name,
        dataset="validated",
        table=pa.Table.from_pandas(accepted, preserve_index=False),
        metadata={"inputs": identity["inputs"], "quarantine_snapshot_id": q_ref.snapshot_id},
        kek=kek,
        run_id=run_id,
        identity=identity,
    )
    result_doc = {
        "validated_snapshot_id": v_ref.snapshot_id,
        "contracts": [c.to_dict() for c in contracts],
        "normalisation": normalisation,
        "validation": outcome.to_dict(),
    }
    storage.write_json(
        storage.join(settings.lake_root, "validation", spec.name, f"{v_ref.snapshot_id}.json"), result_doc
    )
    reconciled = normalisation["output_rows"] == len(accepted) + len(quarantined)
    payload = {
        "inputs": identity["inputs"],
        "validated_snapshot_id": v_ref.snapshot_id,
        "quarantine_snapshot_id": q_ref.snapshot_id,
        "rows_in": normalisation["input_rows"],
        "rows_after_normalisation": normalisation["output_rows"],
        "rows_accepted": len(accepted),
        "rows_quarantined": len(quarantined),
        "counts_reconcile": reconciled,
        "quarantine_reasons": reasons,
        "normalisation": normalisation,
        "contracts": [c.to_dict() for c in contracts],
        "validation": outcome.to_dict(),
    }
    _record(spec, "dataset.validated", f"validated/{v_ref.snapshot_id}", run_id, payload)
    if not reconciled:
        raise RuntimeError("row counts do not reconcile: input != accepted + quarantined")
    if outcome.blocking_failures:
        raise BlockingExpectationFailed(
            f"suite '{spec.validation.suite}' failed {len(outcome.blocking_failures)} blocking expectation(s): "
            + "; ".join(outcome.blocking_failures)
        )
    fraction = len(quarantined) / max(normalisation["output_rows"], 1)
    if fraction > spec.validation.max_quarantine_fraction:
        raise QuarantineLimitExceeded(
            f"{len(quarantined)} of {normalisation['output_rows']} rows ({fraction:.1%}) were quarantined; "
            f"validation.max_quarantine_fraction is {spec.validation.max_quarantine_fraction:.1%}"
        )
    return {
        "validated_snapshot_id": v_ref.snapshot_id,
        "quarantine_snapshot_id": q_ref.snapshot_id,
        "rows_accepted": len(accepted),
        "rows_quarantined": len(quarantined),
        "row_count": v_manifest["row_count"],
    }


def curate(pipeline: str, validated: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Apply the PII policy and publish the curated snapshot (plaintext: no raw PII left)."""
    import pyarrow as pa

    from llmops.privacy.keys import get_kek, get_pseudonymisation_key
    from llmops.privacy.pii import Pseudonymiser, apply_privacy_policy, find_residual_pii

    spec = load_pipeline(pipeline)
    settings = get_settings()
    v_ref = snapshots.snapshot_ref(
        settings.lake_root, "raw", spec.name, "validated", validated["validated_snapshot_id"]
    )
    df = snapshots.read_snapshot(v_ref, get_kek()).to_pandas()
    pseudonymiser = Pseudonymiser(get_pseudonymisation_key(spec.privacy.pseudonymisation_conn_id))
    curated, report = apply_privacy_policy(df, spec.privacy, pseudonymiser)
    residual: dict[str, int] = {}
    if spec.privacy.free_text is not None:
        residual = {
            t: n
            for t, n in find_residual_pii(curated, list(spec.privacy.free_text.columns)).items()
            if n and t in spec.privacy.free_text.types
        }
    governance = {s.name: s.governance.model_dump() for s in spec.sources}
    ref, manifest = snapshots.write_snapshot(
        lake_root=settings.lake_root,
        zone="curated",
        pipeline=spec.name,
        dataset="records",
        table=pa.Table.from_pandas(curated, preserve_index=False),
        metadata={
            "inputs": {"validated_snapshot_id": v_ref.snapshot_id},
            "privacy": report.to_dict(),
            "governance": governance,
            "purpose": spec.purpose,
        },
        run_id=run_id,
        identity={"validated": v_ref.snapshot_id, "privacy_policy": spec.privacy.model_dump(mode="json")},
    )
    payload = {
        "validated_snapshot_id": v_ref.snapshot_id,
        "curated_snapshot_id": ref.snapshot_id,
        "uri": ref.uri,
        "row_count": manifest["row_count"],
        "sha256": manifest["files"][0]["sha256"],
        "columns": [c["name"] for c in manifest["schema"]],
        "privacy": report.to_dict(),
        "residual_pii": residual,
        "governance": governance,
    }
    _record(spec, "pii.handled", f"curated/{ref.snapshot_id}", run_id, payload)
    if residual:
        raise PiiResidualFound(f"PII still detectable after redaction: {residual}")
    snapshots.set_latest(ref, settings.lake_root)
    _record(
        spec,
        "snapshot.curated.published",
        f"curated/{ref.snapshot_id}",
        run_id,
        {"asset": spec.curated_asset_uri},
    )
    return {"curated_snapshot_id": ref.snapshot_id, "row_count": manifest["row_count"], "uri": ref.uri}


# ------------------------------------------------------------------------------------- finetune


def start_finetune(pipeline: str, curated_snapshot_id: str, params: dict[str, Any], run_id: str) -> str:
    """Record the run's parameters and resolve 'latest' to a concrete snapshot id."""
    spec = load_pipeline(pipeline)
    if not curated_snapshot_id or curated_snapshot_id == "latest":
        curated_snapshot_id = snapshots.get_latest(
            get_settings().lake_root, "curated", spec.name, "records"
        ).snapshot_id
    _record(
        spec,
        "finetune.started",
        f"curated/{curated_snapshot_id}",
        run_id,
        {"curated_snapshot_id": curated_snapshot_id, "params": params},
    )
    return curated_snapshot_id


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
        c_ref = snapshots.get_latest(settings.lake_root, "curated", spec.name, "records")
    else:
        c_ref = snapshots.snapshot_ref(
            settings.lake_root, "curated", spec.name, "records", curated_snapshot_id
        )
    c_manifest = snapshots.read_manifest(c_ref)
    if c_manifest.get("purpose") != spec.purpose:
        raise ValueError(
            f"curated snapshot {c_ref.snapshot_id} was prepared for purpose {c_manifest.get('purpose')!r}, "
            f"not {spec.purpose!r}"
        )
    df = snapshots.read_snapshot(c_ref).to_pandas()
    training = spec.training
    seed = training.hyperparameters.seed
    rows: dict[str, list[dict[str, str]]] = {"train": [], "eval": []}
    skipped = 0
    for record in df.to_dict(orient="records"):
        completion = record.get(training.completion_column)
        if not isinstance(completion, str) or not completion.strip():
            skipped += 1
            continue
        values = {k: ("" if v is None else str(v)) for k, v in record.items()}
        prompt = training.prompt_template.format(**values)
        split = _split_of(str(record[spec.dataset.key]), training.eval_fraction, seed)
        rows[split].append(
            {"key": str(record[spec.dataset.key]), "prompt": prompt, "completion": " " + completion.strip()}
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
    _record(
        spec,
        "dataset.sft.created",
        f"sft/{ref.snapshot_id}",
        run_id,
        {
            "curated_snapshot_id": c_ref.snapshot_id,
            "sft_snapshot_id": ref.snapshot_id,
            "sha256": manifest["files"][0]["sha256"],
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
    _record(
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
    _record(spec, "model.evaluated", f"mlflow-run/{trained['mlflow_run_id']}", run_id, {"metrics": metrics})
    return {"metrics": flat}


def check_gates(
    pipeline: str, evaluation: dict[str, Any], trained: dict[str, Any], run_id: str
) -> dict[str, Any]:
    from llmops.evaluation.gates import evaluate_gates, raise_if_failed

    spec = load_pipeline(pipeline)
    decision = evaluate_gates(list(spec.gates), evaluation["metrics"])
    _record(spec, "model.gated", f"mlflow-run/{trained['mlflow_run_id']}", run_id, decision)
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
    _record(
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
        _record(
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
    _record(
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
    _record(spec, "report.generated", f"report/{safe_run_id(run_id)}", run_id, paths)
    return paths
