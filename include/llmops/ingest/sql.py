"""Extract a table from a SQL database through SQLAlchemy, streamed in chunks.

Identifiers come from the spec and were checked against a strict pattern; SQLAlchemy quotes them
for the dialect as well, and no value is ever formatted into SQL text.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llmops.connections import get_connection, sqlalchemy_url

if TYPE_CHECKING:
    import pyarrow as pa

    from llmops.specs.schema import SqlSource

log = logging.getLogger(__name__)

CHUNK_ROWS = 10_000


class SourceError(RuntimeError):
    """A source could not be read; the message names the source and what went wrong."""


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def extract_sql(source: SqlSource, order_by: str, url: Any | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """Read the source's columns ordered by the dataset key; values kept as text in the raw zone."""
    import pyarrow as pa
    import sqlalchemy as sa

    if url is None:
        url = sqlalchemy_url(get_connection(source.conn_id))
    engine = sa.create_engine(url, future=True)
    table = sa.table(source.table, *[sa.column(c) for c in source.columns])
    query = sa.select(*[table.c[c] for c in source.columns]).order_by(table.c[order_by])
    schema = pa.schema([(c, pa.string()) for c in source.columns])
    batches: list[pa.RecordBatch] = []
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(query)
            for chunk in result.partitions(CHUNK_ROWS):
                columns = list(zip(*chunk, strict=True)) if chunk else [() for _ in source.columns]
                arrays = [pa.array([_as_text(v) for v in col], type=pa.string()) for col in columns]
                batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
    except sa.exc.SQLAlchemyError as exc:
        # The driver's message can quote the URL; report the class and the statement's first line only.
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
        raise SourceError(
            f"source '{source.name}' (connection '{source.conn_id}', table '{source.table}'): "
            f"{type(exc).__name__}: {detail}"
        ) from None
    finally:
        engine.dispose()
    result_table = pa.Table.from_batches(batches, schema=schema)
    meta = {
        "kind": "sql",
        "dialect": engine.dialect.name,
        "table": source.table,
        "columns": list(source.columns),
        "query": str(query.compile(dialect=engine.dialect)),
        "row_count": result_table.num_rows,
    }
    log.info(
        "source %s: %d rows from %s table %s",
        source.name,
        result_table.num_rows,
        meta["dialect"],
        source.table,
    )
    return result_table, meta
