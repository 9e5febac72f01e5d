"""The data, training and evaluation sections of a model version's report, read from its ledger chain.

The chain: the version's `model.registered` record -> its fine-tune run (SFT dataset, training,
evaluation, gates) -> the curated snapshot it trained on -> the ingest run(s) that wrote that data
(raw snapshots, validation, PII handling), followed through erasure rewrites and carried-forward
rows. Each section keeps what an auditor needs (ids, counts, hashes, metrics, outcomes) and points
at the ledger record it comes from (`evidence.ledger`: seq and record hash).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from llmops import storage
from llmops.ledger.events import (
    CuratedSnapshotPublished,
    ErasureSnapshotRewritten,
    PiiHandled,
    RetentionDeleted,
    RetentionKept,
    SearchCompleted,
    SearchPlanned,
)
from llmops.reports import evidence
from llmops.reports.evidence import is_number, last, record_ref
from llmops.settings import get_settings

if TYPE_CHECKING:
    from llmops.ledger import LedgerRecord
    from llmops.reports.period import Window
    from llmops.specs import PipelineSpec

IN_LAKE = "in the lake (no retention or erasure event)"
KEPT = "kept past its retention"
LIFECYCLE_EVENTS = (RetentionDeleted.name, RetentionKept.name, ErasureSnapshotRewritten.name)


def _rewrites_into(records: list[LedgerRecord]) -> dict[tuple[str, str], LedgerRecord]:
    """(zone/dataset, new snapshot id) -> the erasure record that wrote it by rewriting an older one."""
    out = {}
    for record in records:
        if record.event_type == ErasureSnapshotRewritten.name:
            prefix = record.subject.rsplit("/", 1)[0]
            out[(prefix, str(record.payload.get("new_snapshot_id")))] = record
    return out


def original_snapshot(
    records: list[LedgerRecord], prefix: str, snapshot_id: str
) -> tuple[str, list[dict[str, Any]]]:
    """The snapshot an erasure-rewritten one descends from, and the rewrites in between (oldest first).

    ``prefix`` is ``<zone>/<dataset>`` (e.g. ``curated/records``). A snapshot that was never
    rewritten is its own origin.
    """
    rewrites = _rewrites_into(records)
    chain: list[dict[str, Any]] = []
    current, seen = snapshot_id, {snapshot_id}
    while (prefix, current) in rewrites:
        record = rewrites[(prefix, current)]
        old = str(record.payload.get("old_snapshot_id"))
        chain.append(
            {
                "request_id": record.payload.get("request_id"),
                "from_snapshot_id": old,
                "to_snapshot_id": current,
                "rows_removed": record.payload.get("rows_removed"),
                "at": record.recorded_at,
            }
        )
        if old in seen:
            break
        seen.add(old)
        current = old
    return current, list(reversed(chain))


def ingest_chain(records: list[LedgerRecord], curated_snapshot_id: str) -> list[dict[str, Any]]:
    """The ingest runs whose data is in a curated snapshot, the one that wrote it first.

    An incremental source's rows stay curated until a newer version of the same key arrives, so a
    curated snapshot with ``carried_forward_rows`` also holds rows of the snapshot that was
    published before it; that one is followed too (and so on). A snapshot rewritten by an erasure
    request is traced back to the one its ingest run wrote.
    """
    chain: list[dict[str, Any]] = []
    current: str | None = curated_snapshot_id
    seen: set[str] = set()
    while current and current not in seen:
        seen.add(current)
        origin, rewrites = original_snapshot(records, "curated/records", current)
        handled = [r for r in records if r.event_type == PiiHandled.name and r.subject == f"curated/{origin}"]
        entry: dict[str, Any] = {
            "curated_snapshot_id": current,
            "written_as": origin,
            "erasure_rewrites": rewrites,
            "run_id": None,
            "records": [],
            "carried_forward_rows": 0,
            "carried_from": None,
        }
        chain.append(entry)
        if not handled:
            break
        pii = handled[-1]
        entry["run_id"] = pii.run_id
        entry["records"] = [r for r in records if r.run_id == pii.run_id]
        entry["carried_forward_rows"] = int(pii.payload.get("carried_forward_rows") or 0)
        if entry["carried_forward_rows"]:
            published = [
                r for r in records if r.event_type == CuratedSnapshotPublished.name and r.seq < pii.seq
            ]
            previous = published[-1].subject.removeprefix("curated/") if published else None
            # An erasure may have rewritten that snapshot before this run read it as the latest.
            followed: set[str] = set()
            while previous is not None and previous not in followed:
                followed.add(previous)
                rewritten = [
                    r
                    for r in records
                    if r.event_type == ErasureSnapshotRewritten.name
                    and r.seq < pii.seq
                    and r.subject == f"curated/records/{previous}"
                ]
                if not rewritten:
                    break
                previous = str(rewritten[-1].payload.get("new_snapshot_id"))
            entry["carried_from"] = previous
        current = entry["carried_from"]
    return chain


def _numbers(metrics: dict[str, Any] | None) -> dict[str, float]:
    from llmops import metrics as catalogue

    return {k: metrics[k] for k in catalogue.names() if is_number((metrics or {}).get(k))}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _lake_copy(pipeline: str, validated_snapshot_id: str, ledger_payload: dict[str, Any]) -> dict[str, Any]:
    """The validation result the ingest wrote to the lake, checked against the ledger's copy."""
    uri = storage.join(get_settings().lake_root, "validation", pipeline, f"{validated_snapshot_id}.json")
    out: dict[str, Any] = {"uri": uri, "sha256": None, "matches_ledger": None, "error": None}
    try:
        if not storage.exists(uri):
            out["error"] = "not in the lake"
            return out
        blob = storage.read_bytes(uri)
        out["sha256"] = hashlib.sha256(blob).hexdigest()
        recorded = {k: v for k, v in ledger_payload.items() if k != "spec_hash"}
        out["matches_ledger"] = _canonical(json.loads(blob)) == _canonical(recorded)
    except Exception as exc:  # evidence that cannot be read is reported, not fatal
        out["error"] = type(exc).__name__
    return out


def _expectation(result: dict[str, Any]) -> dict[str, Any]:
    """One expectation and its outcome: counts and numeric observations only (no sample values)."""
    outcome = result.get("result") or {}
    kwargs = dict(result.get("kwargs") or {})
    observed = outcome.get("observed_value")
    return {
        "expectation_type": result.get("expectation_type"),
        "column": kwargs.get("column"),
        "kwargs": kwargs,
        "severity": result.get("severity"),
        "success": result.get("success"),
        "exception": bool(result.get("exception")),
        "element_count": outcome.get("element_count"),
        "unexpected_count": outcome.get("unexpected_count"),
        "unexpected_percent": outcome.get("unexpected_percent"),
        "observed_value": observed if is_number(observed) or isinstance(observed, bool) else None,
    }


def validation_section(pipeline: str, record: LedgerRecord) -> dict[str, Any]:
    payload = record.payload
    outcome = payload.get("validation") or {}
    after = payload.get("rows_after_normalisation") or 0
    return {
        "ingest_run_id": record.run_id,
        "validated_snapshot_id": payload.get("validated_snapshot_id"),
        "quarantine_snapshot_id": payload.get("quarantine_snapshot_id"),
        "suite": outcome.get("suite"),
        "success": outcome.get("success"),
        "statistics": outcome.get("statistics"),
        "blocking_failures": outcome.get("blocking_failures") or [],
        "warnings": outcome.get("warnings") or [],
        "rows_in": payload.get("rows_in"),
        "rows_after_normalisation": payload.get("rows_after_normalisation"),
        "rows_accepted": payload.get("rows_accepted"),
        "rows_quarantined": payload.get("rows_quarantined"),
        "rows_suppressed": payload.get("rows_suppressed") or 0,  # rows of erased subjects left out
        "quarantine_fraction": round(payload.get("rows_quarantined", 0) / after, 6) if after else None,
        "counts_reconcile": payload.get("counts_reconcile"),
        "quarantine_reasons": [
            {"reason": reason, "rows": rows}
            for reason, rows in sorted(
                (payload.get("quarantine_reasons") or {}).items(), key=lambda i: (-i[1], i[0])
            )
        ],
        "normalisation": payload.get("normalisation"),
        # Contract outcomes are counts and column names; their masked samples stay in the ledger.
        "contracts": [
            {k: v for k, v in c.items() if k != "samples_masked"} for c in payload.get("contracts") or []
        ],
        "expectations": [_expectation(r) for r in outcome.get("results") or []],
        "quality": payload.get("quality"),
        "evidence": {
            "ledger": record_ref(record),
            "lake_copy": _lake_copy(pipeline, payload.get("validated_snapshot_id", ""), payload),
        },
    }


def privacy_section(spec: PipelineSpec, record: LedgerRecord) -> dict[str, Any]:
    """What the PII policy did to the data (types, counts, actions, justifications): never values."""
    payload = record.payload
    report = payload.get("privacy") or {}
    actions = report.get("column_actions") or {}
    allowed = report.get("allowed_columns") or {}
    in_spec = {
        column: policy.justification
        for column, policy in spec.privacy.columns.items()
        if policy.action == "allow"
    }
    columns = sorted(set(actions) | set(allowed))
    return {
        "ingest_run_id": record.run_id,
        "curated_snapshot_id": payload.get("curated_snapshot_id"),
        "rows_scanned": report.get("rows_scanned"),
        "total_replacements": report.get("total_replacements"),
        "detections": [
            {"pii_type": pii_type, "action": action, "count": count}
            for pii_type, by_action in sorted((report.get("counts_by_type_action") or {}).items())
            for action, count in sorted(by_action.items())
        ],
        "columns": [
            {
                "column": column,
                "action": actions.get(column, "allow"),
                "detected_type": (report.get("column_types") or {}).get(column),
                "values_affected": (report.get("counts_by_column") or {}).get(column),
                "justification": allowed.get(column),
            }
            for column in columns
        ],
        "columns_dropped": report.get("columns_dropped") or [],
        "free_text": {
            "columns": report.get("free_text_columns") or [],
            "actions": report.get("free_text_actions") or {},
            "values_replaced": {
                c: n for c, n in (report.get("counts_by_column") or {}).items() if c not in actions
            },
        },
        "allowed": [
            {"column": c, "justification_recorded": allowed.get(c), "justification_in_spec": in_spec.get(c)}
            for c in sorted(set(allowed) | set(in_spec))
        ],
        "residual_pii": payload.get("residual_pii") or {},
        "curated_columns": payload.get("columns") or [],
        "evidence": {"ledger": record_ref(record)},
    }


def _manifest_encryption(pipeline: str, zone: str, dataset: str, snapshot_id: str) -> dict[str, Any]:
    from llmops import snapshots

    try:
        ref = snapshots.snapshot_ref(get_settings().lake_root, zone, pipeline, dataset, snapshot_id)
        facts = evidence.encryption_facts(snapshots.read_manifest(ref).get("encryption"))
    except Exception:
        return {
            "algorithm": None,
            "kek_ids": [],
            "recorded_in": None,
            "note": "snapshot no longer in the lake",
        }
    if facts is None:
        return {"algorithm": None, "kek_ids": [], "recorded_in": "manifest", "note": "not encrypted"}
    return {**facts, "recorded_in": "manifest", "note": None}


def encryption_section(
    pipeline: str,
    sources: list[dict[str, Any]],
    validations: list[dict[str, Any]],
    curated_snapshot_id: str | None = None,
    sft_payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Which key (by id) and algorithm protect each snapshot the version's data went through (raw,
    validated, quarantine, curated, training set); key material never appears."""
    rows = []
    for source in sources:
        facts = source.get("encryption")
        rows.append(
            {
                "zone": "raw",
                "dataset": source["name"],
                "snapshot_id": source["raw_snapshot_id"],
                "algorithm": (facts or {}).get("algorithm"),
                "kek_ids": (facts or {}).get("kek_ids") or [],
                "recorded_in": "ledger",
                "note": None if facts else "not encrypted",
            }
        )
    for check in validations:
        for zone, dataset, key in (
            ("raw", "validated", "validated_snapshot_id"),
            ("quarantine", "rows", "quarantine_snapshot_id"),
        ):
            if check.get(key):
                rows.append(
                    {
                        "zone": zone,
                        "dataset": dataset,
                        "snapshot_id": check[key],
                        **_manifest_encryption(pipeline, zone, dataset, check[key]),
                    }
                )
    derived = [("curated", "records", curated_snapshot_id)]
    if sft_payload:
        derived.append(
            ("sft", sft_payload.get("dataset") or "prompt_completion", sft_payload.get("sft_snapshot_id"))
        )
    for zone, dataset, snapshot_id in derived:
        if snapshot_id:
            rows.append(
                {
                    "zone": zone,
                    "dataset": dataset,
                    "snapshot_id": snapshot_id,
                    **_manifest_encryption(pipeline, zone, dataset, snapshot_id),
                }
            )
    return {
        "snapshots": rows,
        "algorithms": sorted({r["algorithm"] for r in rows if r["algorithm"]}),
        "kek_ids": sorted({k for r in rows for k in r["kek_ids"]}),
        # Only snapshots written before every record-level zone was encrypted can be listed here.
        "unencrypted_zones": {
            f"{r['zone']}/{r['dataset']}": "not encrypted: written before every record-level zone was"
            for r in rows
            if r["note"] == "not encrypted"
        },
    }


def lifecycle(
    records: list[LedgerRecord], zone: str, dataset: str, snapshot_id: str, window: Window
) -> dict[str, Any]:
    """What happened to a snapshot after it was written: kept, deleted, rewritten by an erasure.

    A rewritten snapshot is followed to its new version, so the state reads e.g. "rewritten by
    erasure request R (as <id>), then deleted by retention".
    """
    events, states, current, seen = [], [], snapshot_id, set()
    while current not in seen:
        seen.add(current)
        subject = f"{zone}/{dataset}/{current}"
        nxt = None
        for record in records:
            if record.event_type not in LIFECYCLE_EVENTS or record.subject != subject:
                continue
            payload = record.payload
            if record.event_type == RetentionDeleted.name:
                states.append("deleted by retention")
                detail = f"past {payload.get('retention_days')} days"
            elif record.event_type == RetentionKept.name:
                states.append(KEPT)
                detail = str(payload.get("reason") or "")
            else:
                nxt = str(payload.get("new_snapshot_id"))
                states.append(f"rewritten by erasure request {payload.get('request_id')} (as {nxt})")
                detail = f"request {payload.get('request_id')}: {payload.get('rows_removed')} row(s) removed"
            if window.contains(record.recorded_at):
                events.append(
                    {
                        "at": record.recorded_at,
                        "event_type": record.event_type,
                        "snapshot_id": current,
                        "detail": detail,
                        "run_id": record.run_id,
                        "seq": record.seq,
                    }
                )
        if nxt is None:
            break
        current = nxt
    states = [state for i, state in enumerate(states) if state != KEPT or i == len(states) - 1]
    return {
        "zone": zone,
        "dataset": dataset,
        "snapshot_id": snapshot_id,
        "state": ", then ".join(states) if states else IN_LAKE,
        "current_snapshot_id": current,
        "events": events,
    }


def training_section(trained: LedgerRecord, tags: dict[str, str], current_spec_hash: str) -> dict[str, Any]:
    payload = trained.payload
    result = payload.get("result") or {}
    keys = (
        "train_loss",
        "eval_loss",
        "base_eval_loss",
        "best_eval_loss",
        "global_step",
        "planned_steps",
        "epochs",
        "stopped_early",
        "train_runtime_s",
        "train_tokens",
        "train_rows",
        "eval_rows",
        "trainable_params",
        "total_params",
        "peak_memory_gib",
    )
    return {
        "finetune_run_id": trained.run_id,
        "mlflow_run_id": payload.get("mlflow_run_id"),
        "method": payload.get("method"),
        "launcher": payload.get("launcher"),
        "base_model": {"uri": payload.get("base_model"), "sha256": result.get("base_model_sha256")},
        "hyperparameters": payload.get("hyperparameters"),
        "lora": payload.get("lora"),
        "max_steps": payload.get("max_steps"),
        "tuned_by_search": bool(payload.get("tuned_by_search")),
        "resolved_config": result.get("config"),
        "config_sha256": result.get("config_sha256"),
        "code_version": {
            **(result.get("code_version") or {}),
            "registry_tag": tags.get("llmops.code_version"),
            "image_digest": result.get("image_digest"),
        },
        "library_versions": result.get("library_versions") or {},
        "device": result.get("device"),
        "dtype": result.get("dtype"),
        "data_files": {
            split: {k: f.get(k) for k in ("sha256", "rows", "bytes")}
            for split, f in (result.get("data_files") or {}).items()
        },
        "result": {k: result.get(k, payload.get(k)) for k in keys},
        "adapter_sha256": result.get("adapter_sha256"),
        "base_weights_unchanged": result.get("base_weights_unchanged"),
        "adapter_weights_changed": result.get("adapter_weights_changed"),
        "spec_hash": payload.get("spec_hash"),
        "spec_changed_since": bool(payload.get("spec_hash"))
        and payload.get("spec_hash") != current_spec_hash,
        "evidence": {"ledger": record_ref(trained)},
    }


def hpo_section(run_records: list[LedgerRecord], tuned: bool) -> dict[str, Any] | None:
    """The hyperparameter search of the fine-tune run, trial by trial; None when none ran."""
    planned, completed = last(run_records, SearchPlanned.name), last(run_records, SearchCompleted.name)
    if planned is None and completed is None:
        return None
    if completed is not None:
        trials = [
            {
                "number": t.get("number"),
                "params": t.get("params"),
                "state": t.get("state"),
                "value": t.get("value"),
                "global_step": t.get("global_step"),
                "train_runtime_s": t.get("train_runtime_s"),
                "error": t.get("error"),
            }
            for t in completed.payload.get("trials") or []
        ]
    else:  # the search never finished: what was asked for
        trials = [
            {"number": t.get("number"), "params": t.get("params"), "state": "unknown (search did not finish)"}
            for t in (planned.payload.get("trials") if planned else None) or []
        ]
    source = completed or planned
    return {
        "study": source.payload.get("study") if source else None,
        "direction": planned.payload.get("direction") if planned else None,
        "storage": planned.payload.get("storage") if planned else None,
        "trials": trials,
        "best": completed.payload.get("best") if completed else None,
        "completed_in_study": completed.payload.get("completed_in_study") if completed else None,
        "used_for_final_training": tuned,
        "evidence": {"ledger": [record_ref(r) for r in (planned, completed) if r is not None]},
    }


def evaluation_section(evaluated: LedgerRecord | None, gated: LedgerRecord | None) -> dict[str, Any]:
    metrics = (evaluated.payload.get("metrics") if evaluated else None) or {}
    probe = (evaluated.payload.get("pii_probe") if evaluated else None) or {}
    gates = gated.payload if gated else None
    return {
        "finetune_run_id": (evaluated or gated).run_id if (evaluated or gated) else None,
        "n_samples": metrics.get("n_samples"),
        "n_loss_rows": metrics.get("n_loss_rows"),
        # Which split of the training snapshot the metrics (and the gates) come from, and every
        # split's size; None for an evaluation from before the test split (its held-out split).
        "split": metrics.get("eval_split") or (metrics.get("data_splits") or {}).get("measured"),
        "split_rows": (metrics.get("data_splits") or {}).get("rows"),
        "device": metrics.get("device"),
        "metrics": _numbers(metrics),
        "baseline": _numbers(metrics.get("baseline")),
        "champion": _numbers(metrics.get("champion")) if metrics.get("champion") else None,
        "champion_note": evaluated.payload.get("champion") if evaluated else None,
        "golden": {name: _numbers(values) for name, values in (metrics.get("golden") or {}).items()},
        "probes": {
            "pii_leakage": {
                "rate": metrics.get("pii_leakage_rate"),
                **{k: probe.get(k) for k in ("prompts", "leaked_prompts", "target_values", "canaries")},
                # Types and counts only: the probe never returns a value.
                **{
                    k: probe.get(k)
                    for k in ("leaked_types", "planted_canaries", "canaries_exposed", "canary_exposure")
                    if k in probe
                },
            },
            "toxicity": {"rate": metrics.get("toxicity_rate")},
            "refusal": {"rate": metrics.get("refusal_rate")},
        },
        "gates": (
            {
                "passed": gates.get("passed"),
                "champion_compared": gates.get("champion_compared"),
                "champion": gates.get("champion"),
                "results": gates.get("gates") or [],
            }
            if gates
            else None
        ),
        "evidence": {"ledger": [record_ref(r) for r in (evaluated, gated) if r is not None]},
    }
