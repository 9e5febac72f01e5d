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

from llmops.connections import get_connection, read_only_engine, sqlalchemy_url
from llmops.ingest.common import (
    UNDECODABLE,
    SchemaDrift,
    SourceError,
    as_text,
    decode_binary,
    decode_text,
    sample_batch,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import pyarrow as pa

    from llmops.specs.schema import SqlSource

log = logging.getLogger(__name__)

__all__ = ["SourceError", "extract_sql", "iter_sql_batches", "plan_sql", "source_url"]

_as_text = as_text  # kept for importers of the earlier name


def source_url(source: SqlSource) -> Any:
    return sqlalchemy_url(get_connection(source.conn_id))


# What a driver's error code means, in words that quote nothing: the driver's own message can
# quote the URL, the statement or a row's values, so it is never passed on.
_DRIVER_REASONS: dict[str | int, str] = {
    "28P01": "authentication failed",
    "28000": "authentication failed",
    1045: "Access denied (authentication failed)",
    "3D000": "database does not exist",
    1049: "database does not exist",
    "42P01": "table or view does not exist",
    1146: "table or view does not exist",
    "42703": "column does not exist",
    1054: "column does not exist",
    "08001": "cannot connect",
    "08006": "connection lost",
    2002: "cannot connect",
    2003: "cannot connect",
    2006: "connection lost",
    2013: "connection lost",
    "57014": "statement cancelled (timeout)",
    3024: "statement timed out",
    "53300": "too many connections",
    1040: "too many connections",
}
_MISSING_COLUMN = ("42703", 1054)


def _driver_code(exc: BaseException) -> str | int | None:
    """SQLSTATE (PostgreSQL) or error number (MySQL/MariaDB) of a driver error, if it has one."""
    orig = getattr(exc, "orig", None) or exc
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):  # MySQL/MariaDB: the error number is the precise one
        return args[0]
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state if isinstance(state, str) else None


def _where(source: SqlSource) -> str:
    where = f"table '{source.table}'" if source.table else "query"
    return f"source '{source.name}' (connection '{source.conn_id}', {where})"


def _source_error(source: SqlSource, exc: BaseException) -> SourceError:
    """The failure in the source's terms: driver type, code and what the code means."""
    orig = getattr(exc, "orig", None) or exc
    code = _driver_code(exc)
    reason = _DRIVER_REASONS.get(code, "driver message withheld (it may quote source data)")
    coded = f" [{code}]" if code is not None else ""
    return SourceError(f"{_where(source)}: {type(orig).__name__}{coded}: {reason}")


def _observed_columns(conn: Any, source: SqlSource) -> list[str]:
    """The columns the table or query returns now, from a statement that reads no row."""
    import sqlalchemy as sa

    if source.table is not None:
        origin: Any = sa.table(source.table, schema=source.db_schema)
    else:
        text = sa.text(source.query.strip().rstrip(";")).bindparams(**source.params)
        origin = text.columns().subquery("src")
    probe = sa.select(sa.text("*")).select_from(origin).where(sa.false())
    return list(conn.execute(probe).keys())


def check_columns(conn: Any, source: SqlSource, order_by: str) -> None:
    """Refuse a source that no longer has a column the spec reads (schema drift: permanent)."""
    observed = _observed_columns(conn, source)
    lowered = {c.lower() for c in observed}
    needed = _needed_columns(source, order_by)
    missing = [c for c in needed if c not in observed and c.lower() not in lowered]
    if missing:
        raise SchemaDrift(
            f"{_where(source)}: schema drift: column(s) {', '.join(missing)} not found "
            f"(the source has {', '.join(observed) or 'no columns'})",
            source.name,
            needed,
            observed,
            missing,
        )


def _failure(source: SqlSource, exc: BaseException, engine: Any, order_by: str) -> SourceError:
    """A driver error as a source error; an unknown column is checked, to name the drifted one."""
    if _driver_code(exc) in _MISSING_COLUMN:
        try:
            with engine.connect() as conn:
                check_columns(conn, source, order_by)
        except SchemaDrift as drift:
            return drift
        except Exception:  # the probe failing too: report the original error
            log.debug("column check after an unknown-column error failed", exc_info=True)
    return _source_error(source, exc)


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
    engine = read_only_engine(url)
    base = _base(source, order_by)
    watermark = None
    sample = {"fraction": source.sample.fraction, "seed": source.sample.seed} if source.sample else None
    try:
        with engine.connect() as conn:
            check_columns(conn, source, order_by)
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
        raise _failure(source, exc, engine, order_by) from None
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


def _row_key(values: list[Any], index: int | None, row: int) -> str:
    return str(values[index]) if index is not None and values[index] is not None else f"#{row}"


def _decode_batch(
    batch: pa.RecordBatch, columns: list[str], order_by: str, undecodable: list[dict[str, Any]]
) -> pa.RecordBatch:
    import pyarrow as pa

    arrays = decode_binary(dict(zip(columns, batch.columns, strict=True)), order_by, undecodable)
    return pa.RecordBatch.from_arrays(list(arrays.values()), names=columns)


def _iter_copy(
    conn: Any, query: Any, columns: list[str], order_by: str, undecodable: list[dict[str, Any]]
) -> Iterator[pa.RecordBatch]:
    """PostgreSQL fast path: COPY (SELECT ...) TO STDOUT as CSV, parsed by Arrow in C++.

    Read as bytes and decoded per batch, so a row that is not UTF-8 (a SQL_ASCII database) is
    quarantined rather than failing the source."""
    import psycopg
    import pyarrow as pa
    import pyarrow.csv as pacsv

    compiled = query.compile(dialect=conn.dialect)
    statement = f"COPY ({compiled}) TO STDOUT (FORMAT csv)"
    driver = conn.connection.driver_connection
    if driver.info.parameter_status("server_encoding") == "SQL_ASCII":
        # The server holds any bytes and refuses to convert the invalid ones (22021) for a UTF-8
        # client: take them as they are, decoded per value by `_decode_batch`.
        driver.execute("SET client_encoding TO 'SQL_ASCII'")
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
                    column_types={c: pa.binary() for c in columns},
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,  # COPY writes NULL unquoted and '' as ""
                    null_values=[""],
                ),
            )
            for batch in reader:
                yield _decode_batch(batch, columns, order_by, undecodable)
        finally:
            raw.stop()


def _text_as_bytes(conn: Any) -> None:
    """psycopg2 decodes text in the connection's encoding and fails the whole fetch on one bad
    row (a SQL_ASCII database holds any bytes): take bytes and decode each value here instead."""
    driver = conn.connection.driver_connection
    if type(driver).__module__.startswith("psycopg2"):
        import psycopg2.extensions as ext

        ext.register_type(ext.BYTES, driver)


def _iter_rows(
    conn: Any,
    query: Any,
    columns: list[str],
    chunk_rows: int,
    order_by: str,
    undecodable: list[dict[str, Any]],
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    schema = pa.schema([(c, pa.string()) for c in columns])
    key_index = columns.index(order_by) if order_by in columns else None
    _text_as_bytes(conn)
    result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(query)
    for chunk in result.partitions(chunk_rows):
        if not chunk:
            continue
        rows = []
        for n, row in enumerate(chunk):
            bad: list[str] = []
            values = [
                decode_text(v, c, bad) if isinstance(v, bytes) else as_text(v)
                for c, v in zip(columns, row, strict=True)
            ]
            if bad:
                undecodable.append({"key": _row_key(values, key_index, n), "columns": bad})
            rows.append(values)
        arrays = [pa.array(list(col), type=pa.string()) for col in zip(*rows, strict=True)]
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
    undecodable: list[dict[str, Any]] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream one planned partition as Arrow batches of text columns.

    ``on_batch(connection, rows_so_far)`` is called after each batch (progress, fault drills).
    Rows whose bytes are not UTF-8 are appended to ``undecodable`` as ``{"key", "columns"}``.
    """
    import sqlalchemy as sa

    url = url if url is not None else source_url(source)
    if item.get("watermark", {}) and item["watermark"].get("empty"):
        return
    engine = read_only_engine(url)
    dialect = engine.dialect.name
    query = build_query(source, item, order_by, dialect)
    sample = item.get("sample") or {}
    rows = 0
    try:
        with engine.connect() as conn:
            sink = undecodable if undecodable is not None else []
            if uses_copy(url):
                batches = _iter_copy(conn, query, list(source.columns), order_by, sink)
            else:
                batches = _iter_rows(conn, query, list(source.columns), source.chunk_rows, order_by, sink)
            for batch in batches:
                batch = sample_batch(batch, order_by, sample.get("fraction"), sample.get("seed", 0))
                rows += batch.num_rows
                if batch.num_rows:
                    yield batch
                if on_batch is not None:
                    on_batch(conn, rows)
    except sa.exc.SQLAlchemyError as exc:
        raise _failure(source, exc, engine, order_by) from None
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            raise _failure(source, exc, engine, order_by) from None
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
    undecodable: list[dict[str, Any]] = []
    batches = [
        b for item in items for b in iter_sql_batches(source, item, order_by, url, undecodable=undecodable)
    ]
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
        UNDECODABLE: undecodable,
    }
    return table, meta


def sa_dialect(url: Any) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).get_backend_name()
