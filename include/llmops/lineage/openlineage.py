"""OpenLineage lineage of the llmops steps: datasets, facets, and the events that carry them.

The Airflow OpenLineage provider emits START, COMPLETE and FAIL for every task, but our ``@task``
functions do the real work themselves, so the provider alone sees no datasets. Each step therefore
calls one ``emit_*`` function at its end. It builds the step's input and output datasets with their
facets and emits them through the provider's public API,
``airflow.providers.openlineage.api.emit_dataset_lineage``: a RUNNING event of the task's own
OpenLineage run (the run id is the provider's ``lineage_run_id(ti)``, the one its START/COMPLETE
events carry), sent by the provider's configured client (``get_openlineage_listener().adapter``),
so lineage viewers merge it with the provider's events. The provider's hook-lineage collector was
not used: it carries Airflow assets (URI schemes it has converters for) and no dataset or run
facets, while we need schema, data-quality, PII and column-lineage facets and ``mlflow://`` names.

Naming: :mod:`llmops.lineage.naming`. Datasets and facets: :mod:`llmops.lineage.datasets`. What
each step contributes: :mod:`llmops.lineage.steps`. This module emits.

Facets: ``schema`` (snapshot manifests), ``dataSource``, ``version`` (snapshot id / model
version), ``tags`` (governance), ``outputStatistics``, ``dataQualityAssertions`` (contracts and the
GX suite, from the validate step's ledger payload), ``columnLineage`` (transformed columns; masked
and pseudonymised ones with ``masking: true``), ``llmops_pii`` (custom: PII types and counts,
actions, justifications; never values) and the ``llmops`` run facet (custom: Airflow run, spec,
snapshots, MLflow run, model version).

Emission never fails a task: with OpenLineage disabled, outside a running task, or when building
or sending the event fails, it logs and returns. This module imports only the standard library at
module level; the OpenLineage client and the provider are imported when an event is built.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from llmops.lake import CURATED_DATASET
from llmops.lineage.steps import (
    StepLineage,
    build_commit,
    build_curate,
    build_extract,
    build_prepare_training_data,
    build_register,
    build_train,
    build_validate,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)


def is_active() -> bool:
    """Whether the provider is enabled and its listener (with the configured client) is available."""
    try:
        from airflow.providers.openlineage.api import is_openlineage_active

        return bool(is_openlineage_active())
    except Exception:  # provider missing or misconfigured
        return False


def _task_instance() -> Any:
    try:
        from airflow.sdk import get_current_context

        return get_current_context()["ti"]
    except Exception:
        return None


def _airflow(ti: Any) -> dict[str, Any]:
    return {
        "dagId": ti.dag_id,
        "taskId": ti.task_id,
        "runId": ti.run_id,
        "mapIndex": ti.map_index if ti.map_index is not None and ti.map_index >= 0 else None,
        "tryNumber": ti.try_number,
    }


def emit(lineage: StepLineage, ti: Any) -> None:
    """Send a step's lineage as a RUNNING event of the task's OpenLineage run (the provider's API)."""
    from airflow.providers.openlineage.api import emit_dataset_lineage

    emit_dataset_lineage(
        inputs=lineage.inputs,
        outputs=lineage.outputs,
        task_instance=ti,
        additional_run_facets=lineage.run_facets,
        additional_job_facets=lineage.job_facets,
    )


def _never_fails(build: Callable[..., StepLineage | None]) -> Callable[..., None]:
    """Turn a builder into an emitter that never raises: lineage must not fail the task."""

    @functools.wraps(build)
    def emitter(*args: Any, **kwargs: Any) -> None:
        try:
            if not is_active():
                log.debug("OpenLineage is not active: no lineage for %s", build.__name__)
                return
            ti = _task_instance()
            if ti is None:
                log.debug("not in a running Airflow task: no lineage for %s", build.__name__)
                return
            lineage = build(_airflow(ti), *args, **kwargs)
            if lineage is not None and (lineage.inputs or lineage.outputs):
                emit(lineage, ti)
        except Exception as exc:
            from llmops.errors import safe_error_text

            log.warning(
                "OpenLineage: lineage of %s was not emitted (%s); the task goes on",
                build.__name__,
                safe_error_text(exc),
            )
            log.debug("OpenLineage emission failure", exc_info=True)

    return emitter


def _snapshot(zone: str, pipeline: str, dataset: str, snapshot_id: str) -> tuple[str, dict[str, Any]]:
    from llmops import snapshots
    from llmops.settings import get_settings

    ref = snapshots.snapshot_ref(get_settings().lake_root, zone, pipeline, dataset, snapshot_id)
    return ref.uri, snapshots.read_manifest(ref)


def _tracking_uri() -> str:
    from llmops.settings import get_settings

    return get_settings().mlflow_tracking_uri


@_never_fails
def emit_extract(
    airflow: dict[str, Any], spec: PipelineSpec, source: Any, meta: dict[str, Any]
) -> StepLineage:
    """After ``extract_partition``: the source read by this partition."""
    return build_extract(spec, source, meta, airflow)


@_never_fails
def emit_commit(airflow: dict[str, Any], spec: PipelineSpec, committed: list[dict[str, Any]]) -> StepLineage:
    """After ``commit_raw``: sources -> raw snapshots (``committed``: what commit_raw returns)."""
    by_name = {s.name: s for s in spec.sources}
    items = [
        (by_name[c["source"]], *_snapshot("raw", spec.name, c["source"], c["snapshot_id"])) for c in committed
    ]
    return build_commit(spec, items, airflow)


@_never_fails
def emit_validate(
    airflow: dict[str, Any], spec: PipelineSpec, raw: list[dict[str, Any]], payload: dict[str, Any]
) -> StepLineage:
    """After ``validate`` recorded its result: raw -> validated + quarantine, with assertions."""
    by_name = {s.name: s for s in spec.sources}
    items = [(by_name[r["source"]], *_snapshot("raw", spec.name, r["source"], r["snapshot_id"])) for r in raw]
    return build_validate(
        spec,
        items,
        _snapshot("raw", spec.name, "validated", payload["validated_snapshot_id"]),
        _snapshot("quarantine", spec.name, "rows", payload["quarantine_snapshot_id"]),
        payload,
        airflow,
    )


@_never_fails
def emit_curate(airflow: dict[str, Any], spec: PipelineSpec, payload: dict[str, Any]) -> StepLineage:
    """After ``curate``: validated -> curated (``payload``: its pii.handled ledger payload)."""
    return build_curate(
        spec,
        _snapshot("raw", spec.name, "validated", payload["validated_snapshot_id"]),
        _snapshot("curated", spec.name, CURATED_DATASET, payload["curated_snapshot_id"]),
        payload,
        airflow,
    )


@_never_fails
def emit_prepare_training_data(
    airflow: dict[str, Any], spec: PipelineSpec, result: dict[str, Any]
) -> StepLineage:
    """After ``prepare_training_data``: curated -> SFT dataset."""
    stages = {s.name: s for s in spec.training.preceding_stages}
    return build_prepare_training_data(
        spec,
        _snapshot("curated", spec.name, CURATED_DATASET, result["curated_snapshot_id"]),
        _snapshot("sft", spec.name, spec.training.dataset_name, result["sft_snapshot_id"]),
        airflow,
        [
            (stages[s["stage"]], _snapshot("sft", spec.name, s["dataset"], s["snapshot_id"]))
            for s in result.get("stages") or []
            if s["stage"] in stages
        ],
    )


@_never_fails
def emit_train(airflow: dict[str, Any], spec: PipelineSpec, trained: dict[str, Any]) -> StepLineage:
    """After ``collect_train``: SFT dataset + base model -> MLflow run + adapter."""
    return build_train(
        spec,
        _snapshot("sft", spec.name, spec.training.dataset_name, trained["sft_snapshot_id"]),
        trained,
        _tracking_uri(),
        airflow,
    )


@_never_fails
def emit_stage(
    airflow: dict[str, Any],
    spec: PipelineSpec,
    stage: dict[str, Any],
    curated_id: str,
    previous: list[dict[str, Any]] | None = None,
) -> StepLineage:
    """After ``collect_stage_<name>``: the stage's dataset + its base -> MLflow run + merged model."""
    return build_train(
        spec,
        _snapshot("sft", spec.name, stage["dataset"], stage["snapshot_id"]),
        {
            "base_model_dir": stage["base_model_dir"],
            "adapter_dir": stage["merged_model_dir"],
            "mlflow_run_id": stage["mlflow_run_id"],
            "curated_snapshot_id": curated_id,
            "chain": previous or [],
        },
        _tracking_uri(),
        airflow,
        step=f"train_stage_{stage['stage']}",
    )


@_never_fails
def emit_register(
    airflow: dict[str, Any], spec: PipelineSpec, trained: dict[str, Any], registered: dict[str, Any]
) -> StepLineage:
    """After ``register``: MLflow run -> registered model version."""
    return build_register(spec, trained, registered, _tracking_uri(), airflow)
