"""Planned SQL extraction on real SQLite, PostgreSQL (both drivers) and MariaDB: partitions,
watermarks, parameterised queries, sampling, and faults mid-extraction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
import sqlalchemy as sa

from llmops.ingest.common import SourceError
from llmops.ingest.sql import iter_sql_batches, plan_sql
from llmops.specs.schema import SqlSource

GOVERNANCE = {"data_owner": "o", "purposes": ["p"], "lawful_basis": "contract"}
N = 1200
START = datetime(2026, 9, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres", "postgres_copy", "mariadb"])
def db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'src.db'}"
    elif request.param == "postgres_copy":
        url = request.getfixturevalue("postgres_url").replace("+psycopg2", "+psycopg")
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    name = f"events_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    table = sa.Table(
        name,
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("code", sa.String(20)),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("region", sa.String(10)),
        sa.Column("body", sa.Text),
    )
    meta.create_all(engine)
    rows = [
        {
            "id": i - 600,  # negative keys too: mod partitions must still cover them
            "code": f"C-{i:05d}",
            "updated_at": (START + timedelta(minutes=i)).replace(tzinfo=None),
            "region": "eu" if i % 3 else "us",
            "body": None if i % 97 == 0 else f"event {i}",
        }
        for i in range(N)
    ]
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    yield {"url": url, "table": name, "engine": engine, "sa_table": table, "kind": request.param}
    meta.drop_all(engine)
    engine.dispose()


def _source(table: str, **kw) -> SqlSource:
    base = {
        "kind": "sql",
        "name": "events",
        "conn_id": "unused",
        "table": table,
        "columns": ["id", "code", "updated_at", "region", "body"],
        "governance": GOVERNANCE,
        "chunk_rows": 100,
    }
    base.update(kw)
    if "query" in kw:
        base.pop("table")
    return SqlSource.model_validate(base)


def _read(source: SqlSource, items: list[dict], url: str, key: str = "id") -> list[list[dict]]:
    return [
        pa.Table.from_batches(
            list(iter_sql_batches(source, item, key, url)), schema=_schema(source)
        ).to_pylist()
        for item in items
    ]


def _schema(source: SqlSource) -> pa.Schema:
    return pa.schema([(c, pa.string()) for c in source.columns])


@pytest.mark.parametrize("method", ["mod", "range", "hash"])
def test_partitions_cover_every_row_exactly_once(db, method):
    """Expect partitions to be disjoint, to cover the table, and each to be ordered by the key."""
    if method == "hash" and db["kind"] == "sqlite":
        source = _source(db["table"], partitioning={"column": "id", "method": "hash", "partitions": 4})
        with pytest.raises(SourceError, match="'hash' is not available on sqlite; use 'mod'"):
            _read(source, plan_sql(source, "id", None, db["url"]), db["url"])
        return
    source = _source(db["table"], partitioning={"column": "id", "method": method, "partitions": 4})
    items = plan_sql(source, "id", None, db["url"])
    assert [i["partition"] for i in items] == [0, 1, 2, 3]
    parts = _read(source, items, db["url"])
    ids = [int(r["id"]) for part in parts for r in part]
    assert sorted(ids) == list(range(-600, N - 600))
    assert all(len(p) > 0 for p in parts)
    for part in parts:
        keys = [int(r["id"]) for r in part]
        assert keys == sorted(keys)


def test_watermark_reads_only_newer_rows_up_to_the_planned_high(db):
    """Expect (low, high] filtering, with `high` fixed at plan time despite rows inserted afterwards."""
    source = _source(db["table"], incremental={"column": "updated_at"})
    first = plan_sql(source, "id", None, db["url"])
    (rows,) = _read(source, first, db["url"])
    assert len(rows) == N
    high = first[0]["watermark"]["high"]
    assert high.startswith("2026-09-01 19:59:00")  # the last row: START + 1199 minutes
    with db["engine"].begin() as conn:  # arrives after planning: must wait for the next run
        conn.execute(
            db["sa_table"].insert(),
            [
                {
                    "id": 5000,
                    "code": "late",
                    "updated_at": datetime(2026, 10, 1),
                    "region": "eu",
                    "body": "late",
                }
            ],
        )
    (again,) = _read(source, first, db["url"])
    assert len(again) == N
    second = plan_sql(source, "id", high, db["url"])
    (new_rows,) = _read(source, second, db["url"])
    assert [r["code"] for r in new_rows] == ["late"]
    third = plan_sql(source, "id", second[0]["watermark"]["high"], db["url"])
    assert third[0]["watermark"]["empty"] and _read(source, third, db["url"]) == [[]]


def test_parameterised_query_source(db):
    """Expect a query source with bound parameters; a quote in a value cannot break out."""
    query = f"SELECT id, code, updated_at, region, body FROM {db['table']} WHERE region = :region"
    source = _source(db["table"], query=query, params={"region": "us"})
    (rows,) = _read(source, plan_sql(source, "id", None, db["url"]), db["url"])
    assert len(rows) == 400 and {r["region"] for r in rows} == {"us"}
    hostile = _source(db["table"], query=query, params={"region": "us' OR '1'='1"})
    assert _read(hostile, plan_sql(hostile, "id", None, db["url"]), db["url"]) == [[]]


def test_sampling_is_seeded_and_stable(db):
    """Expect a fraction sample to pick the same rows every time, and a different seed other rows."""
    a = _source(db["table"], sample={"fraction": 0.25, "seed": 1})
    b = _source(db["table"], sample={"fraction": 0.25, "seed": 2})
    (rows_a,) = _read(a, plan_sql(a, "id", None, db["url"]), db["url"])
    (rows_a2,) = _read(a, plan_sql(a, "id", None, db["url"]), db["url"])
    (rows_b,) = _read(b, plan_sql(b, "id", None, db["url"]), db["url"])
    assert rows_a == rows_a2 and rows_a != rows_b
    assert 0.18 * N < len(rows_a) < 0.32 * N
    rows_source = _source(db["table"], sample={"rows": 100, "seed": 1})
    (rows_n,) = _read(rows_source, plan_sql(rows_source, "id", None, db["url"]), db["url"])
    assert 60 < len(rows_n) < 140


def test_connection_dropped_mid_extraction_fails_clearly(postgres_url):
    """Expect a server-side kill of the extracting session to raise a SourceError, not a partial result."""
    url = postgres_url.replace("+psycopg2", "+psycopg")
    engine = sa.create_engine(url)
    name = f"big_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {name} AS SELECT g AS id, repeat('x', 200) AS body FROM generate_series(1, 1000000) g"
        )
    try:
        source = SqlSource.model_validate(
            {
                "kind": "sql",
                "name": "big",
                "conn_id": "unused",
                "table": name,
                "columns": ["id", "body"],
                "governance": GOVERNANCE,
                "chunk_rows": 1000,
            }
        )

        def kill_session(conn, rows):
            pid = conn.connection.driver_connection.info.backend_pid
            with engine.connect() as admin:
                admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        (item,) = plan_sql(source, "id", None, url)
        with pytest.raises(SourceError, match=r"source 'big' \(connection 'unused', table 'big_"):
            for _ in iter_sql_batches(source, item, "id", url, on_batch=kill_session):
                pass
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {name}")
        engine.dispose()
