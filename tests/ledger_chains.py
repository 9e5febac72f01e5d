"""Ledger records of an ingest run and a fine-tune run, shaped as the pipeline's steps record them.

For tests of the compliance reports that need a model version's whole chain without running the
pipeline: the payloads carry the keys the steps write (ids, counts, hashes, metrics), with made-up
values. Appended to a real ledger, so the hash chain and `verify()` are the real ones.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmops.ledger import Ledger

GOVERNANCE = {
    "classification": "confidential",
    "consent_scope": None,
    "data_owner": "customer-service@northwind.example",
    "lawful_basis": "legitimate_interests",
    "purposes": ["customer_support_automation"],
    "retention_days": 730,
}
ENCRYPTION = {"algorithm": "AES-256-GCM-STREAM-v1+AES-256-GCM-KW", "kek_ids": ["17da000ef30e8fca"]}


def sid(label: str) -> str:
    """A snapshot id (20 hex characters) derived from a label, so tests can name their snapshots."""
    return hashlib.sha256(label.encode()).hexdigest()[:20]


def sha(label: str) -> str:
    return hashlib.sha256(f"content:{label}".encode()).hexdigest()


def ingest_run(
    ledger: Ledger,
    pipeline: str,
    run_id: str,
    *,
    label: str,
    sources: dict[str, dict[str, Any]] | None = None,
    carried_forward_rows: int = 0,
    quarantined: int = 3,
) -> dict[str, str]:
    """An ingest run: one raw snapshot per source, validation, PII handling, publication.

    ``sources``: name -> {"rows": int, "watermark": dict | None, "kind": "sql" | "rest"}.
    Returns the snapshot ids written.
    """
    sources = sources or {"helpdesk_db": {"rows": 60, "watermark": None, "kind": "sql"}}
    raw_ids = {}
    for name, info in sources.items():
        raw_ids[name] = sid(f"{label}:raw:{name}")
        ledger.append(
            pipeline=pipeline,
            event_type="snapshot.raw.created",
            subject=f"raw/{name}/{raw_ids[name]}",
            run_id=run_id,
            payload={
                "source": name,
                "kind": info.get("kind", "sql"),
                "conn_id": f"{name}_conn",
                "location": info.get(
                    "location", "tickets" if info.get("kind", "sql") == "sql" else "/v1/tickets"
                ),
                "query": None,
                "snapshot_id": raw_ids[name],
                "uri": f"/lake/raw/{pipeline}/{name}/{raw_ids[name]}",
                "row_count": info["rows"],
                "files": [{"name": "part-00000.parquet.enc", "rows": info["rows"], "sha256": sha(name)}],
                "sha256": sha(f"{label}:raw:{name}"),
                "encryption": ENCRYPTION,
                "watermark": info.get("watermark"),
                "partitions": 1,
                "schema_drift": None,
                "governance": GOVERNANCE,
            },
        )
    total = sum(i["rows"] for i in sources.values())
    validated, quarantine, curated = (
        sid(f"{label}:validated"),
        sid(f"{label}:quarantine"),
        sid(f"{label}:curated"),
    )
    ledger.append(
        pipeline=pipeline,
        event_type="dataset.validated",
        subject=f"validated/{validated}",
        run_id=run_id,
        payload={
            "inputs": sorted(raw_ids.values()),
            "validated_snapshot_id": validated,
            "quarantine_snapshot_id": quarantine,
            "rows_in": total,
            "rows_after_normalisation": total,
            "rows_accepted": total - quarantined,
            "rows_quarantined": quarantined,
            "counts_reconcile": True,
            "quarantine_reasons": {"expect_column_values_to_not_be_null(body)": quarantined},
            "normalisation": {"input_rows": total, "output_rows": total, "exact_duplicates_removed": 0},
            "contracts": [
                {
                    "source": name,
                    "contract_declared": True,
                    "ok": True,
                    "rows": info["rows"],
                    "rows_violating": 0,
                    "rule_counts": {},
                    "table_violations": [],
                    "missing_columns": [],
                    "unexpected_columns": [],
                    "schema_diff": {},
                    "field_drift": {},
                    "samples_masked": {"pattern(ticket_id)": ["T**-masked-sample"]},
                }
                for name, info in sources.items()
            ],
            "validation": {
                "suite": "support_tickets",
                "success": True,
                "blocking_failures": [],
                "warnings": [],
                "statistics": {"evaluated_expectations": 2, "successful_expectations": 2},
                "results": [
                    {
                        "expectation_type": "expect_table_row_count_to_be_between",
                        "kwargs": {"min_value": 10},
                        "result": {"observed_value": total},
                        "severity": "blocking",
                        "success": True,
                        "exception": False,
                    },
                    {
                        "expectation_type": "expect_column_values_to_not_be_null",
                        "kwargs": {"column": "body", "mostly": 0.9},
                        "result": {
                            "element_count": total,
                            "unexpected_count": quarantined,
                            "unexpected_percent": 100 * quarantined / total,
                            "unexpected_samples_masked": ["a sample value that must not be reported"],
                        },
                        "severity": "blocking",
                        "success": True,
                        "exception": False,
                    },
                ],
                "quarantined_rows": quarantined,
            },
            "quality": {"rows": total},
        },
    )
    ledger.append(
        pipeline=pipeline,
        event_type="pii.handled",
        subject=f"curated/{curated}",
        run_id=run_id,
        payload={
            "validated_snapshot_id": validated,
            "curated_snapshot_id": curated,
            "row_count": total - quarantined + carried_forward_rows,
            "carried_forward_rows": carried_forward_rows,
            "sha256": sha(f"{label}:curated"),
            "columns": ["ticket_id", "customer_email", "subject", "body", "resolution", "_source"],
            "privacy": {
                "rows_scanned": total - quarantined,
                "counts_by_type_action": {"email": {"mask": 5, "pseudonymise": total - quarantined}},
                "counts_by_column": {"body": 5, "customer_email": total - quarantined},
                "column_actions": {"customer_email": "pseudonymise", "customer_name": "drop"},
                "column_types": {"customer_email": "email"},
                "columns_dropped": ["customer_name"],
                "allowed_columns": {},
                "free_text_columns": ["subject", "body", "resolution"],
                "free_text_actions": {"email": "mask"},
                "total_replacements": 5 + total - quarantined,
            },
            "residual_pii": {},
            "governance": {name: GOVERNANCE for name in sources},
        },
    )
    ledger.append(
        pipeline=pipeline,
        event_type="snapshot.curated.published",
        subject=f"curated/{curated}",
        run_id=run_id,
        payload={"asset": f"llmops://{pipeline}/curated"},
    )
    return {"raw": raw_ids, "validated": validated, "quarantine": quarantine, "curated": curated}


def finetune_run(
    ledger: Ledger,
    pipeline: str,
    run_id: str,
    *,
    curated: str,
    model_name: str,
    version: str | None,
    label: str,
    token_f1: float = 0.81,
    gates_passed: bool = True,
    search: bool = True,
) -> dict[str, str]:
    """A fine-tune run: SFT data, search, training, evaluation, gates and (when ``version``) registration."""
    sft, mlflow_run = sid(f"{label}:sft"), hashlib.sha256(label.encode()).hexdigest()[:32]
    ledger.append(
        pipeline=pipeline,
        event_type="dataset.sft.created",
        subject=f"sft/{sft}",
        run_id=run_id,
        payload={
            "curated_snapshot_id": curated,
            "sft_snapshot_id": sft,
            "sha256": sha(f"{label}:sft"),
            "stats": {
                "train": {"rows": 48, "prompt_chars_mean": 120.5, "completion_chars_mean": 80.1},
                "validation": {"rows": 6, "prompt_chars_mean": 119.0, "completion_chars_mean": 78.0},
                "test": {"rows": 9, "prompt_chars_mean": 118.0, "completion_chars_mean": 79.0},
            },
            "skipped_rows": 0,
            "template": "Ticket ({category}): {subject}\n{body}\nAnswer:",
        },
    )
    if search:
        trials = [
            {
                "number": 0,
                "params": {"learning_rate": 0.004, "lora_r": 16},
                "state": "succeeded",
                "value": 0.41,
            },
            {
                "number": 1,
                "params": {"learning_rate": 0.005, "lora_r": 32},
                "state": "failed",
                "error": "OOM",
            },
        ]
        study = f"{pipeline}:{sft}:abcd"
        ledger.append(
            pipeline=pipeline,
            event_type="hpo.planned",
            subject=f"study/{study}",
            run_id=run_id,
            payload={
                "study": study,
                "storage": "postgresql://optuna:s3cret@db:5432/optuna",
                "direction": "minimize",
                "trials": [{k: t[k] for k in ("number", "params")} for t in trials],
            },
        )
        ledger.append(
            pipeline=pipeline,
            event_type="hpo.completed",
            subject=f"study/{study}",
            run_id=run_id,
            payload={
                "study": study,
                "trials": trials,
                "completed_in_study": 1,
                "best": {**trials[0], "value": 0.41},
            },
        )
    hyper = {"learning_rate": 0.004, "epochs": 4.0, "batch_size": 16, "seed": 42}
    ledger.append(
        pipeline=pipeline,
        event_type="model.trained",
        subject=f"mlflow-run/{mlflow_run}",
        run_id=run_id,
        payload={
            "mlflow_run_id": mlflow_run,
            "curated_snapshot_id": curated,
            "sft_snapshot_id": sft,
            "base_model": "tiny-support-base",
            "method": "sft",
            "launcher": "local",
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
            "hyperparameters": hyper,
            "tuned_by_search": search,
            "max_steps": None,
            "result": {
                "status": "succeeded",
                "base_model_sha256": sha("base"),
                "adapter_sha256": sha(f"{label}:adapter"),
                "config": {
                    "hyperparameters": hyper,
                    "mlflow": {"tracking_uri": "https://ci:hunter2@mlflow.example"},
                },
                "config_sha256": sha(f"{label}:config"),
                "code_version": {"llmops": "0.1.0", "git_commit": "abc1234"},
                "library_versions": {"torch": "2.13.0"},
                "device": "cpu",
                "dtype": "float32",
                "data_files": {
                    "train_file": {"sha256": sha("train"), "rows": 48, "bytes": 1000, "uri": "/x"}
                },
                "train_loss": 0.5,
                "eval_loss": 0.45,
                "base_eval_loss": 1.6,
                "global_step": 12,
                "base_weights_unchanged": True,
                "adapter_weights_changed": True,
            },
        },
    )
    metrics = {
        "eval_loss": 0.45,
        "eval_perplexity": 1.57,
        "token_f1": token_f1,
        "exact_match": 0.3,
        "rouge_l": 0.8,
        "pii_leakage_rate": 0.0,
        "toxicity_rate": 0.0,
        "refusal_rate": 0.0,
        "n_samples": 9,
        "eval_split": "test",
        "data_splits": {"measured": "test", "rows": {"train": 48, "validation": 6, "test": 9}},
        "baseline": {"token_f1": 0.2, "eval_loss": 1.6},
        "champion": None,
        "golden": {},
        "pii_probe": {
            "prompts": 9,
            "leaked_prompts": 0,
            "pii_leakage_rate": 0.0,
            "matched_hashes": ["deadbeef"],
        },
    }
    ledger.append(
        pipeline=pipeline,
        event_type="model.evaluated",
        subject=f"mlflow-run/{mlflow_run}",
        run_id=run_id,
        payload={
            "metrics": metrics,
            "champion": "no champion yet: the first model sets the bar",
            "pii_probe": {
                "prompts": 9,
                "leaked_prompts": 0,
                "pii_leakage_rate": 0.0,
                "target_values": 12,
                "canaries": 0,
            },
        },
    )
    gate = {
        "metric": "token_f1",
        "observed": token_f1,
        "min": 0.6,
        "max": None,
        "passed": gates_passed,
        "reason": "within bounds" if gates_passed else "short",
        "champion": None,
        "beat_champion_by": None,
    }
    ledger.append(
        pipeline=pipeline,
        event_type="model.gated",
        subject=f"mlflow-run/{mlflow_run}",
        run_id=run_id,
        payload={"passed": gates_passed, "gates": [gate], "champion_compared": False, "champion": "none"},
    )
    if version is not None:
        ledger.append(
            pipeline=pipeline,
            event_type="model.registered",
            subject=f"model/{model_name}/{version}",
            run_id=run_id,
            payload={
                "model_name": model_name,
                "version": str(version),
                "model_uri": f"models:/m-{label}",
                "mlflow_run_id": mlflow_run,
                "alias": "challenger",
            },
        )
    return {"sft": sft, "mlflow_run": mlflow_run}
