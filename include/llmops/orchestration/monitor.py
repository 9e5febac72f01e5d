"""Monitoring steps: drift of fresh data against the champion's training data, champion quality,
alerts and the retraining decision.

Each function is the body of one task of the `<pipeline>__monitor` DAG, a plain function of
small JSON-able arguments (the pipeline may also be given as a spec object, for tests and
what-if runs). Numbers go to the monitoring time series (`llmops.monitoring.store`) and the
ledger; what leaves these functions (XCom, ledger, alerts) holds ids, counts and measures only,
never rows or text from the data.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.errors import PermanentError
from llmops.ledger import record
from llmops.ledger.events import MonitoringAlerted, MonitoringMeasured, RetrainTriggered
from llmops.settings import get_settings
from llmops.specs import PipelineSpec
from llmops.specs.pinned import run_spec

if TYPE_CHECKING:
    from llmops.monitoring.store import Measurement

log = logging.getLogger(__name__)

CHAMPION = "champion"
MAX_BREACHES_IN_TEXT = 8


class MonitoringError(PermanentError, ValueError):
    """Monitoring cannot measure with this spec, model or data: retrying cannot help."""


class ChampionMoved(RuntimeError):
    """The champion alias moved while it was being scored: a retry measures the new one."""


def _spec(pipeline: str | PipelineSpec, run_id: str) -> PipelineSpec:
    """The run's pinned spec (or a spec object given directly)."""
    return pipeline if isinstance(pipeline, PipelineSpec) else run_spec(pipeline, run_id)


def text_columns(spec: PipelineSpec) -> list[str]:
    """The spec's monitored text columns; default: the columns the prompt template uses."""
    if spec.monitoring.text_columns:
        return list(spec.monitoring.text_columns)
    return spec.training.prompt_columns


def resolve_champion(spec: PipelineSpec) -> dict[str, Any] | None:
    """The champion version and the curated snapshot it was trained on; None without a champion."""
    from llmops.registry import mlflow_registry

    name = spec.registry.model_name
    version = mlflow_registry.alias_version(name, CHAMPION)
    if version is None:
        return None
    tags = mlflow_registry.model_version_info(name, version)["tags"]
    curated = tags.get("llmops.curated_snapshot_id")
    if not curated:
        raise MonitoringError(
            f"{name} v{version} (champion) has no tag llmops.curated_snapshot_id: "
            f"its training data is unknown, so there is nothing to compare fresh data with"
        )
    return {
        "model_name": name,
        "version": version,
        "curated_snapshot_id": curated,
        "sft_snapshot_id": tags.get("llmops.sft_snapshot_id"),
    }


def _read(spec: PipelineSpec, snapshot_id: str, role: str) -> tuple[Any, dict[str, Any]]:
    lake = get_settings().lake_root
    ref = snapshots.snapshot_ref(lake, "curated", spec.name, snapshots.CURATED_DATASET, snapshot_id)
    from llmops.governance.integrity import check_snapshot

    try:
        snapshots.read_manifest(ref)
    except snapshots.SnapshotError:
        raise MonitoringError(
            f"the {role} curated snapshot {snapshot_id} of '{spec.name}' is gone (retention or erasure?): "
            f"cannot measure drift against it"
        ) from None
    manifest = check_snapshot(spec, ref)  # drift measured against altered data would mislead
    from llmops.privacy.keys import get_key_ring

    return snapshots.read_snapshot(ref, get_key_ring()), manifest


def _column(table: Any, name: str, snapshot_id: str, role: str) -> list[Any]:
    if name not in table.column_names:
        raise MonitoringError(
            f"column '{name}' (spec.monitoring) is not in the {role} curated snapshot {snapshot_id}"
        )
    return table.column(name).to_pylist()


def _order(key: str) -> str:
    """A stable, data-independent order for sampling rows: the hash of the record key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _quality(
    spec: PipelineSpec, champion: dict[str, Any], reference: Any, current: Any, same: bool
) -> dict[str, Any]:
    """Champion token F1 on fresh labelled rows (keys absent from the reference), or why not."""
    minimum = spec.monitoring.thresholds.min_token_f1
    key = spec.dataset.key
    fresh_keys: set[str] = set()
    if not same:
        known = {str(k) for k in _column(reference, key, champion["curated_snapshot_id"], "reference")}
        fresh_keys = {str(k) for k in _column(current, key, "latest", "current")} - known
    out: dict[str, Any] = {"fresh_rows": len(fresh_keys)}
    if minimum is None:
        return {**out, "status": "skipped", "reason": "no min_token_f1 in spec.monitoring.thresholds"}
    if not fresh_keys:
        return {
            **out,
            "status": "skipped",
            "reason": "no fresh rows: every key of the current snapshot is in the champion's training snapshot",
        }
    training = spec.training
    completion_column = training.reference_column
    if completion_column is None or training.prompt_template is None:
        return {**out, "status": "skipped", "reason": f"method '{training.method}' has no answers to score"}
    fields = training.prompt_columns
    needed = list(dict.fromkeys([key, completion_column, *fields]))
    missing = [c for c in needed if c not in current.column_names]
    if missing:
        raise MonitoringError(f"the current curated snapshot lacks column(s) {', '.join(missing)}")
    rows = [r for r in current.select(needed).to_pylist() if str(r[key]) in fresh_keys]
    rows = [r for r in rows if isinstance(r[completion_column], str) and r[completion_column].strip()]
    rows.sort(key=lambda r: _order(str(r[key])))
    rows = rows[: spec.monitoring.quality_samples]
    if not rows:
        return {**out, "status": "skipped", "reason": "no fresh row has a completion to score against"}

    import mlflow
    import pandas as pd

    from llmops.evaluation.metrics import token_f1
    from llmops.registry import mlflow_registry

    mlflow_registry.configure()
    prompts = [
        training.prompt_template.format(**{k: "" if v is None else str(v) for k, v in r.items()})
        for r in rows
    ]
    model = mlflow.pyfunc.load_model(f"models:/{champion['model_name']}@{CHAMPION}")
    if mlflow_registry.alias_version(champion["model_name"], CHAMPION) != champion["version"]:
        raise ChampionMoved(f"{champion['model_name']}: the champion alias moved during monitoring")
    answers = model.predict(pd.DataFrame({"prompt": prompts}))
    scores = [token_f1(str(a), r[completion_column].strip()) for a, r in zip(answers, rows, strict=True)]
    return {
        **out,
        "status": "measured",
        "samples": len(scores),
        "token_f1": round(sum(scores) / len(scores), 4),
        "min_token_f1": minimum,
    }


def measure(pipeline: str | PipelineSpec, run_id: str) -> dict[str, Any]:
    """Measure drift (and champion quality) of the latest curated snapshot against the champion's.

    Stores every number in the time series, records `monitoring.measured`, and returns a small
    summary: ids, numbers, breach names and the retraining decision. Without a champion there is
    nothing to monitor: the summary says so (``skipped``) and nothing is recorded.
    """
    from llmops.governance.purpose import check_purpose
    from llmops.monitoring.drift import Thresholds, category_drift, text_drift
    from llmops.monitoring.store import Measurement, get_store

    spec = _spec(pipeline, run_id)
    monitoring = spec.monitoring
    champion = resolve_champion(spec)
    if champion is None:
        reason = f"{spec.registry.model_name} has no champion yet: nothing to monitor"
        log.info(reason)
        return {"pipeline": spec.name, "skipped": True, "reason": reason}
    lake = get_settings().lake_root
    reference_id = champion["curated_snapshot_id"]
    current_id = snapshots.get_latest(lake, "curated", spec.name, snapshots.CURATED_DATASET).snapshot_id
    same = current_id == reference_id
    if same:
        log.info(
            "the latest curated snapshot %s is the one %s v%s was trained on: no new data, "
            "measuring anyway (drift is zero by construction)",
            current_id,
            champion["model_name"],
            champion["version"],
        )
    reference, _ = _read(spec, reference_id, "reference")
    current, current_manifest = (reference, None) if same else _read(spec, current_id, "current")
    if current_manifest is not None:
        check_purpose(spec, current_id, current_manifest)

    t = monitoring.thresholds
    thresholds = Thresholds(psi=t.psi, ks=t.ks, oov_rate=t.oov_rate, new_category_share=t.new_category_share)
    measurements: list[Measurement] = [
        Measurement("rows.reference", reference.num_rows),
        Measurement("rows.current", current.num_rows),
    ]
    columns = text_columns(spec)
    for column in columns:
        report = text_drift(
            _column(reference, column, reference_id, "reference"),
            _column(current, column, current_id, "current"),
            thresholds,
        )
        for name, value in report["metrics"].items():
            measurements.append(
                Measurement(
                    f"text.{column}.{name}", value, report["thresholds"][name], name in report["breaches"]
                )
            )
        for side, value in report["mean_chars"].items():
            if value is not None:
                measurements.append(Measurement(f"text.{column}.mean_chars_{side}", value))
    category = monitoring.category_column
    if category:
        report = category_drift(
            _column(reference, category, reference_id, "reference"),
            _column(current, category, current_id, "current"),
            thresholds,
        )
        for name in ("new_category_share", "distribution_psi"):
            measurements.append(
                Measurement(
                    f"category.{category}.{name}",
                    report[name],
                    report["thresholds"][name],
                    name in report["breaches"],
                )
            )
        measurements.append(Measurement(f"category.{category}.new_categories", report["new_categories"]))

    quality = _quality(spec, champion, reference, current, same)
    measurements.append(Measurement("rows.fresh", quality["fresh_rows"]))
    if quality["status"] == "measured":
        measurements.append(
            Measurement(
                "quality.token_f1",
                quality["token_f1"],
                quality["min_token_f1"],
                quality["token_f1"] < quality["min_token_f1"],
            )
        )
        measurements.append(Measurement("quality.samples", quality["samples"]))
    else:
        log.info("champion quality not measured: %s", quality["reason"])

    measured_at = datetime.now(UTC)
    get_store().write(
        pipeline=spec.name,
        run_id=run_id,
        measurements=measurements,
        model_name=champion["model_name"],
        model_version=champion["version"],
        measured_at=measured_at,
    )
    breaches = sorted(m.metric for m in measurements if m.breached)
    retrain = (
        {"dag_id": spec.finetune_dag_id, "conf": {"curated_snapshot_id": current_id}}
        if breaches and monitoring.retrain_on_drift
        else None
    )
    summary = {
        "pipeline": spec.name,
        "skipped": False,
        "model_name": champion["model_name"],
        "model_version": champion["version"],
        "reference_snapshot_id": reference_id,
        "current_snapshot_id": current_id,
        "same_snapshot": same,
        "measured_at": measured_at.isoformat(timespec="seconds"),
        "text_columns": columns,
        "category_column": category,
        "metrics": {m.metric: m.value for m in measurements},
        "thresholds": {m.metric: m.threshold for m in measurements if m.threshold is not None},
        "breaches": breaches,
        "quality": quality,
        "alert": bool(breaches),
        "retrain": retrain,
    }
    record(
        spec,
        MonitoringMeasured(**{k: v for k, v in summary.items() if k not in ("pipeline", "skipped")}),
        f"model/{champion['model_name']}/{champion['version']}",
        run_id,
    )
    if breaches:
        log.warning("%s: %d threshold(s) crossed: %s", spec.name, len(breaches), ", ".join(breaches))
    else:
        log.info("%s: no threshold crossed (%d numbers measured)", spec.name, len(measurements))
    return summary


def _report_link(spec: PipelineSpec) -> str | None:
    """The pipeline's latest audit report (it also shows the monitoring time series)."""
    try:
        latest = storage.join(get_settings().reports_root, spec.name, "LATEST.json")
        return storage.read_json(latest).get("html") if storage.exists(latest) else None
    except Exception:  # a link is a convenience: never fail an alert for it
        return None


def alert_text(summary: dict[str, Any]) -> str:
    breaches = summary["breaches"]
    shown = ", ".join(breaches[:MAX_BREACHES_IN_TEXT]) + (
        f" and {len(breaches) - MAX_BREACHES_IN_TEXT} more" if len(breaches) > MAX_BREACHES_IN_TEXT else ""
    )
    return (
        f"[llmops] {summary['pipeline']}: {len(breaches)} monitoring threshold(s) crossed for "
        f"{summary['model_name']} v{summary['model_version']}: {shown} "
        f"(curated {summary['current_snapshot_id']} vs training data {summary['reference_snapshot_id']})"
        + ("; retraining requested" if summary.get("retrain") else "")
    )


def alert(
    pipeline: str | PipelineSpec,
    summary: dict[str, Any],
    run_id: str,
    *,
    dag_id: str | None = None,
    log_url: str | None = None,
) -> dict[str, Any]:
    """Log the breaches and, when the spec names `alert_conn_id`, post them to that webhook.

    Records `monitoring.alerted` once delivered. A receiver that refuses the alert (4xx:
    `WebhookRejected`, a PermanentError) fails the task at once; an unreachable one fails it after
    a few quick retries (and the task's own retries).
    """
    from llmops.monitoring.alerts import WebhookNotifier

    spec = _spec(pipeline, run_id)
    breaches = list(summary.get("breaches") or [])
    if not breaches:
        return {"alerted": False, "channels": []}
    text = alert_text(summary)
    thresholds = summary.get("thresholds") or {}
    metrics = summary.get("metrics") or {}
    fields = {
        "event": "llmops.monitoring.breach",
        "pipeline": spec.name,
        "model": summary["model_name"],
        "version": summary["model_version"],
        "breaches": [
            {"metric": b, "value": metrics.get(b), "threshold": thresholds.get(b)} for b in breaches
        ],
        "metrics": metrics,
        "reference_snapshot_id": summary["reference_snapshot_id"],
        "current_snapshot_id": summary["current_snapshot_id"],
        "retrain": bool(summary.get("retrain")),
        "report": _report_link(spec),
        "run_id": run_id,
        **({"dag_id": dag_id} if dag_id else {}),
        **({"log_url": log_url} if log_url else {}),
    }
    channels = ["log"]
    delivery: dict[str, Any] | None = None
    conn_id = spec.monitoring.alert_conn_id
    if conn_id:
        notifier = WebhookNotifier(conn_id, text=text, fields=fields)
        delivery = notifier.send(notifier.build_payload())  # logs the alert, then posts it
        channels.append(f"webhook:{conn_id}")
    else:
        log.warning("ALERT %s (no spec.monitoring.alert_conn_id: logged only)", text)
    record(
        spec,
        MonitoringAlerted(
            breaches=breaches,
            channels=channels,
            http_status=(delivery or {}).get("status"),
            attempts=(delivery or {}).get("attempts"),
            current_snapshot_id=summary["current_snapshot_id"],
        ),
        f"model/{summary['model_name']}/{summary['model_version']}",
        run_id,
    )
    return {"alerted": True, "channels": channels, "breaches": breaches}


def record_retrain(
    pipeline: str | PipelineSpec, summary: dict[str, Any], run_id: str, triggered_run_id: str | None
) -> dict[str, Any]:
    """Record that the fine-tune DAG was triggered on the current snapshot (`monitoring.retrain_triggered`)."""
    spec = _spec(pipeline, run_id)
    retrain = summary.get("retrain") or {}
    payload = {
        "dag_id": retrain.get("dag_id", spec.finetune_dag_id),
        "conf": retrain.get("conf"),
        "triggered_run_id": triggered_run_id,
        "breaches": summary.get("breaches") or [],
        "model_name": summary.get("model_name"),
        "model_version": summary.get("model_version"),
    }
    record(spec, RetrainTriggered(**payload), f"dag/{payload['dag_id']}", run_id)
    return payload
