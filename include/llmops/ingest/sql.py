"""Extract a table or a parameterised query from a SQL database, streamed in Arrow batches.

Identifiers come from the spec, where they were checked against a strict pattern, and SQLAlchemy
quotes them for the dialect as well. Values (query params, watermarks, partition bounds) are always
parameters. PostgreSQL's COPY, the fast path, cannot take server-side parameters, so there psycopg
binds them on the client (``ClientCursor``): quoted by the driver, never formatted by us.

Values are selected as the database renders them as text (CAST ... AS TEXT), so the raw zone holds
what the source holds, whichever path read it; typing them is a normalisation rule.

Extraction is planned once (`plan_sql`: watermark range and partition bounds, fixed at plan time
so rows arriving during the extraction are neither missed nor read twice), then each partition is
read independently (`iter_sql_batches`), in chunks, so memory stays flat as tables grow.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

from llmops.connections import get_connection, sqlalchemy_url
from llmops.ingest.common import SourceError, as_text, sample_batch

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import pyarrow as pa
    import sqlalchemy as sa

    from llmops.specs.schema import SqlSource

log = logging.getLogger(__name__)

__all__ = ["SourceError", "extract_sql", "iter_sql_batches", "plan_sql", "source_url"]

_as_text = as_text  # kept for importers of the earlier name


def source_url(source: SqlSource) -> Any:
    return sqlalchemy_url(get_connection(source.conn_id))


def _engine(url: Any) -> sa.Engine:
    import sqlalchemy as sa

    return sa.create_engine(url, future=True, pool_pre_ping=True)


def _source_error(source: SqlSource, exc: Exception) -> SourceError:
    # The driver's message can quote the URL or the statement; keep its first line only.
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
    where = f"table '{source.table}'" if source.table else "query"
    return SourceError(
        f"source '{source.name}' (connection '{source.conn_id}', {where}): {type(exc).__name__}: {detail}"
    )


def _needed_columns(source: SqlSource, order_by: str) -> list[str]:
    extra = [order_by]
    if source.incremental:
        extra.append(source.incremental.column)
    if source.partitioning:
        extra.append(source.partitioning.column)
    return list(dict.fromkeys([*source.columns, *extra]))


def _base(source: SqlSource, order_by: str) -> Any:
    """The table, or the query as a subquery, as a selectable with the columns we use."""
    import sqlalchemy as sa

    columns = _needed_columns(source, order_by)
    if source.table is not None:
        return sa.table(source.table, *[sa.column(c) for c in columns], schema=source.db_schema)
    text = sa.text(source.query.strip().rstrip(";")).bindparams(**source.params)
    return text.columns(*[sa.column(c) for c in columns]).subquery("src")


def _value(value: Any) -> Any:
    """An untyped bind parameter: the database casts it to the column's type (no ::VARCHAR cast)."""
    import sqlalchemy as sa

    return sa.literal(value, sa.types.NullType())


def _watermark_filter(base: Any, watermark: dict[str, Any] | None) -> list[Any]:

    if not watermark:
        return []
    column = base.c[watermark["column"]]
    clauses = []
    if watermark.get("low") is not None:
        clauses.append(column > _value(watermark["low"]))
    if watermark.get("high") is not None:
        clauses.append(column <= _value(watermark["high"]))
    return clauses


def _partition_filter(base: Any, item: dict[str, Any], dialect: str) -> list[Any]:
    import sqlalchemy as sa

    method = item.get("method")
    if not method:
        return []
    column = base.c[item["column"]]
    n, i = item["partitions"], item["partition"]
    if method == "mod":
        bucket = ((column % n) + n) % n
    elif method == "hash":
        if dialect == "postgresql":
            hashed = sa.cast(sa.func.hashtext(sa.cast(column, sa.Text)), sa.BigInteger)
        elif dialect in ("mysql", "mariadb"):
            hashed = sa.func.crc32(column)
        else:
            raise SourceError(
                f"source '{item['source']}': partitioning.method 'hash' is not available on {dialect}; "
                f"use 'mod' (integer column) or 'range'"
            )
        bucket = ((hashed % n) + n) % n
    else:  # range
        start, end = item["range"]
        if start is None:  # empty table: every row (there are none) in partition 0
            return [] if i == 0 else [sa.false()]
        condition = column >= _value(start)
        condition = condition & ((column <= _value(end)) if item["last"] else (column < _value(end)))
        return [sa.or_(condition, column.is_(None)) if i == 0 else condition]
    condition = bucket == i
    return [sa.or_(condition, column.is_(None)) if i == 0 else condition]


def build_query(source: SqlSource, item: dict[str, Any], order_by: str, dialect: str) -> Any:
    """The SELECT for one planned partition: text-cast columns, filters, ordered by the key."""
    import sqlalchemy as sa

    base = _base(source, order_by)
    text_type = sa.String() if dialect in ("mysql", "mariadb") else sa.Text()
    query = sa.select(*[sa.cast(base.c[c], text_type).label(c) for c in source.columns])
    for clause in [*_watermark_filter(base, item.get("watermark")), *_partition_filter(base, item, dialect)]:
        query = query.where(clause)
    return query.order_by(base.c[order_by])


def plan_sql(
    source: SqlSource, order_by: str, watermark_low: str | None, url: Any = None
) -> list[dict[str, Any]]:
    """Fix what this extraction reads: watermark range, partition bounds, sample fraction."""
    import sqlalchemy as sa

    url = url if url is not None else source_url(source)
    engine = _engine(url)
    base = _base(source, order_by)
    watermark = None
    sample = {"fraction": source.sample.fraction, "seed": source.sample.seed} if source.sample else None
    try:
        with engine.connect() as conn:
            if source.incremental:
                column = base.c[source.incremental.column]
                low = watermark_low if watermark_low is not None else source.incremental.initial_value
                query = sa.select(sa.func.max(column))
                for clause in _watermark_filter(base, {"column": column.name, "low": low}):
                    query = query.where(clause)
                high = conn.execute(query).scalar()
                # str() renders datetimes as '2026-09-01 08:00:00+00:00', a form every dialect parses.
                watermark = {"column": column.name, "low": low, "high": None if high is None else str(high)}
                if high is None:  # nothing new since the last committed watermark
                    watermark["high"], watermark["empty"] = low, True
            filters = _watermark_filter(base, watermark)
            if source.sample and source.sample.rows is not None:
                count_query = sa.select(sa.func.count()).select_from(base)
                for clause in filters:
                    count_query = count_query.where(clause)
                total = conn.execute(count_query).scalar() or 0
                sample = {
                    "fraction": min(1.0, source.sample.rows / total) if total else 1.0,
                    "seed": source.sample.seed,
                }
            bounds = None
            if source.partitioning and source.partitioning.method == "range":
                column = base.c[source.partitioning.column]
                range_query = sa.select(sa.func.min(column), sa.func.max(column))
                for clause in filters:
                    range_query = range_query.where(clause)
                bounds = conn.execute(range_query).first()
    except sa.exc.SQLAlchemyError as exc:
        raise _source_error(source, exc) from None
    finally:
        engine.dispose()

    n = source.partition_count
    items = []
    for i in range(n):
        item: dict[str, Any] = {
            "source": source.name,
            "partition": i,
            "partitions": n,
            "method": source.partitioning.method if source.partitioning else None,
            "column": source.partitioning.column if source.partitioning else None,
            "watermark": watermark,
            "sample": sample,
        }
        if bounds is not None:
            lo, hi = bounds
            if lo is None:
                item["range"], item["last"] = [None, None], i == n - 1
            else:
                lo, hi = float(lo), float(hi)
                width = (hi - lo) / n
                item["range"] = [lo + i * width, hi if i == n - 1 else lo + (i + 1) * width]
                item["last"] = i == n - 1
        items.append(item)
    return items


class _CopyStream(io.RawIOBase):
    """A readable file over psycopg's COPY output, for Arrow's streaming CSV reader.

    A background thread drains the COPY into a small queue of ~1 MiB blocks, so the database keeps
    sending (and the network keeps moving) while Arrow parses; read sequentially in one thread,
    each waited for the other. The queue is bounded, so memory stays bounded too. Errors in the
    thread (a dropped connection) are raised from `readinto`, in the reading thread.
    """

    BLOCK = 1 << 20
    DEPTH = 16

    def __init__(self, copy: Any) -> None:
        import queue
        import threading

        super().__init__()
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=self.DEPTH)
        self._stop = threading.Event()
        self._pending = memoryview(b"")
        self._finished = False
        self._thread = threading.Thread(target=self._pump, args=(copy,), name="copy-reader", daemon=True)
        self._thread.start()

    def _put(self, item: bytes | BaseException | None) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self, copy: Any) -> None:
        buffer = bytearray()
        try:
            for chunk in copy:
                buffer += chunk
                if len(buffer) >= self.BLOCK:
                    if not self._put(bytes(buffer)):
                        return
                    buffer.clear()
                if self._stop.is_set():
                    return
            if buffer:
                self._put(bytes(buffer))
            self._put(None)
        except BaseException as exc:  # surfaced to the reader
            self._put(exc)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            if self._finished:
                return 0
            item = self._queue.get()
            if item is None:
                self._finished = True
                return 0
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            self._pending = memoryview(item)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def stop(self) -> None:
        """Stop the reader thread and wait for it: the connection must be idle before it is reused."""
        import queue

        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()


def _iter_copy(conn: Any, query: Any, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """PostgreSQL fast path: COPY (SELECT ...) TO STDOUT as CSV, parsed by Arrow in C++."""
    import psycopg
    import pyarrow as pa
    import pyarrow.csv as pacsv

    compiled = query.compile(dialect=conn.dialect)
    statement = f"COPY ({compiled}) TO STDOUT (FORMAT csv)"
    driver = conn.connection.driver_connection
    with psycopg.ClientCursor(driver) as cursor, cursor.copy(statement, compiled.params) as copy:
        raw = _CopyStream(copy)
        try:
            stream = io.BufferedReader(raw, buffer_size=1 << 20)
            if not stream.peek(1):  # no rows: Arrow refuses an empty CSV, and there is nothing to read
                return
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=columns, block_size=4 << 20, use_threads=True),
                # Text bodies contain newlines inside quoted values.
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in columns},
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,  # COPY writes NULL unquoted and '' as ""
                    null_values=[""],
                ),
            )
            yield from reader
        finally:
            raw.stop()


def _iter_rows(conn: Any, query: Any, columns: list[str], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    schema = pa.schema([(c, pa.string()) for c in columns])
    result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(query)
    for chunk in result.partitions(chunk_rows):
        if not chunk:
            continue
        arrays = [
            pa.array([v if v is None or isinstance(v, str) else as_text(v) for v in col], type=pa.string())
            for col in zip(*chunk, strict=True)
        ]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def uses_copy(url: Any) -> bool:
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    return parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg"


def iter_sql_batches(
    source: SqlSource,
    item: dict[str, Any],
    order_by: str,
    url: Any = None,
    on_batch: Callable[[Any, int], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream one planned partition as Arrow batches of text columns.

    ``on_batch(connection, rows_so_far)`` is called after each batch (progress, fault drills).
    """
    import sqlalchemy as sa

    url = url if url is not None else source_url(source)
    if item.get("watermark", {}) and item["watermark"].get("empty"):
        return
    engine = _engine(url)
    dialect = engine.dialect.name
    query = build_query(source, item, order_by, dialect)
    sample = item.get("sample") or {}
    rows = 0
    try:
        with engine.connect() as conn:
            if uses_copy(url):
                batches = _iter_copy(conn, query, list(source.columns))
            else:
                batches = _iter_rows(conn, query, list(source.columns), source.chunk_rows)
            for batch in batches:
                batch = sample_batch(batch, order_by, sample.get("fraction"), sample.get("seed", 0))
                rows += batch.num_rows
                if batch.num_rows:
                    yield batch
                if on_batch is not None:
                    on_batch(conn, rows)
    except sa.exc.SQLAlchemyError as exc:
        raise _source_error(source, exc) from None
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            raise _source_error(source, exc) from None
        raise
    finally:
        engine.dispose()


def describe_query(source: SqlSource, item: dict[str, Any], order_by: str, url: Any) -> str:
    """The statement text for the manifest (bind parameters shown as placeholders)."""
    import sqlalchemy as sa

    dialect = sa.make_url(url).get_dialect()()
    return str(build_query(source, item, order_by, dialect.name).compile(dialect=dialect))


def extract_sql(source: SqlSource, order_by: str, url: Any = None) -> tuple[pa.Table, dict[str, Any]]:
    """Plan and read every partition into one table (small sources, tests, dry runs)."""
    import pyarrow as pa

    url = url if url is not None else source_url(source)
    items = plan_sql(source, order_by, None, url)
    schema = pa.schema([(c, pa.string()) for c in source.columns])
    batches = [b for item in items for b in iter_sql_batches(source, item, order_by, url)]
    table = pa.Table.from_batches(batches, schema=schema)
    if len(items) > 1:
        table = table.sort_by(order_by)
    meta = {
        "kind": "sql",
        "dialect": sa_dialect(url),
        "table": source.table,
        "columns": list(source.columns),
        "query": describe_query(source, items[0], order_by, url),
        "row_count": table.num_rows,
    }
    return table, meta


def sa_dialect(url: Any) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).get_backend_name()
