"""Checks of a spec against the deployment it runs in: the connections it names exist, the local
files it reads lie inside the configured data roots.

The schema checks what a spec says; these check what it points at, so they run where the
deployment is reachable: `llmops validate-specs`, and the first task of every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from llmops.errors import PermanentError

if TYPE_CHECKING:
    from llmops.specs.schema import PipelineSpec


class EnvironmentMismatch(PermanentError, ValueError):
    """The spec names a connection that does not exist or a file outside the data roots."""

    def __init__(self, pipeline: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"pipeline '{pipeline}':\n" + "\n".join(f"  - {p}" for p in problems))


def _is_local(uri: str) -> bool:
    return "://" not in uri


def local_path_problem(field: str, uri: str) -> str | None:
    """Why a local path a spec field names may not be read, or None (s3:// URIs are not checked)."""
    from llmops.settings import get_settings

    if not _is_local(uri):
        return None
    settings = get_settings()
    path = Path(uri)
    if not path.is_absolute():
        path = settings.project_dir / path
    resolved = path.resolve()  # symlinks too: a link inside a root may point anywhere
    if any(resolved.is_relative_to(root) for root in settings.data_roots):
        return None
    roots = ", ".join(str(r) for r in settings.data_roots)
    return f"{field}: {uri!r} is outside the data roots ({roots}; set LLMOPS_DATA_ROOTS to add one)"


def _source_paths(spec: PipelineSpec) -> list[str | None]:
    # A kind that reads files names them by `uri`.
    return [
        local_path_problem(f"sources[{i}].uri", uri)
        for i, source in enumerate(spec.sources)
        if (uri := getattr(source, "uri", None))
    ]


def _golden_paths(spec: PipelineSpec) -> list[str | None]:
    return [
        local_path_problem(f"evaluation.golden_sets[{i}].uri", golden.uri)
        for i, golden in enumerate(spec.evaluation.golden_sets)
    ]


def source_connections(spec: PipelineSpec) -> dict[str, str]:
    """The connections ingestion opens, by the field that names them."""
    fields = {}
    for i, source in enumerate(spec.sources):
        conn_id = getattr(source, "conn_id", None)
        uri = getattr(source, "uri", None)
        if not conn_id or (uri and _is_local(uri)):  # local files need no connection
            continue
        if uri and "conn_id" not in source.model_fields_set:
            continue  # object storage's default connection may be absent: the SDK's own credentials
        fields[f"sources[{i}].conn_id"] = conn_id
    return fields


def other_connections(spec: PipelineSpec) -> dict[str, str]:
    """The connections batch inference, monitoring and the integrations open."""
    fields: dict[str, str] = {}
    batch = spec.batch_inference
    if batch is not None:
        fields["batch_inference.conn_id"] = batch.conn_id
        if batch.target_conn_id:
            fields["batch_inference.target_conn_id"] = batch.target_conn_id
    if spec.monitoring.alert_conn_id:
        fields["monitoring.alert_conn_id"] = spec.monitoring.alert_conn_id
    if spec.integrations.webhook_conn_id:
        fields["integrations.webhook_conn_id"] = spec.integrations.webhook_conn_id
    return fields


def connection_problems(fields: dict[str, str]) -> list[str]:
    """Connections that are not defined. A connection store that cannot be asked is not a problem
    of the spec: its error propagates (a transient failure, retried)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    problems = []
    for field, conn_id in fields.items():
        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            problems.append(
                f"{field}: Airflow connection '{conn_id}' is not defined (Admin > Connections, "
                f"or env var AIRFLOW_CONN_{conn_id.upper()})"
            )
    return problems


def _refuse(spec: PipelineSpec, problems: list[str | None]) -> None:
    found = [p for p in problems if p]
    if found:
        raise EnvironmentMismatch(spec.name, found)


def check_ingest(spec: PipelineSpec) -> None:
    """At the start of an ingest run: every source's files and connection are there to read."""
    _refuse(spec, _source_paths(spec) + connection_problems(source_connections(spec)))


def check_finetune(spec: PipelineSpec) -> None:
    """At the start of a finetune run: the golden sets lie inside the data roots."""
    _refuse(spec, _golden_paths(spec))


def all_problems(spec: PipelineSpec, *, connections: bool = True) -> list[str]:
    """Everything `llmops validate-specs` reports about a spec that parsed."""
    problems = _source_paths(spec) + _golden_paths(spec)
    if connections:
        problems += connection_problems({**source_connections(spec), **other_connections(spec)})
    return [p for p in problems if p]
