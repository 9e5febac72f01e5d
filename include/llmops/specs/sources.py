"""The sources a pipeline reads, one spec model per kind, and the registry of kinds.

A kind is its spec model (a strict model whose ``kind`` is a one-value Literal) and the code that
plans and extracts it (an object in llmops.ingest, named by ``"module:attribute"`` and imported
when a task first uses it, so specs load without the extraction code). The spec's ``sources``
accept exactly the registered kinds: :func:`register_source_kind` rebuilds that union.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args

from pydantic import Field, field_validator, model_validator

from llmops.specs.base import (
    ConnId,
    DataContract,
    Governance,
    Identifier,
    StrictModel,
    check_read_only_query,
    reject_parent_segments,
)

if TYPE_CHECKING:
    from collections.abc import Callable

ENTRY_POINT_GROUP = "llmops.sources"


class Sampling(StrictModel):
    """A seeded sample of a source: for dry runs, and to validate huge sources cheaply."""

    fraction: float | None = Field(default=None, gt=0, le=1)
    rows: int | None = Field(default=None, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _one_of(self) -> Sampling:
        if (self.fraction is None) == (self.rows is None):
            raise ValueError("sample needs exactly one of 'fraction' or 'rows'")
        return self


class Incremental(StrictModel):
    """Extract only rows whose watermark column is above the last committed high-water mark."""

    column: Identifier
    initial_value: str | None = Field(
        default=None, description="Lower bound (exclusive) for the very first run; none means all rows."
    )


class Partitioning(StrictModel):
    """Split a big table into partitions extracted by parallel (mapped) tasks."""

    column: Identifier
    method: Literal["hash", "mod", "range"] = Field(
        default="hash",
        description="hash: any column (Postgres/MySQL); mod: integer column; range: numeric column split "
        "into equal ranges between its min and max.",
    )
    partitions: int = Field(ge=2, le=256)


ScalarParam = str | int | float | bool


class SqlSource(StrictModel):
    kind: Literal["sql"]
    name: Identifier
    conn_id: ConnId = Field(description="Airflow connection holding the database URL and credentials.")
    table: Identifier | None = None
    db_schema: Identifier | None = Field(default=None, description="Database schema of `table`.")
    query: str | None = Field(
        default=None,
        description="A SELECT with named bind parameters (:name) instead of a table; values go in `params`.",
    )
    params: dict[Identifier, ScalarParam] = {}
    columns: list[Identifier] = Field(min_length=1)
    incremental: Incremental | None = None
    partitioning: Partitioning | None = None
    chunk_rows: int = Field(default=50_000, ge=100, le=1_000_000)
    sample: Sampling | None = None
    contract: DataContract | None = None
    governance: Governance

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.query is not None:
            check_read_only_query(self.query)
        elif self.params:
            raise ValueError("params are only used with 'query'")
        return self

    @property
    def partition_count(self) -> int:
        return self.partitioning.partitions if self.partitioning else 1


class RestPagination(StrictModel):
    type: Literal["page", "offset", "cursor", "link", "none"] = "page"
    page_param: str = "page"
    start_page: int = Field(default=1, ge=0)
    size_param: str = "per_page"
    page_size: int = Field(default=100, gt=0, le=10_000)
    offset_param: str = "offset"
    cursor_param: str = "cursor"
    cursor_path: str = Field(default="next_cursor", description="Dotted path to the next cursor in a page.")
    max_pages: int = Field(default=1000, gt=0)


class RestSource(StrictModel):
    kind: Literal["rest"]
    name: Identifier
    conn_id: ConnId = Field(description="Airflow HTTP connection: base URL, and the secret as password.")
    endpoint: str = Field(pattern=r"^/[^\s]*$")
    params: dict[str, ScalarParam] = Field(default={}, description="Fixed query parameters.")
    records_path: str = Field(default="data", description="Dotted path to the list of records in each page.")
    columns: list[Identifier] = Field(min_length=1)
    pagination: RestPagination = RestPagination()
    timeout_seconds: float = Field(default=30.0, gt=0, description="Per request.")
    max_requests: int = Field(
        default=1000, gt=0, description="Request budget per extraction, retries included."
    )
    deadline_seconds: float = Field(default=3600.0, gt=0, description="Wall-clock budget per extraction.")
    sample: Sampling | None = None
    contract: DataContract | None = None
    governance: Governance

    @property
    def partition_count(self) -> int:
        return 1


class CsvOptions(StrictModel):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    header: bool = True


class FileSource(StrictModel):
    """CSV, JSON Lines or Parquet files under a prefix: ``s3://bucket/prefix/`` or a local folder."""

    kind: Literal["files"]
    name: Identifier
    uri: str = Field(description="s3://bucket/prefix/ (through the Amazon provider) or a local folder.")
    conn_id: ConnId | None = Field(default="aws_default", description="AWS connection for s3:// URIs.")
    pattern: str = Field(default="*", description="Glob of file names under the prefix, e.g. '*.csv'.")
    format: Literal["csv", "jsonl", "parquet"]
    csv: CsvOptions = CsvOptions()
    columns: list[Identifier] = Field(min_length=1)
    sample: Sampling | None = None
    contract: DataContract | None = None
    governance: Governance

    @field_validator("uri", "pattern")
    @classmethod
    def _no_parent_segments(cls, value: str) -> str:
        return reject_parent_segments(value)

    @field_validator("pattern")
    @classmethod
    def _relative_pattern(cls, value: str) -> str:
        if value.startswith("/"):
            raise ValueError(f"{value!r}: a pattern is relative to `uri`")
        return value

    @property
    def partition_count(self) -> int:
        return 1


@dataclass(frozen=True)
class SourceKind:
    """One kind of source: its spec model and where the code that plans and extracts it lives.

    Every kind's model has ``kind`` (``Literal[name]``), ``name``, ``columns``, ``governance``,
    ``sample`` and ``contract`` (None where the kind has none) and a ``partition_count``; the rest
    of its fields are its own, read only by its behaviour.
    """

    name: str
    model: type[StrictModel]
    # A llmops.ingest.kinds.SourceBehaviour, or "module:attribute" naming one (imported on first use).
    behaviour: Any

    def load(self) -> Any:
        """The behaviour object."""
        if not isinstance(self.behaviour, str):
            return self.behaviour
        module, _, attribute = self.behaviour.partition(":")
        return getattr(importlib.import_module(module), attribute)


SOURCE_KINDS: dict[str, SourceKind] = {}
_on_change: list[Callable[[], None]] = []


def register_source_kind(kind: SourceKind) -> SourceKind:
    """Add a kind; specs accept it from now on. Its model's ``kind`` field must be ``Literal[name]``."""
    field = kind.model.model_fields.get("kind")
    if field is None or get_args(field.annotation) != (kind.name,):
        raise ValueError(f"source kind {kind.name!r}: its model needs `kind: Literal[{kind.name!r}]`")
    if kind.name in SOURCE_KINDS and SOURCE_KINDS[kind.name] != kind:
        raise ValueError(f"source kind {kind.name!r} is already registered")
    SOURCE_KINDS[kind.name] = kind
    for rebuild in _on_change:
        rebuild()
    return kind


def unregister_source_kind(name: str) -> None:
    if SOURCE_KINDS.pop(name, None) is not None:
        for rebuild in _on_change:
            rebuild()


def on_kinds_changed(rebuild: Callable[[], None]) -> None:
    """Call `rebuild` whenever the set of kinds changes (the pipeline spec rebuilds its union)."""
    _on_change.append(rebuild)


def source_union() -> Any:
    """The type of one entry of ``sources``: a union of every kind's model, tagged by ``kind``."""
    models = tuple(kind.model for kind in SOURCE_KINDS.values())
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007 - built at run time


def kind_of(source: Any) -> SourceKind:
    """The registered kind of a spec source."""
    try:
        return SOURCE_KINDS[source.kind]
    except KeyError:
        raise ValueError(f"source '{source.name}': kind {source.kind!r} is not registered") from None


_plugins_loaded = False


def ensure_plugins() -> None:
    """Load the kinds of installed packages once per process, before the first spec is parsed."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        load_plugins()


def load_plugins() -> list[str]:
    """Register the kinds of installed packages (entry point group ``llmops.sources``: each entry a
    :class:`SourceKind`); returns their names."""
    from importlib.metadata import entry_points

    added = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        kind = entry.load()
        if not isinstance(kind, SourceKind):
            raise TypeError(f"entry point {entry.name!r} ({entry.value}) gave {type(kind).__name__}")
        register_source_kind(kind)
        added.append(kind.name)
    return added


for _kind in (
    SourceKind("sql", SqlSource, "llmops.ingest.kinds:SQL"),
    SourceKind("rest", RestSource, "llmops.ingest.kinds:REST"),
    SourceKind("files", FileSource, "llmops.ingest.kinds:FILES"),
):
    register_source_kind(_kind)
