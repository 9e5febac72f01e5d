"""Extract CSV, JSON Lines or Parquet files under a prefix: ``s3://bucket/prefix/`` or a local folder.

Files are read in name order and rows sorted by the dataset key, so the same files always give the
same table (and so the same raw snapshot id). Every value becomes text, as the SQL and REST
extractors keep it, because typing is a normalisation rule. Columns a file has beyond the spec,
and spec columns a file lacks, are reported as schema drift (counted per row) instead of failing
the run; a missing column is null. Error messages name the file and line but never quote a row,
since rows may hold personal data.

S3 credentials come from the source's Airflow AWS connection, through the Amazon provider (see
`llmops.storage.s3_filesystem`); a source without one uses the lake's connection.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from llmops import storage
from llmops.errors import safe_error_text
from llmops.ingest.common import UNDECODABLE, SourceError, as_text, decode_binary, sample_mask

if TYPE_CHECKING:
    import pyarrow as pa

    from llmops.specs.schema import FileSource

log = logging.getLogger(__name__)

__all__ = ["SourceError", "extract_files"]


class _Drift:
    """Per-row counts of fields outside the spec and spec columns absent, as the REST extractor keeps;
    also the rows that were not UTF-8 (by `key`), which validation quarantines."""

    def __init__(self, wanted: list[str], key: str | None = None) -> None:
        self.wanted = wanted
        self.key = key
        self.unexpected: Counter[str] = Counter()
        self.missing: Counter[str] = Counter()
        self.undecodable: list[dict[str, Any]] = []

    def add_columns(self, present: list[str], rows: int) -> None:
        """A file whose every row has the same fields (CSV header, Parquet schema)."""
        if not rows:
            return
        for name in present:
            if name not in self.wanted:
                self.unexpected[name] += rows
        for name in self.wanted:
            if name not in present:
                self.missing[name] += rows

    def add_record(self, record: dict[str, Any]) -> None:
        self.unexpected.update(k for k in record if k not in self.wanted)
        self.missing.update(c for c in self.wanted if c not in record)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"unexpected_fields": dict(self.unexpected), "missing_fields": dict(self.missing)}


def _text_column(column: Any) -> Any:
    """A column of any Arrow type as text, the way `as_text` renders a value (timestamps ISO, ...)."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
        column = column.cast(kind)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind):
        return column.cast(pa.string())  # identical to str(), and vectorised
    return pa.array([as_text(v) for v in column.to_pylist()], type=pa.string())


def _select(columns: dict[str, Any], wanted: list[str], rows: int) -> pa.Table:
    """The spec's columns in the spec's order; a column the file lacks is all null."""
    import pyarrow as pa

    arrays = [columns[c] if c in columns else pa.nulls(rows, type=pa.string()) for c in wanted]
    return pa.Table.from_arrays(arrays, names=wanted)


def _csv_names(data: bytes, source: FileSource, file: str) -> list[str] | None:
    """Column names: the header row, or the spec's columns by position when there is no header."""
    try:
        # Read-ahead reaches rows past the header: their bytes are checked per row later.
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", errors="replace", newline="")
        first = next(csv.reader(text, delimiter=source.csv.delimiter), None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(
            f"source '{source.name}': {file}: unreadable first row ({type(exc).__name__})"
        ) from None
    if first is None:
        return None
    if not source.csv.header:
        wanted = list(source.columns)
        return [wanted[i] if i < len(wanted) else f"column_{i + 1}" for i in range(len(first))]
    duplicates = sorted({n for n in first if first.count(n) > 1})
    if duplicates:
        raise SourceError(
            f"source '{source.name}': {file}: repeated header column(s) {', '.join(duplicates)}"
        )
    return first


def _read_csv(data: bytes, source: FileSource, file: str, drift: _Drift) -> pa.Table:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    wanted = list(source.columns)
    names = _csv_names(data, source, file)
    if names is None:  # an empty file
        return _select({}, wanted, 0)
    invalid: list[Any] = []

    def on_invalid_row(row: Any) -> str:
        invalid.append(row)
        return "error"

    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            # Single-threaded so that a bad row's number is known; Arrow parses the header itself
            # (skip_rows would count lines, and a quoted header name may span two).
            read_options=pacsv.ReadOptions(
                column_names=None if source.csv.header else names, use_threads=False
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=source.csv.delimiter, invalid_row_handler=on_invalid_row
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.binary() for n in names},  # decoded below, a bad row quarantined
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=False,  # "" stays an empty string; only a bare empty is null
            ),
        )
    except pa.ArrowInvalid as exc:
        if invalid:
            row = invalid[0]
            where = f"row {row.number}" if row.number is not None else "a row"  # CSV rows, header included
            detail = f"{where} has {row.actual_columns} fields, expected {row.expected_columns}"
        else:  # never quote the row: Arrow's message ends with its text
            detail = ": ".join(str(exc).split(": ")[:2])
        raise SourceError(f"source '{source.name}': {file}: {detail}") from None
    present = table.column_names  # as Arrow parsed the header; the types asked for are by these names
    drift.add_columns(present, table.num_rows)
    kept = {n: table.column(n) for n in present if n in wanted}
    return _select(decode_binary(kept, drift.key or "", drift.undecodable), wanted, table.num_rows)


def _read_jsonl(data: bytes, source: FileSource, file: str, drift: _Drift) -> pa.Table:
    import pyarrow as pa

    wanted = list(source.columns)
    records: list[dict[str, Any]] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if not raw.strip():
            continue
        try:
            text, bad = raw.decode("utf-8"), False
        except UnicodeDecodeError:  # quarantined at validation, not a failed source
            text, bad = raw.decode("utf-8", errors="replace"), True
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(
                f"source '{source.name}': {file} line {number} is not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(record, dict):
            raise SourceError(
                f"source '{source.name}': {file} line {number} is a JSON {type(record).__name__}, expected an object"
            )
        drift.add_record(record)
        records.append(record)
        if bad:
            key = as_text(record.get(drift.key)) if drift.key else None
            columns = [c for c in wanted if "\ufffd" in (as_text(record.get(c)) or "")]
            drift.undecodable.append({"key": key or f"{file}:{number}", "columns": columns or ["(line)"]})
    columns = {c: pa.array([as_text(r.get(c)) for r in records], type=pa.string()) for c in wanted}
    return _select(columns, wanted, len(records))


def _read_parquet(data: bytes, source: FileSource, file: str, drift: _Drift) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = list(source.columns)
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        names = parquet.schema_arrow.names
        table = parquet.read(columns=[n for n in names if n in wanted])
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(
            f"source '{source.name}': {file} is not a readable Parquet file ({safe_error_text(exc)})"
        ) from None
    drift.add_columns(names, table.num_rows)
    return _select({n: _text_column(table.column(n)) for n in table.column_names}, wanted, table.num_rows)


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What listing or reading can raise: OSError, and botocore's own (endpoint unreachable, ...)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return (OSError,)
    return (OSError, BotoCoreError, ClientError)


_READERS = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}


def _sample(table: pa.Table, source: FileSource, order_by: str) -> tuple[pa.Table, dict[str, Any] | None]:
    """The same seeded, key-hashed sample the SQL extractor takes, so sources sample alike."""
    import pyarrow as pa

    if source.sample is None:
        return table, None
    if source.sample.fraction is not None:
        fraction = source.sample.fraction
    else:
        fraction = min(1.0, source.sample.rows / table.num_rows) if table.num_rows else 1.0
    if fraction < 1:
        mask = sample_mask(table.column(order_by).to_pylist(), fraction, source.sample.seed)
        table = table.filter(pa.array(mask, type=pa.bool_()))
    return table, {"fraction": fraction, "seed": source.sample.seed}


def extract_files(source: FileSource, order_by: str) -> tuple[pa.Table, dict[str, Any]]:
    """Read every file under the source's prefix matching its pattern into one text table.

    Returns the table (the spec's columns, all strings, sorted by `order_by`) and metadata for
    the snapshot manifest: the files read with their sizes and hashes, row count and schema drift.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = list(source.columns)
    if order_by not in wanted:
        raise SourceError(f"source '{source.name}': the order column '{order_by}' is not among its columns")
    where = f"source '{source.name}' ({source.uri}, pattern '{source.pattern}')"
    try:
        uris = storage.list_files(source.uri, source.pattern, conn_id=source.conn_id)
    except (*_storage_errors(), ValueError) as exc:
        # A ValueError is llmops.storage's own refusal of the pattern: its message names only that.
        detail = f"ValueError: {exc}" if isinstance(exc, ValueError) else safe_error_text(exc)
        raise SourceError(f"{where}: cannot list files ({detail})") from None
    if not uris:
        raise SourceError(f"{where}: no files match the pattern under the URI")

    reader = _READERS[source.format]
    drift = _Drift(wanted, order_by)
    base = source.uri.rstrip("/")
    tables: list[pa.Table] = []
    files: list[dict[str, Any]] = []
    for uri in uris:
        name = uri[len(base) + 1 :]
        try:
            data = storage.read_bytes(uri, conn_id=source.conn_id)
        except _storage_errors() as exc:
            raise SourceError(f"{where}: cannot read {name} ({safe_error_text(exc)})") from None
        files.append({"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        tables.append(reader(data, source, name, drift))

    table = pa.concat_tables(tables)
    order = pc.sort_indices(table, sort_keys=[(order_by, "ascending", "at_start")])
    table = table.take(order).combine_chunks()
    table, sample = _sample(table, source, order_by)

    schema_drift = drift.as_dict()
    if drift.unexpected or drift.missing:
        log.warning("source %s: schema drift %s", source.name, schema_drift)
    meta = {
        "kind": "files",
        "uri": source.uri,
        "pattern": source.pattern,
        "format": source.format,
        "columns": wanted,
        "files": files,
        "row_count": table.num_rows,
        "schema_drift": schema_drift,
        "sample": sample,
        UNDECODABLE: drift.undecodable,
    }
    log.info(
        "source %s: %d rows from %d %s file(s) under %s",
        source.name,
        table.num_rows,
        len(files),
        source.format,
        source.uri,
    )
    return table, meta
