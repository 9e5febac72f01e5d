"""How each kind of source is planned, extracted and located: the behaviour a spec's source kinds
name (``llmops.specs.sources.SOURCE_KINDS``). The ingest steps and lineage call these and never
look at a source's kind themselves.

A kind plans the items its source is read in (partitions, watermark ranges, samples), extracts one
item as Arrow record batches of text columns plus metadata for the snapshot manifest, and says
where the source lives as an OpenLineage ``(namespace, name)``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pyarrow as pa

    from llmops.specs import PipelineSpec


class SourceBehaviour(Protocol):
    """What a source kind does; one instance per kind, registered by name."""

    def plan(self, spec: PipelineSpec, source: Any) -> list[dict[str, Any]]:
        """The items to extract, each ``{"source", "partition", "partitions", ...}``."""
        ...

    def extract(
        self, source: Any, item: dict[str, Any], key: str, schema: pa.Schema
    ) -> tuple[Iterable[pa.RecordBatch], dict[str, Any]]:
        """One item's rows (text columns of ``schema``) and what the manifest records about them."""
        ...

    def location(self, source: Any, meta: dict[str, Any] | None = None, url: Any = None) -> tuple[str, str]:
        """Where the source lives, as an OpenLineage ``(namespace, name)``."""
        ...


def _sampled(table: pa.Table, key: str, sample: dict[str, Any] | None) -> pa.Table:
    """A seeded sample of a whole-source table, by key hash (the same rows on every run)."""
    import pyarrow as pa

    from llmops.ingest.common import sample_batch

    if not sample:
        return table
    fraction = sample.get("fraction")
    if fraction is None and sample.get("rows"):
        fraction = min(1.0, sample["rows"] / table.num_rows) if table.num_rows else 1.0
    batches = [sample_batch(b, key, fraction, sample.get("seed", 0)) for b in table.to_batches()]
    return pa.Table.from_batches(batches, schema=table.schema)


class SqlKind:
    """A table or query: partitions by key hash, modulo or range, an incremental watermark range,
    streamed in chunks."""

    def plan(self, spec: PipelineSpec, source: Any) -> list[dict[str, Any]]:
        from llmops.ingest.sql import plan_sql
        from llmops.ingest.state import get_watermark

        low = get_watermark(spec.name, source.name) if source.incremental else None
        return plan_sql(source, spec.dataset.key, low)

    def extract(
        self, source: Any, item: dict[str, Any], key: str, schema: pa.Schema
    ) -> tuple[Iterable[pa.RecordBatch], dict[str, Any]]:
        from llmops.ingest.common import UNDECODABLE
        from llmops.ingest.sql import describe_query, iter_sql_batches, sa_dialect, source_url

        url = source_url(source)
        undecodable: list[dict[str, Any]] = []  # filled as the batches are read
        meta = {
            "kind": "sql",
            "dialect": sa_dialect(url),
            "table": source.table,
            "query": describe_query(source, item, key, url),
            "columns": list(source.columns),
            UNDECODABLE: undecodable,
        }
        return iter_sql_batches(source, item, key, url, undecodable=undecodable), meta

    def location(self, source: Any, meta: dict[str, Any] | None = None, url: Any = None) -> tuple[str, str]:
        from llmops.lineage.naming import sql_location

        if url is None:
            from llmops.ingest.sql import source_url

            url = source_url(source)
        table = source.table or _query_table(source, url) or f"query.{source.name}"
        return sql_location(url, table, getattr(source, "db_schema", None))


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


class WholeSourceKind:
    """A source read whole in one item (optionally sampled): subclasses say how to read it."""

    def plan(self, spec: PipelineSpec, source: Any) -> list[dict[str, Any]]:
        sample = source.sample.model_dump() if source.sample else None
        return [{"source": source.name, "partition": 0, "partitions": 1, "sample": sample}]

    def read(self, source: Any, key: str) -> tuple[pa.Table, dict[str, Any]]:
        raise NotImplementedError

    def extract(
        self, source: Any, item: dict[str, Any], key: str, schema: pa.Schema
    ) -> tuple[Iterable[pa.RecordBatch], dict[str, Any]]:
        table, meta = self.read(source, key)
        table = _sampled(table, key, item.get("sample"))
        return table.cast(schema).to_batches(), meta


class RestKind(WholeSourceKind):
    """A paginated REST endpoint (page, offset, cursor or link pagination)."""

    def read(self, source: Any, key: str) -> tuple[pa.Table, dict[str, Any]]:
        from llmops.ingest.rest import extract_rest

        return extract_rest(source, order_by=key)

    def location(self, source: Any, meta: dict[str, Any] | None = None, url: Any = None) -> tuple[str, str]:
        from llmops.lineage.naming import http_location

        base = (meta or {}).get("url")
        if not base:
            from llmops.connections import get_connection

            conn = get_connection(source.conn_id)
            base = f"{conn.schema or 'https'}://{conn.host}" + (f":{conn.port}" if conn.port else "")
        return http_location(base, source.endpoint)


class FilesKind(WholeSourceKind):
    """CSV, JSON Lines or Parquet files under an S3 prefix or a local folder."""

    def read(self, source: Any, key: str) -> tuple[pa.Table, dict[str, Any]]:
        from llmops.ingest.files import extract_files

        return extract_files(source, order_by=key)

    def location(self, source: Any, meta: dict[str, Any] | None = None, url: Any = None) -> tuple[str, str]:
        from llmops.lineage.naming import lake_location

        uri = source.uri
        if not uri.startswith(("s3://", "s3a://", "file://")) and not os.path.isabs(uri):
            from llmops.settings import get_settings

            uri = str(get_settings().project_dir / uri)
        return lake_location(uri)


SQL = SqlKind()
REST = RestKind()
FILES = FilesKind()


def behaviour_of(source: Any) -> SourceBehaviour:
    """The behaviour registered for a spec source's kind."""
    from llmops.specs.sources import kind_of

    return kind_of(source).load()
