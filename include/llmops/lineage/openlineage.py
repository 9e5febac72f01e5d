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

Naming (https://openlineage.io/docs/spec/naming, through the client's naming helpers):

- SQL sources: ``postgres://host:port`` / ``mysql://host:port`` with ``db.schema.table`` /
  ``db.table``; SQLite ``sqlite://<file path>`` with the table name;
- REST sources: ``https://host[:port]`` with the endpoint path;
- file sources and the lake: ``s3://bucket`` with the key prefix, or ``file`` with the absolute
  path; a lake dataset is one snapshot folder (``<lake>/<zone>/<pipeline>/<dataset>/<snapshot id>``);
- MLflow: ``mlflow://<tracking host>`` with ``runs/<run id>`` and ``models/<name>/<version>``.

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
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmops.snapshots import CURATED_DATASET, SOURCE_COLUMN

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmops.specs import PipelineSpec
    from llmops.specs.schema import MethodData

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- naming


def lake_location(uri: str) -> tuple[str, str]:
    """A lake or object-store location as an OpenLineage ``(namespace, name)``."""
    from openlineage.client.naming.dataset import S3, LocalFileSystem

    if uri.startswith(("s3://", "s3a://")):
        bucket, _, key = uri.split("://", 1)[1].partition("/")
        naming: Any = S3(bucket_name=bucket, object_key=key.strip("/") or "/")
    else:
        path = urlsplit(uri).path if uri.startswith("file://") else uri
        naming = LocalFileSystem(path=os.path.abspath(path))
    return naming.get_namespace(), naming.get_name()


def location_uri(namespace: str, name: str) -> str:
    """The URI a dataset's ``dataSource`` facet names: the full location."""
    if namespace == "file":
        return f"file://{name}"
    if namespace.startswith(("s3://", "http://", "https://")):
        return f"{namespace.rstrip('/')}/{name.lstrip('/')}"
    return namespace


def sql_location(url: Any, table: str, db_schema: str | None = None) -> tuple[str, str]:
    """A SQL table as ``(namespace, name)`` from its SQLAlchemy URL (credentials never used)."""
    import sqlalchemy as sa
    from openlineage.client.naming.dataset import MySQL, Postgres

    url = sa.make_url(url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"sqlite://{os.path.abspath(url.database or '')}", table
    if backend == "postgresql":
        naming: Any = Postgres(
            host=url.host or "localhost",
            port=str(url.port or 5432),
            database=url.database or "postgres",
            schema=db_schema or "public",
            table=table,
        )
        return naming.get_namespace(), naming.get_name()
    if backend in ("mysql", "mariadb"):
        database = db_schema or url.database or ""
        naming = MySQL(
            host=url.host or "localhost", port=str(url.port or 3306), database=database, table=table
        )
        return naming.get_namespace(), naming.get_name()
    host = f"{url.host}:{url.port}" if url.port else (url.host or "localhost")
    return f"{backend}://{host}", ".".join(p for p in (url.database, db_schema, table) if p)


def http_location(url: str, endpoint: str) -> tuple[str, str]:
    """A REST endpoint as ``(scheme://host[:port], /endpoint)``; user info and query are dropped."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme or 'https'}://{netloc}", endpoint


def mlflow_namespace(tracking_uri: str) -> str:
    """``mlflow://<tracking host>``: the server's host and port; ``local`` for a file/SQL store."""
    parts = urlsplit(tracking_uri or "")
    if parts.scheme in ("http", "https") and parts.hostname:
        return f"mlflow://{parts.hostname}:{parts.port}" if parts.port else f"mlflow://{parts.hostname}"
    if parts.scheme.startswith("databricks"):
        return "mlflow://databricks"
    return "mlflow://local"


# ---------------------------------------------------------------------------------------- facets


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


def _datasource(namespace: str, name: str) -> Any:
    from openlineage.client.facet_v2 import datasource_dataset

    from llmops.lineage.facets import PRODUCER

    return datasource_dataset.DatasourceDatasetFacet(
        name=namespace, uri=location_uri(namespace, name), producer=PRODUCER
    )


def _version(version: str) -> Any:
    from openlineage.client.facet_v2 import dataset_version_dataset

    from llmops.lineage.facets import PRODUCER

    return dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(version), producer=PRODUCER)


def _governance_tags(governance: dict[str, Any] | None) -> Any:
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


def _output_statistics(rows: int | None, files: int | None = None) -> Any:
    from openlineage.client.facet_v2 import output_statistics_output_dataset as stats

    from llmops.lineage.facets import PRODUCER

    return stats.OutputStatisticsOutputDatasetFacet(rowCount=rows, fileCount=files, producer=PRODUCER)


def _input_dataset(
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


def _output_dataset(
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
        "dataSource": _datasource(namespace, name),
        "version": _version(manifest["snapshot_id"]) if manifest.get("snapshot_id") else None,
    }


def snapshot_input(
    uri: str, manifest: dict[str, Any] | None, input_facets: dict[str, Any] | None = None
) -> Any:
    return _input_dataset(*lake_location(uri), snapshot_facets(uri, manifest), input_facets)


def snapshot_output(uri: str, manifest: dict[str, Any] | None, facets: dict[str, Any] | None = None) -> Any:
    manifest = manifest or {}
    stats = (
        _output_statistics(manifest.get("row_count"), len(manifest.get("files") or []) or None)
        if manifest.get("row_count") is not None
        else None
    )
    return _output_dataset(
        *lake_location(uri), {**snapshot_facets(uri, manifest), **(facets or {})}, {"outputStatistics": stats}
    )


def _field(
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


def _assertion(assertion: str, success: bool, **kwargs: Any) -> Any:
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
        _assertion(
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
                _assertion(
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
            _assertion(
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
            _assertion(
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
            _assertion("contract.no_extra_columns", not outcome.get("unexpected_columns"), severity="error")
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
            _assertion(
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


def _dq_facet(assertions: list[Any]) -> Any:
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


# ------------------------------------------------------------------------------------ step lineage


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
    """Where a spec source reads from, as ``(namespace, name)``."""
    meta = meta or {}
    if source.kind == "sql":
        if url is None:
            from llmops.ingest.sql import source_url

            url = source_url(source)
        table = source.table or _query_table(source, url) or f"query.{source.name}"
        return sql_location(url, table, getattr(source, "db_schema", None))
    if source.kind == "rest":
        base = meta.get("url")
        if not base:
            from llmops.connections import get_connection

            conn = get_connection(source.conn_id)
            base = f"{conn.schema or 'https'}://{conn.host}" + (f":{conn.port}" if conn.port else "")
        return http_location(base, source.endpoint)
    uri = source.uri
    if not uri.startswith(("s3://", "s3a://", "file://")) and not os.path.isabs(uri):
        from llmops.settings import get_settings

        uri = str(get_settings().project_dir / uri)
    return lake_location(uri)


def _query_table(source: Any, url: Any) -> str | None:
    """The table a query-based SQL source reads, when the OpenLineage SQL parser finds exactly one."""
    try:
        import sqlalchemy as sa
        from openlineage_sql import parse

        parsed = parse([source.query], dialect=sa.make_url(url).get_backend_name())
        tables = [t.qualified_name for t in (parsed.in_tables if parsed else [])]
        return tables[0] if len(tables) == 1 else None
    except Exception:
        return None


def source_dataset(
    source: Any,
    meta: dict[str, Any] | None = None,
    url: Any = None,
    input_facets: dict[str, Any] | None = None,
) -> Any:
    namespace, name = source_location(source, meta, url)
    facets = {
        "schema": schema_facet(list(source.columns)),
        "dataSource": _datasource(namespace, name),
        "tags": _governance_tags(source.governance.model_dump()),
    }
    return _input_dataset(namespace, name, facets, input_facets)


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
            snapshot_output(uri, manifest, {"tags": _governance_tags(source.governance.model_dump())})
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
        inputs.append(snapshot_input(uri, manifest, {"dataQualityAssertions": _dq_facet(assertions)}))
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
                    _field(
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
        _field(
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
            item = _field(source, name, "DIRECT", "TRANSFORMATION", how, masking=True)
        elif action == "mask":
            how = "masked: each value replaced by the mask of its PII type"
            item = _field(source, name, "DIRECT", "TRANSFORMATION", how, masking=True)
        elif name in free_text and action != "allow":
            how = f"free text with PII spans masked or pseudonymised ({', '.join(redacted_types)})"
            item = _field(source, name, "DIRECT", "TRANSFORMATION", how, masking=True)
        else:
            how = "kept (PII allowed: see llmops_pii justification)" if action == "allow" else "unchanged"
            item = _field(source, name, "DIRECT", "IDENTITY", how)
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
    mapping: dict[str, list[Any]] = {"key": [_field(source, key, "DIRECT", "IDENTITY", "the record key")]}
    if used:
        mapping["prompt"] = [
            _field(source, c, "DIRECT", "TRANSFORMATION", "rendered with the prompt_template")
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
                _field(source, column, "DIRECT", "TRANSFORMATION", f"the {name} column, stripped")
            ]
    if stage.text_columns:
        mapping["text"] = [
            _field(source, c, "DIRECT", "TRANSFORMATION", "joined into one document")
            for c in stage.text_columns
        ]
    mapping["split"] = [
        _field(source, key, "DIRECT", "TRANSFORMATION", "train/eval by a seeded hash of the key")
    ]
    required = [c for c in answers.values() if c] or list(stage.text_columns)
    filtered = [
        _field(source, c, "INDIRECT", "FILTER", "rows breaking the method's data contract skipped")
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
    facets = {"dataSource": _datasource(namespace, name)}
    return _output_dataset(namespace, name, facets) if output else _input_dataset(namespace, name, facets)


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
    base = _input_dataset(
        base_ns,
        base_name,
        {"dataSource": _datasource(base_ns, base_name), "version": _version(_base_version(spec, trained))},
    )
    adapter_ns, adapter_name = lake_location(trained["adapter_dir"])
    adapter = _output_dataset(adapter_ns, adapter_name, {"dataSource": _datasource(adapter_ns, adapter_name)})
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
    output = _output_dataset(
        namespace,
        model_name,
        {"dataSource": _datasource(namespace, model_name), "version": _version(version)},
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


# ---------------------------------------------------------------------------------------- emission


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
            log.warning(
                "OpenLineage: lineage of %s was not emitted (%s: %s); the task goes on",
                build.__name__,
                type(exc).__name__,
                str(exc)[:300],
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
