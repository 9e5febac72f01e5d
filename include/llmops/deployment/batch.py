"""Batch inference: score a table with the champion and upsert the answers into a results table.

Rows come from ``batch_inference.table`` (or a ``query`` with bound parameters) through the
connection's SQLAlchemy engine, in key order, ``chunk_rows`` at a time. Each row's prompt is the
spec's prompt template over its columns, with the PII types of ``privacy.free_text`` masked (the
model was trained on redacted text, and raw PII must reach neither the model nor the results).

Results go to ``target_table``, one row per (record key, model name, model version):

    record_key, model_name, model_version, prompt_sha256, answer, airflow_run_id, scored_at

written with the dialect's upsert (PostgreSQL and SQLite ``ON CONFLICT DO UPDATE``, MySQL/MariaDB
``ON DUPLICATE KEY UPDATE``), one transaction per chunk. A row whose key already has an answer
from this version for the same prompt (same hash) is not scored again, so a rerun or a retry
after a crash yields the same rows and no duplicates, and only new or changed rows cost model time.
``scored_at`` is the run's logical time, not the wall clock, for the same reason.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

from llmops.errors import PermanentError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import sqlalchemy as sa

    from llmops.specs import PipelineSpec
    from llmops.specs.schema import BatchInferenceSpec

log = logging.getLogger(__name__)

KEY_MAX = 255


class BatchInputError(PermanentError, ValueError):
    """The source rows cannot be scored as configured (missing column, empty or repeated key)."""


def results_table(batch: BatchInferenceSpec, metadata: sa.MetaData) -> sa.Table:
    import sqlalchemy as sa

    return sa.Table(
        batch.target_table,
        metadata,
        sa.Column("record_key", sa.String(KEY_MAX), primary_key=True),
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("model_version", sa.String(32), primary_key=True),
        sa.Column("prompt_sha256", sa.String(64), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("airflow_run_id", sa.String(250), nullable=False),
        sa.Column("scored_at", sa.String(40), nullable=False),
        schema=batch.target_schema,
    )


def upsert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> int:
    """Insert or replace rows by primary key, in the dialect's own statement."""
    if not rows:
        return 0
    dialect = conn.dialect.name
    keys = [c.name for c in table.primary_key.columns]
    updates = [c.name for c in table.columns if c.name not in keys]
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in updates})
    elif dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        stmt = mysql_insert(table)
        stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in updates})
    else:
        raise BatchInputError(f"batch_inference target: no upsert for database dialect '{dialect}'")
    conn.execute(stmt, rows)
    return len(rows)


def _source(batch: BatchInferenceSpec, columns: list[str]) -> tuple[Any, dict[str, Any]]:
    """The source as a selectable with the needed columns, and the query's bound parameters."""
    import sqlalchemy as sa

    if batch.table is not None:
        return sa.Table(
            batch.table, sa.MetaData(), *(sa.Column(c) for c in columns), schema=batch.db_schema
        ), {}
    text = sa.text(batch.query or "").columns(*(sa.column(c) for c in columns))
    return text.subquery("batch_source"), dict(batch.params)


def check_columns(engine: sa.Engine, batch: BatchInferenceSpec, columns: list[str]) -> None:
    """Fail with the missing column names before anything is scored."""
    import sqlalchemy as sa

    if batch.table is not None:
        found = {c["name"] for c in sa.inspect(engine).get_columns(batch.table, schema=batch.db_schema)}
        what = f"table '{batch.table}'"
    else:
        probe = sa.select(sa.text("*")).select_from(sa.text(f"({batch.query}) AS batch_probe")).limit(0)
        with engine.connect() as conn:
            found = set(conn.execute(probe, dict(batch.params)).keys())
        what = "the query"
    missing = [c for c in columns if c not in found]
    if missing:
        raise BatchInputError(
            f"batch_inference: {what} has no column(s) {', '.join(repr(c) for c in missing)} "
            f"(needed by key_column and the prompt template; it has {', '.join(sorted(found)) or 'none'})"
        )


def read_pages(
    engine: sa.Engine, batch: BatchInferenceSpec, columns: list[str]
) -> Iterator[list[dict[str, Any]]]:
    """The source rows in key order, a page at a time (keyset pagination: no cursor stays open
    while results are written, which matters when source and target are one SQLite file)."""
    import sqlalchemy as sa

    source, params = _source(batch, columns)
    key = source.c[batch.key_column]
    last: Any = None
    left = batch.max_rows
    while left is None or left > 0:
        size = batch.chunk_rows if left is None else min(batch.chunk_rows, left)
        stmt = sa.select(*(source.c[c] for c in columns)).order_by(key).limit(size)
        if last is not None:
            stmt = stmt.where(key > last)
        with engine.connect() as conn:
            page = [dict(r) for r in conn.execute(stmt, params).mappings()]
        if not page:
            return
        yield page
        last = page[-1][batch.key_column]
        if left is not None:
            left -= len(page)
        if len(page) < size:
            return


def redactor(spec: PipelineSpec) -> Callable[[str], tuple[str, int]]:
    """Mask the spec's free-text PII types (all of them as masks: no key is needed to score)."""
    from llmops.privacy.pii import redact_text

    batch = spec.batch_inference
    free_text = spec.privacy.free_text
    if batch is None or not batch.redact_pii or free_text is None:
        return lambda text: (text, 0)
    actions = dict.fromkeys(free_text.types, "mask")

    def redact(text: str) -> tuple[str, int]:
        new_text, counts = redact_text(text, actions)
        return new_text, sum(counts.values())

    return redact


def prompt_of(template: str, row: dict[str, Any]) -> str:
    try:
        return template.format(**{k: ("" if v is None else str(v)) for k, v in row.items()})
    except KeyError as exc:
        raise BatchInputError(
            f"the prompt template uses column {exc} that the source does not return"
        ) from None


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def score_table(
    spec: PipelineSpec,
    *,
    source: sa.Engine,
    target: sa.Engine,
    predict: Callable[[list[str]], list[str]],
    model_name: str,
    model_version: str,
    run_id: str,
    scored_at: str,
) -> dict[str, Any]:
    """Score the source rows not yet answered by this version (for their current prompt); upsert."""
    import sqlalchemy as sa

    from llmops.specs.schema import template_fields

    batch = spec.batch_inference
    assert batch is not None
    template = batch.prompt_template or spec.training.prompt_template
    columns = sorted({batch.key_column, *template_fields(template)})
    if not sa.inspect(source).has_table(batch.table or "", schema=batch.db_schema) and batch.table:
        raise BatchInputError(
            f"batch_inference.table '{batch.table}' does not exist in connection '{batch.conn_id}'"
        )
    check_columns(source, batch, columns)
    metadata = sa.MetaData()
    table = results_table(batch, metadata)
    metadata.create_all(target, checkfirst=True)
    with target.connect() as conn:
        done = dict(
            conn.execute(
                sa.select(table.c.record_key, table.c.prompt_sha256).where(
                    table.c.model_name == model_name, table.c.model_version == model_version
                )
            ).all()
        )
    redact = redactor(spec)
    counts = {"rows_read": 0, "rows_scored": 0, "rows_unchanged": 0, "pii_redactions": 0}
    seen: set[str] = set()
    pending: list[tuple[str, str, str]] = []  # (key, prompt, prompt hash)
    started = time.monotonic()
    model_seconds = 0.0

    def flush() -> None:
        nonlocal model_seconds
        if not pending:
            return
        t0 = time.monotonic()
        answers = predict([p for _, p, _ in pending])
        model_seconds += time.monotonic() - t0
        if len(answers) != len(pending):
            raise RuntimeError(f"the model returned {len(answers)} answers for {len(pending)} prompts")
        rows = []
        for (key, _, digest), answer in zip(pending, answers, strict=True):
            clean, redactions = redact(str(answer))
            counts["pii_redactions"] += redactions
            rows.append(
                {
                    "record_key": key,
                    "model_name": model_name,
                    "model_version": model_version,
                    "prompt_sha256": digest,
                    "answer": clean,
                    "airflow_run_id": run_id,
                    "scored_at": scored_at,
                }
            )
        with target.begin() as conn:
            counts["rows_scored"] += upsert(conn, table, rows)
        pending.clear()

    for row in (row for page in read_pages(source, batch, columns) for row in page):
        counts["rows_read"] += 1
        key = row.get(batch.key_column)
        if key is None or str(key) == "":
            raise BatchInputError(f"row {counts['rows_read']}: key column '{batch.key_column}' is empty")
        key = str(key)
        if len(key) > KEY_MAX or key in seen:
            raise BatchInputError(
                f"key '{batch.key_column}' of row {counts['rows_read']} is "
                + ("longer than 255 characters" if len(key) > KEY_MAX else "not unique in the source")
            )
        seen.add(key)
        prompt, redactions = redact(prompt_of(template, row))
        counts["pii_redactions"] += redactions
        digest = sha256(prompt)
        if done.get(key) == digest:
            counts["rows_unchanged"] += 1
            continue
        pending.append((key, prompt, digest))
        if len(pending) >= batch.chunk_rows:
            flush()
    flush()
    return {
        **counts,
        "seconds": round(time.monotonic() - started, 3),
        "model_seconds": round(model_seconds, 3),
        "target_table": ".".join(p for p in (batch.target_schema, batch.target_table) if p),
    }


def subject_keys(spec: PipelineSpec, source: sa.Engine, matches: Callable[[Any], bool]) -> set[str]:
    """Keys of the batch table's rows that belong to a data subject (by the dataset's subject
    column, when the batch table has it), read in chunks: the source is never loaded whole."""
    import sqlalchemy as sa

    batch = spec.batch_inference
    column = spec.dataset.subject_column
    if batch is None or batch.table is None or not column:
        return set()
    inspector = sa.inspect(source)
    if not inspector.has_table(batch.table, schema=batch.db_schema):
        return set()
    found = {c["name"] for c in inspector.get_columns(batch.table, schema=batch.db_schema)}
    if column not in found or batch.key_column not in found:
        return set()
    table = sa.Table(
        batch.table, sa.MetaData(), sa.Column(batch.key_column), sa.Column(column), schema=batch.db_schema
    )
    keys: set[str] = set()
    query = sa.select(table.c[batch.key_column], table.c[column]).where(table.c[column].is_not(None))
    with source.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=5000).execute(query)
        for key, value in result:
            if key is not None and matches(value):
                keys.add(str(key))
    return keys


def delete_answers(spec: PipelineSpec, target: sa.Engine, keys: set[str]) -> int:
    """Delete every model's answers for these record keys from the results table (erasure)."""
    import sqlalchemy as sa

    batch = spec.batch_inference
    if batch is None or not keys:
        return 0
    if not sa.inspect(target).has_table(batch.target_table, schema=batch.target_schema):
        return 0
    table = results_table(batch, sa.MetaData())
    ordered = sorted(keys)
    removed = 0
    with target.begin() as conn:
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            removed += conn.execute(sa.delete(table).where(table.c.record_key.in_(chunk))).rowcount or 0
    return removed


def erase_answers(spec: PipelineSpec, keys: set[str], is_subject: Callable[[Any], bool]) -> int:
    """Delete the batch answers of a data subject's records: the keys the lake held, plus the batch
    table's rows whose subject column holds the subject. Returns the rows deleted."""
    from llmops.connections import engine_for

    batch = spec.batch_inference
    if batch is None:
        return 0
    source = engine_for(batch.conn_id)
    target = engine_for(batch.target_conn_id) if batch.target_conn_id else source
    try:
        return delete_answers(spec, target, set(keys) | subject_keys(spec, source, is_subject))
    finally:
        source.dispose()
        target.dispose()
