"""What each llmops step adds to lineage: its input and output datasets with their facets, built
from the step's own result (never from raw rows). Used by :mod:`llmops.lineage.openlineage`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmops.lake import SOURCE_COLUMN
from llmops.lineage.datasets import (
    column_field,
    column_lineage_facet,
    contract_assertions,
    datasource_facet,
    dq_facet,
    governance_tags,
    input_dataset,
    output_dataset,
    pii_facet,
    run_facet,
    schema_facet,
    snapshot_input,
    snapshot_output,
    suite_assertions,
    version_facet,
)
from llmops.lineage.naming import lake_location, mlflow_namespace

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec
    from llmops.specs.schema import MethodData


@dataclass
class StepLineage:
    """One step's lineage: what its RUNNING event adds to the task's OpenLineage run."""

    step: str
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    run_facets: dict[str, Any] = field(default_factory=dict)
    job_facets: dict[str, Any] = field(default_factory=dict)

    def to_event(self, run_id: str, job_namespace: str, job_name: str, event_time: str | None = None) -> Any:
        """The event as the provider would send it, less its Airflow facets (for tests and debugging)."""
        from datetime import UTC, datetime

        from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

        from llmops.lineage.facets import PRODUCER

        return RunEvent(
            eventType=RunState.RUNNING,
            eventTime=event_time or datetime.now(UTC).isoformat(),
            run=Run(runId=run_id, facets=dict(self.run_facets)),
            job=Job(namespace=job_namespace, name=job_name, facets=dict(self.job_facets)),
            inputs=list(self.inputs),
            outputs=list(self.outputs),
            producer=PRODUCER,
        )


def source_location(source: Any, meta: dict[str, Any] | None = None, url: Any = None) -> tuple[str, str]:
    """Where a spec source reads from, as ``(namespace, name)``: its kind says."""
    from llmops.ingest.kinds import behaviour_of

    return behaviour_of(source).location(source, meta, url)


def source_dataset(
    source: Any,
    meta: dict[str, Any] | None = None,
    url: Any = None,
    input_facets: dict[str, Any] | None = None,
) -> Any:
    namespace, name = source_location(source, meta, url)
    facets = {
        "schema": schema_facet(list(source.columns)),
        "dataSource": datasource_facet(namespace, name),
        "tags": governance_tags(source.governance.model_dump()),
    }
    return input_dataset(namespace, name, facets, input_facets)


def build_extract(
    spec: PipelineSpec, source: Any, meta: dict[str, Any], airflow: dict[str, Any], url: Any = None
) -> StepLineage:
    """extract: the source partition read (its query as the ``sql`` job facet for SQL sources)."""
    from openlineage.client.facet_v2 import sql_job

    from llmops.lineage.facets import PRODUCER

    job_facets = {}
    if meta.get("query"):
        job_facets["sql"] = sql_job.SQLJobFacet(
            query=str(meta["query"]), dialect=meta.get("dialect"), producer=PRODUCER
        )
    return StepLineage(
        "extract",
        inputs=[source_dataset(source, meta, url)],
        run_facets=run_facet(spec, "extract", airflow),
        job_facets=job_facets,
    )


def build_commit(
    spec: PipelineSpec,
    committed: list[tuple[Any, str, dict[str, Any]]],
    airflow: dict[str, Any],
    urls: dict[str, Any] | None = None,
) -> StepLineage:
    """commit: each source -> its raw snapshot. ``committed``: ``(source, snapshot uri, manifest)``."""
    inputs, outputs = [], []
    for source, uri, manifest in committed:
        meta = manifest.get("source") or {}
        inputs.append(source_dataset(source, meta, (urls or {}).get(source.name)))
        outputs.append(
            snapshot_output(uri, manifest, {"tags": governance_tags(source.governance.model_dump())})
        )
    ids = [m.get("snapshot_id") for _, _, m in committed]
    return StepLineage("commit", inputs, outputs, run_facet(spec, "commit", airflow, {"raw": ids}))


def _normalised(spec: PipelineSpec, column: str, kind: str | None) -> str | None:
    rules = spec.dataset.normalization
    steps = []
    text = kind in (None, "string", "large_string")
    if text and rules.trim:
        steps.append("trimmed")
    if text and rules.unicode_nfc:
        steps.append("NFC-normalised")
    if column in rules.lowercase_columns:
        steps.append("lowercased")
    cast = dict(rules.casts).get(column)
    if cast:
        steps.append(f"cast to {cast}")
    return ", ".join(steps) or None


def build_validate(
    spec: PipelineSpec,
    raw: list[tuple[Any, str, dict[str, Any]]],
    validated: tuple[str, dict[str, Any]],
    quarantine: tuple[str, dict[str, Any]],
    payload: dict[str, Any],
    airflow: dict[str, Any],
) -> StepLineage:
    """validate: raw snapshots (with contract and suite assertions) -> validated + quarantine."""
    contracts = {c.get("source"): c for c in payload.get("contracts") or []}
    suite = suite_assertions(payload.get("validation") or {})
    inputs = []
    for source, uri, manifest in raw:
        assertions = contract_assertions(source, contracts.get(source.name) or {}) + suite
        inputs.append(snapshot_input(uri, manifest, {"dataQualityAssertions": dq_facet(assertions)}))
    v_uri, v_manifest = validated
    key = spec.dataset.key
    mapping: dict[str, list[Any]] = {}
    descriptions: dict[str, str] = {}
    for column in v_manifest.get("schema") or []:
        name = column["name"]
        if name == SOURCE_COLUMN:
            continue
        what = _normalised(spec, name, column.get("type"))
        for (source, _, _), dataset in zip(raw, inputs, strict=True):
            if name in source.columns:
                mapping.setdefault(name, []).append(
                    column_field(
                        dataset,
                        name,
                        "DIRECT",
                        "TRANSFORMATION" if what else "IDENTITY",
                        what or "as extracted",
                    )
                )
        if what:
            descriptions[name] = what
    filtered = [
        column_field(
            d,
            key,
            "INDIRECT",
            "FILTER",
            "rows failing contracts, expectations or casts quarantined; duplicates removed",
        )
        for (source, _, _), d in zip(raw, inputs, strict=True)
        if key in source.columns
    ]
    outputs = [
        snapshot_output(
            v_uri, v_manifest, {"columnLineage": column_lineage_facet(mapping, filtered, descriptions)}
        ),
        snapshot_output(*quarantine),
    ]
    ids = {
        "raw": [m.get("snapshot_id") for _, _, m in raw],
        "validated": [v_manifest.get("snapshot_id")],
        "quarantine": [quarantine[1].get("snapshot_id")],
    }
    return StepLineage("validate", inputs, outputs, run_facet(spec, "validate", airflow, ids))


def build_curate(
    spec: PipelineSpec,
    validated: tuple[str, dict[str, Any]],
    curated: tuple[str, dict[str, Any]],
    payload: dict[str, Any],
    airflow: dict[str, Any],
) -> StepLineage:
    """curate: validated -> curated, with the ``llmops_pii`` facet and masking column lineage."""
    from llmops.lineage.facets import PII_FACET

    v_uri, v_manifest = validated
    c_uri, c_manifest = curated
    source = snapshot_input(v_uri, v_manifest)
    privacy = payload.get("privacy") or {}
    actions = privacy.get("column_actions") or {}
    free_text = set(privacy.get("free_text_columns") or [])
    redacted_types = sorted(t for t, a in (privacy.get("free_text_actions") or {}).items() if a != "allow")
    validated_columns = {c["name"] for c in v_manifest.get("schema") or []}
    mapping: dict[str, list[Any]] = {}
    descriptions: dict[str, str] = {}
    for column in c_manifest.get("schema") or []:
        name = column["name"]
        if name not in validated_columns or name == SOURCE_COLUMN:
            continue
        action = actions.get(name)
        if action == "pseudonymise":
            how = (
                "pseudonymised: each value replaced by a keyed token (HMAC), the original is not recoverable"
            )
            item = column_field(source, name, "DIRECT", "TRANSFORMATION", how, masking=True)
        elif action == "mask":
            how = "masked: each value replaced by the mask of its PII type"
            item = column_field(source, name, "DIRECT", "TRANSFORMATION", how, masking=True)
        elif name in free_text and action != "allow":
            how = f"free text with PII spans masked or pseudonymised ({', '.join(redacted_types)})"
            item = column_field(source, name, "DIRECT", "TRANSFORMATION", how, masking=True)
        else:
            how = "kept (PII allowed: see llmops_pii justification)" if action == "allow" else "unchanged"
            item = column_field(source, name, "DIRECT", "IDENTITY", how)
        mapping[name] = [item]
        descriptions[name] = how
    facets = {
        "columnLineage": column_lineage_facet(mapping, descriptions=descriptions),
        PII_FACET: pii_facet(privacy, payload.get("residual_pii")),
    }
    ids = {"validated": [v_manifest.get("snapshot_id")], "curated": [c_manifest.get("snapshot_id")]}
    return StepLineage(
        "curate",
        [source],
        [snapshot_output(c_uri, c_manifest, facets)],
        run_facet(spec, "curate", airflow, ids),
    )


def _method_column_lineage(source: Any, stage: MethodData, key: str) -> tuple[dict[str, Any], list[Any]]:
    """Which curated columns feed each field of a method's training rows, and which filter rows."""
    from llmops.specs.schema import template_fields

    used = template_fields(stage.prompt_template) if stage.prompt_template else []
    mapping: dict[str, list[Any]] = {
        "key": [column_field(source, key, "DIRECT", "IDENTITY", "the record key")]
    }
    if used:
        mapping["prompt"] = [
            column_field(source, c, "DIRECT", "TRANSFORMATION", "rendered with the prompt_template")
            for c in dict.fromkeys(used)
        ]
    answers = {
        "completion": stage.completion_column,
        "chosen": stage.chosen_column,
        "rejected": stage.rejected_column,
    }
    for name, column in answers.items():
        if column:
            mapping[name] = [
                column_field(source, column, "DIRECT", "TRANSFORMATION", f"the {name} column, stripped")
            ]
    if stage.text_columns:
        mapping["text"] = [
            column_field(source, c, "DIRECT", "TRANSFORMATION", "joined into one document")
            for c in stage.text_columns
        ]
    mapping["split"] = [
        column_field(
            source, key, "DIRECT", "TRANSFORMATION", "train/validation/test by a seeded hash of the key"
        )
    ]
    required = [c for c in answers.values() if c] or list(stage.text_columns)
    filtered = [
        column_field(source, c, "INDIRECT", "FILTER", "rows breaking the method's data contract skipped")
        for c in required
    ]
    return mapping, filtered


def build_prepare_training_data(
    spec: PipelineSpec,
    curated: tuple[str, dict[str, Any]],
    sft: tuple[str, dict[str, Any]],
    airflow: dict[str, Any],
    stages: list[tuple[MethodData, tuple[str, dict[str, Any]]]] | None = None,
) -> StepLineage:
    """prepare_training_data: curated -> the final stage's training dataset (and each chain stage's)."""
    c_uri, c_manifest = curated
    source = snapshot_input(c_uri, c_manifest)
    outputs = []
    for stage, (uri, manifest) in [*(stages or []), (spec.training, sft)]:
        mapping, filtered = _method_column_lineage(source, stage, spec.dataset.key)
        outputs.append(
            snapshot_output(uri, manifest, {"columnLineage": column_lineage_facet(mapping, filtered)})
        )
    ids = {
        "curated": [c_manifest.get("snapshot_id")],
        "sft": [m.get("snapshot_id") for _, (_, m) in stages or []] + [sft[1].get("snapshot_id")],
    }
    return StepLineage(
        "prepare_training_data", [source], outputs, run_facet(spec, "prepare_training_data", airflow, ids)
    )


def mlflow_run_dataset(tracking_uri: str, run_id: str, output: bool = True) -> Any:
    namespace, name = mlflow_namespace(tracking_uri), f"runs/{run_id}"
    facets = {"dataSource": datasource_facet(namespace, name)}
    return output_dataset(namespace, name, facets) if output else input_dataset(namespace, name, facets)


def _base_version(spec: PipelineSpec, trained: dict[str, Any]) -> str:
    """The base a job trained on: the spec's model, or the previous chain stage's merged model."""
    chain = trained.get("chain") or []
    merged = chain[-1].get("merged_model_sha256") if chain else None
    return f"merged:{merged}" if merged else spec.training.base_model.uri


def build_train(
    spec: PipelineSpec,
    sft: tuple[str, dict[str, Any]],
    trained: dict[str, Any],
    tracking_uri: str,
    airflow: dict[str, Any],
    step: str = "train",
) -> StepLineage:
    """train (collect_train): SFT dataset + base model -> MLflow run + adapter.

    A chain stage (``step`` "train_stage_<name>") has the merged model as its adapter output.

    Recorded by the task that collects the job's result, so training in a Kubernetes pod (which
    reports nothing itself) gets the same lineage as a local run.
    """
    s_uri, s_manifest = sft
    base_ns, base_name = lake_location(trained["base_model_dir"])
    base = input_dataset(
        base_ns,
        base_name,
        {
            "dataSource": datasource_facet(base_ns, base_name),
            "version": version_facet(_base_version(spec, trained)),
        },
    )
    adapter_ns, adapter_name = lake_location(trained["adapter_dir"])
    adapter = output_dataset(
        adapter_ns, adapter_name, {"dataSource": datasource_facet(adapter_ns, adapter_name)}
    )
    namespace = mlflow_namespace(tracking_uri)
    mlflow = {
        "namespace": namespace,
        "experimentName": spec.registry.model_name,
        "runId": trained["mlflow_run_id"],
    }
    ids = {"curated": [trained.get("curated_snapshot_id")], "sft": [s_manifest.get("snapshot_id")]}
    return StepLineage(
        step,
        [snapshot_input(s_uri, s_manifest), base],
        [mlflow_run_dataset(tracking_uri, trained["mlflow_run_id"]), adapter],
        run_facet(spec, step, airflow, ids, mlflow=mlflow),
    )


def build_register(
    spec: PipelineSpec,
    trained: dict[str, Any],
    registered: dict[str, Any],
    tracking_uri: str,
    airflow: dict[str, Any],
) -> StepLineage:
    """register: MLflow run -> registered model version (``models/<name>/<version>``)."""
    namespace = mlflow_namespace(tracking_uri)
    name, version = str(registered["model_name"]), str(registered["version"])
    model_name = f"models/{name}/{version}"
    output = output_dataset(
        namespace,
        model_name,
        {"dataSource": datasource_facet(namespace, model_name), "version": version_facet(version)},
    )
    mlflow = {
        "namespace": namespace,
        "experimentName": spec.registry.model_name,
        "runId": trained["mlflow_run_id"],
    }
    model = {
        "name": name,
        "version": version,
        "uri": registered.get("model_uri"),
        "alias": registered.get("alias"),
    }
    ids = {"curated": [trained.get("curated_snapshot_id")], "sft": [trained.get("sft_snapshot_id")]}
    return StepLineage(
        "register",
        [mlflow_run_dataset(tracking_uri, trained["mlflow_run_id"], output=False)],
        [output],
        run_facet(spec, "register", airflow, ids, mlflow=mlflow, model={k: v for k, v in model.items() if v}),
    )
