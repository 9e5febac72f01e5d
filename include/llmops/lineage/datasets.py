"""Datasets and facets of OpenLineage events: schema, data source, version, governance tags,
statistics, column lineage, data-quality assertions (contracts and the GX suite) and the llmops
PII facet. The OpenLineage client is imported inside each function (when an event is built).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmops.lineage.naming import lake_location, location_uri

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec


def schema_facet(columns: list[dict[str, Any]] | list[str]) -> Any:
    """``schema`` from a manifest's ``schema`` (``[{"name", "type"}]``) or from bare column names."""
    from openlineage.client.facet_v2 import schema_dataset

    from llmops.lineage.facets import PRODUCER

    fields = []
    for position, column in enumerate(columns, start=1):
        name, kind = (column["name"], column.get("type")) if isinstance(column, dict) else (column, None)
        fields.append(
            schema_dataset.SchemaDatasetFacetFields(name=name, type=kind, ordinal_position=position)
        )
    return schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER)


def datasource_facet(namespace: str, name: str) -> Any:
    from openlineage.client.facet_v2 import datasource_dataset

    from llmops.lineage.facets import PRODUCER

    return datasource_dataset.DatasourceDatasetFacet(
        name=namespace, uri=location_uri(namespace, name), producer=PRODUCER
    )


def version_facet(version: str) -> Any:
    from openlineage.client.facet_v2 import dataset_version_dataset

    from llmops.lineage.facets import PRODUCER

    return dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(version), producer=PRODUCER)


def governance_tags(governance: dict[str, Any] | None) -> Any:
    """Governance tags of a source (classification, lawful basis, purposes, retention) as ``tags``."""
    from openlineage.client.facet_v2 import tags_dataset

    from llmops.lineage.facets import PRODUCER

    if not governance:
        return None
    tags = []
    for key in ("classification", "lawful_basis", "retention_days", "data_owner"):
        if governance.get(key) is not None:
            tags.append(
                tags_dataset.TagsDatasetFacetFields(key=key, value=str(governance[key]), source="llmops")
            )
    for purpose in governance.get("purposes") or []:
        tags.append(tags_dataset.TagsDatasetFacetFields(key="purpose", value=str(purpose), source="llmops"))
    return tags_dataset.TagsDatasetFacet(tags=tags, producer=PRODUCER)


def output_statistics(rows: int | None, files: int | None = None) -> Any:
    from openlineage.client.facet_v2 import output_statistics_output_dataset as stats

    from llmops.lineage.facets import PRODUCER

    return stats.OutputStatisticsOutputDatasetFacet(rowCount=rows, fileCount=files, producer=PRODUCER)


def input_dataset(
    namespace: str,
    name: str,
    facets: dict[str, Any] | None = None,
    input_facets: dict[str, Any] | None = None,
) -> Any:
    from openlineage.client.event_v2 import InputDataset

    return InputDataset(
        namespace=namespace,
        name=name,
        facets={k: v for k, v in (facets or {}).items() if v is not None},
        inputFacets={k: v for k, v in (input_facets or {}).items() if v is not None},
    )


def output_dataset(
    namespace: str,
    name: str,
    facets: dict[str, Any] | None = None,
    output_facets: dict[str, Any] | None = None,
) -> Any:
    from openlineage.client.event_v2 import OutputDataset

    return OutputDataset(
        namespace=namespace,
        name=name,
        facets={k: v for k, v in (facets or {}).items() if v is not None},
        outputFacets={k: v for k, v in (output_facets or {}).items() if v is not None},
    )


def snapshot_facets(uri: str, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Dataset facets of one lake snapshot: schema, data source, version (the snapshot id)."""
    namespace, name = lake_location(uri)
    manifest = manifest or {}
    return {
        "schema": schema_facet(manifest["schema"]) if manifest.get("schema") else None,
        "dataSource": datasource_facet(namespace, name),
        "version": version_facet(manifest["snapshot_id"]) if manifest.get("snapshot_id") else None,
    }


def snapshot_input(
    uri: str, manifest: dict[str, Any] | None, input_facets: dict[str, Any] | None = None
) -> Any:
    return input_dataset(*lake_location(uri), snapshot_facets(uri, manifest), input_facets)


def snapshot_output(uri: str, manifest: dict[str, Any] | None, facets: dict[str, Any] | None = None) -> Any:
    manifest = manifest or {}
    stats = (
        output_statistics(manifest.get("row_count"), len(manifest.get("files") or []) or None)
        if manifest.get("row_count") is not None
        else None
    )
    return output_dataset(
        *lake_location(uri), {**snapshot_facets(uri, manifest), **(facets or {})}, {"outputStatistics": stats}
    )


def column_field(
    dataset: Any, column: str, kind: str, subtype: str, description: str, masking: bool = False
) -> Any:
    from openlineage.client.facet_v2 import column_lineage_dataset as cl

    return cl.InputField(
        namespace=dataset.namespace,
        name=dataset.name,
        field=column,
        transformations=[
            cl.Transformation(type=kind, subtype=subtype, description=description, masking=masking)
        ],
    )


def column_lineage_facet(
    mapping: dict[str, list[Any]],
    dataset_level: list[Any] | None = None,
    descriptions: dict[str, str] | None = None,
) -> Any:
    """``columnLineage``: output column -> input fields (each with its 1-2-0 transformations).

    The deprecated field-level ``transformationType`` is set as well (``MASKED`` when any input
    field's transformation masks, else ``IDENTITY``), for consumers that only read that.
    """
    from openlineage.client.facet_v2 import column_lineage_dataset as cl

    from llmops.lineage.facets import PRODUCER

    fields = {}
    for column, inputs in mapping.items():
        if not inputs:
            continue
        masked = any(t.masking for i in inputs for t in (i.transformations or []))
        identity = all(t.subtype == "IDENTITY" for i in inputs for t in (i.transformations or []))
        fields[column] = cl.Fields(
            inputFields=inputs,
            transformationDescription=(descriptions or {}).get(column),
            transformationType="MASKED" if masked else ("IDENTITY" if identity else None),
        )
    return cl.ColumnLineageDatasetFacet(fields=fields, dataset=dataset_level or [], producer=PRODUCER)


def run_facet(
    spec: PipelineSpec,
    step: str,
    airflow: dict[str, Any],
    snapshots: dict[str, list[str]] | None = None,
    mlflow: dict[str, str] | None = None,
    model: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ``llmops`` run facet, keyed for ``additional_run_facets``."""
    from llmops.lineage.facets import PRODUCER, RUN_FACET, LlmopsRunFacet
    from llmops.specs import spec_hash

    return {
        RUN_FACET: LlmopsRunFacet(
            pipeline=spec.name,
            step=step,
            airflow={k: v for k, v in airflow.items() if v is not None},
            specHash=spec_hash(spec),
            snapshots={k: [s for s in v if s] for k, v in (snapshots or {}).items() if v} or None,
            mlflow=mlflow,
            model=model,
            producer=PRODUCER,
        )
    }


# --------------------------------------------------------------------------- data-quality facets


def assertion(assertion: str, success: bool, **kwargs: Any) -> Any:
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

    return dq.Assertion(
        assertion=assertion,
        success=bool(success),
        params=None,  # not {}: nothing assertion-specific to add
        **{k: (str(v) if k in ("expected", "actual") else v) for k, v in kwargs.items() if v is not None},
    )


def contract_assertions(source: Any, outcome: dict[str, Any]) -> list[Any]:
    """Assertions for one source's data contract: every declared rule, with its violation count."""
    contract = getattr(source, "contract", None)
    if contract is None:
        return []
    counts = outcome.get("rule_counts") or {}
    out = [
        assertion(
            "contract.columns_present",
            not outcome.get("missing_columns"),
            severity="error",
            expected=len(outcome.get("expected_columns") or []),
            actual=len(outcome.get("expected_columns") or []) - len(outcome.get("missing_columns") or []),
        )
    ]
    for column, rule in contract.columns.items():
        declared = {
            "nullable": not rule.nullable,
            "type": rule.type != "string",
            "allowed_values": rule.allowed_values is not None,
            "pattern": rule.pattern is not None,
            "max_length": rule.max_length is not None,
            "unique": rule.unique,
        }
        for key, on in declared.items():
            if not on:
                continue
            violations = int((counts.get(key) or {}).get(column, 0))
            out.append(
                assertion(
                    f"contract.{key}",
                    violations == 0,
                    column=column,
                    # Row rules quarantine the rows; uniqueness (a table rule) fails the run.
                    severity="error" if key == "unique" else "warn",
                    expected=rule.type
                    if key == "type"
                    else (rule.max_length if key == "max_length" else None),
                    actual=violations,
                    description=f"rows violating '{key}' (row rules quarantine those rows)",
                )
            )
    if contract.min_rows:
        rows = int(outcome.get("rows") or 0)
        out.append(
            assertion(
                "contract.min_rows",
                rows >= contract.min_rows,
                severity="error",
                expected=contract.min_rows,
                actual=rows,
            )
        )
    freshness = outcome.get("freshness")
    if freshness:
        age = freshness.get("newest_age_hours")
        out.append(
            assertion(
                "contract.freshness",
                age is not None and age <= freshness["max_age_hours"],
                column=freshness.get("column"),
                severity="error",
                expected=freshness["max_age_hours"],
                actual=age,
            )
        )
    if not contract.allow_extra_columns:
        out.append(
            assertion("contract.no_extra_columns", not outcome.get("unexpected_columns"), severity="error")
        )
    return out


_BOUNDS = ("min_value", "max_value", "value", "mostly")


def suite_assertions(validation: dict[str, Any]) -> list[Any]:
    """Assertions for the GX suite's results (sanitised: counts and configured bounds, no samples)."""
    out = []
    suite = validation.get("suite")
    for result in validation.get("results") or []:
        kwargs = result.get("kwargs") or {}
        observed = (result.get("result") or {}).get("unexpected_count")
        if observed is None:
            value = (result.get("result") or {}).get("observed_value")
            observed = value if isinstance(value, int | float) and not isinstance(value, bool) else None
        bounds = {k: kwargs[k] for k in _BOUNDS if isinstance(kwargs.get(k), int | float)}
        out.append(
            assertion(
                result["expectation_type"],
                result.get("success") and not result.get("exception"),
                column=kwargs.get("column") if isinstance(kwargs.get("column"), str) else None,
                severity="error" if result.get("severity") == "blocking" else "warn",
                name=f"{suite}:{result['expectation_type']}" if suite else None,
                expected=", ".join(f"{k}={v}" for k, v in bounds.items()) or None,
                actual=observed,
            )
        )
    return out


def dq_facet(assertions: list[Any]) -> Any:
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

    from llmops.lineage.facets import PRODUCER

    return (
        dq.DataQualityAssertionsDatasetFacet(assertions=assertions, producer=PRODUCER) if assertions else None
    )


# --------------------------------------------------------------------------------------- pii facet


def pii_facet(privacy: dict[str, Any], residual: dict[str, int] | None, policy: Any = None) -> Any:
    """``llmops_pii`` from a PrivacyReport's ``to_dict()``: types with counts, actions, justifications."""
    from llmops.lineage.facets import PRODUCER, LlmopsPiiDatasetFacet

    types = [
        {
            "type": pii_type,
            "count": sum(int(n) for n in actions.values()),
            "actions": {a: int(n) for a, n in actions.items()},
        }
        for pii_type, actions in sorted((privacy.get("counts_by_type_action") or {}).items())
    ]
    counts = privacy.get("counts_by_column") or {}
    detected = privacy.get("column_types") or {}
    allowed = privacy.get("allowed_columns") or {}
    columns = []
    for column, action in sorted((privacy.get("column_actions") or {}).items()):
        entry: dict[str, Any] = {"column": column, "action": action}
        if detected.get(column):
            entry["detectedType"] = detected[column]
        if action in ("mask", "pseudonymise"):
            entry["replacements"] = int(counts.get(column, 0))
        if action == "allow":
            entry["justification"] = allowed.get(column) or ""
        columns.append(entry)
    free_text = None
    if privacy.get("free_text_columns"):
        free_text = {
            "columns": list(privacy["free_text_columns"]),
            "actions": dict(sorted((privacy.get("free_text_actions") or {}).items())),
        }
    return LlmopsPiiDatasetFacet(
        rowsScanned=int(privacy.get("rows_scanned") or 0),
        totalReplacements=int(privacy.get("total_replacements") or 0),
        typesFound=types,
        columns=columns,
        freeText=free_text,
        residual={k: int(v) for k, v in (residual or {}).items()},
        producer=PRODUCER,
    )
