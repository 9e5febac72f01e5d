"""SQL extraction against real SQLite, PostgreSQL and MariaDB databases."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa

from llmops.connections import get_connection, sqlalchemy_url
from llmops.ingest.sql import SourceError, extract_sql
from llmops.specs.schema import SqlSource

GOVERNANCE = {"data_owner": "o", "purposes": ["p"], "lawful_basis": "contract"}
ROWS = [
    {"ticket_id": "T-3", "body": "Grüße aus Köln", "priority": 2, "created_at": "2026-09-01 08:00:00"},
    {"ticket_id": "T-1", "body": None, "priority": 1, "created_at": "2026-09-02 09:30:00"},
    {"ticket_id": "T-2", "body": "plain ascii", "priority": None, "created_at": "2026-09-03 10:00:00"},
    {"ticket_id": "T-4", "body": "", "priority": 4, "created_at": "2026-09-04 10:00:00"},
    {
        "ticket_id": "T-5",
        "body": 'two\nlines, a comma and "quotes"',
        "priority": 5,
        "created_at": "2026-09-05 11:00:00",
    },
]


@pytest.fixture(params=["sqlite", "postgres", "postgres_copy", "mariadb"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'src.db'}"
    if request.param == "postgres_copy":  # psycopg 3: the COPY fast path
        return request.getfixturevalue("postgres_url").replace("+psycopg2", "+psycopg")
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def source_table(db_url):
    name = f"tickets_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(db_url)
    meta = sa.MetaData()
    table = sa.Table(
        name,
        meta,
        sa.Column("ticket_id", sa.String(20), primary_key=True),
        sa.Column("body", sa.Text),
        sa.Column("priority", sa.Integer),
        sa.Column("created_at", sa.DateTime),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        from datetime import datetime

        conn.execute(
            table.insert(),
            [{**r, "created_at": datetime.fromisoformat(r["created_at"])} for r in ROWS],
        )
    yield db_url, name
    meta.drop_all(engine)
    engine.dispose()


def _source(table: str, columns=("ticket_id", "body", "priority", "created_at")) -> SqlSource:
    return SqlSource(
        kind="sql", name="db", conn_id="unused", table=table, columns=list(columns), governance=GOVERNANCE
    )


def test_extracts_all_rows_ordered_as_text(source_table):
    """Expect every row, ordered by key, with values as text and NULLs kept as nulls."""
    url, table = source_table
    result, meta = extract_sql(_source(table), order_by="ticket_id", url=url)
    rows = result.to_pylist()
    assert [r["ticket_id"] for r in rows] == ["T-1", "T-2", "T-3", "T-4", "T-5"]
    assert rows[0]["body"] is None and rows[2]["body"] == "Grüße aus Köln"
    assert rows[1]["priority"] is None and rows[0]["priority"] == "1"
    assert rows[2]["created_at"].startswith("2026-09-01")
    assert rows[3]["body"] == "" and rows[4]["body"] == 'two\nlines, a comma and "quotes"'
    assert meta["row_count"] == 5 and meta["table"] == table


def test_column_selection(source_table):
    url, table = source_table
    result, _ = extract_sql(_source(table, ["ticket_id", "body"]), order_by="ticket_id", url=url)
    assert result.column_names == ["ticket_id", "body"]


def test_missing_table_names_source_and_table(db_url):
    """Expect a clear error naming the source and table when the table does not exist."""
    with pytest.raises(SourceError, match=r"source 'db' \(connection 'unused', table 'no_such_table'\)"):
        extract_sql(_source("no_such_table"), order_by="ticket_id", url=db_url)


def test_wrong_password_error_hides_secret(mariadb_url, caplog):
    """Expect that a rejected credential fails clearly without echoing the password, in errors or logs."""
    import logging

    caplog.set_level(logging.DEBUG)
    url = sa.make_url(mariadb_url).set(username="llmops_nobody", password="hunter2-secret-value")
    with pytest.raises(SourceError) as info:
        extract_sql(_source("tickets"), order_by="ticket_id", url=url)
    assert "hunter2-secret-value" not in str(info.value)
    assert "Access denied" in str(info.value) and "connection 'unused'" in str(info.value)
    assert "hunter2-secret-value" not in caplog.text


def test_airflow_connection_to_sqlalchemy_url(monkeypatch, tmp_path):
    """Expect Airflow connections of each database type to map to SQLAlchemy URLs."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_T_SQLITE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "a.db")})
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_T_PG",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": 5432,
                "login": "u",
                "password": "p@ss/word",
                "schema": "db",
            }
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_T_MY",
        json.dumps({"conn_type": "mysql", "host": "127.0.0.1", "login": "root", "schema": "test"}),
    )
    assert sqlalchemy_url(get_connection("t_sqlite")).database == str(tmp_path / "a.db")
    pg = sqlalchemy_url(get_connection("t_pg"))
    assert (pg.drivername, pg.host, pg.port, pg.username, pg.password, pg.database) == (
        "postgresql+psycopg",
        "127.0.0.1",
        5432,
        "u",
        "p@ss/word",
        "db",
    )
    assert "p@ss/word" not in str(pg)  # SQLAlchemy renders the password masked
    assert sqlalchemy_url(get_connection("t_my")).drivername == "mysql+pymysql"


def test_sources_are_read_in_read_only_sessions(source_table):
    """Expect the extraction engine to refuse a write on every database: whatever slips past the
    spec's query check (a function with side effects, a row lock) cannot change the source."""
    from llmops.connections import read_only_engine

    url, table = source_table
    engine = read_only_engine(sa.make_url(url))
    try:
        with pytest.raises(sa.exc.DBAPIError), engine.connect() as conn:
            conn.execute(sa.text(f"DELETE FROM {table}"))
            conn.commit()
    finally:
        engine.dispose()
    check = sa.create_engine(url)
    with check.connect() as conn:
        assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar() == len(ROWS)
    check.dispose()


def test_a_query_that_locks_rows_is_refused_on_postgres(postgres_url):
    """Expect `SELECT ... FOR UPDATE` (it passes the statement check: it writes no table) to fail
    in the read-only session, naming the source."""
    engine = sa.create_engine(postgres_url)
    name = f"locks_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (ticket_id TEXT PRIMARY KEY, body TEXT)"))
        conn.execute(sa.text(f"INSERT INTO {name} VALUES ('T-1', 'hello')"))
    source = SqlSource(
        kind="sql",
        name="db",
        conn_id="unused",
        query=f"SELECT ticket_id, body FROM {name} FOR UPDATE",
        columns=["ticket_id", "body"],
        governance=GOVERNANCE,
    )
    try:
        with pytest.raises(SourceError, match="source 'db'"):
            extract_sql(source, order_by="ticket_id", url=postgres_url)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {name}"))
        engine.dispose()


@pytest.mark.parametrize(
    "query",
    [
        "WITH gone AS (DELETE FROM tickets RETURNING *) SELECT * FROM gone",
        "SELECT * INTO tickets_copy FROM tickets",
        "WITH u AS (UPDATE tickets SET body = '' RETURNING ticket_id) SELECT * FROM u",
    ],
)
def test_a_query_that_writes_is_refused_by_the_spec(query):
    """Expect statements that start like a read but write a table to be refused, naming the table."""
    with pytest.raises(ValueError, match="query must only read, but it writes to tickets"):
        SqlSource(
            kind="sql", name="db", conn_id="unused", query=query, columns=["ticket_id"], governance=GOVERNANCE
        )


def test_a_delete_in_a_cte_that_reaches_extraction_leaves_the_table_unchanged(postgres_url):
    """Expect a data-modifying CTE that got past the spec check (a spec validated by an older
    release) to fail naming the source, with every row still there. PostgreSQL refuses it twice:
    extraction wraps the query in a subquery, where such a CTE is not allowed, and the session is
    read-only (the row-lock and DELETE tests above show that guard alone)."""
    engine = sa.create_engine(postgres_url)
    name = f"cte_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (ticket_id TEXT PRIMARY KEY, body TEXT)"))
        conn.execute(sa.text(f"INSERT INTO {name} VALUES ('T-1', 'hello'), ('T-2', 'again')"))
    source = SqlSource.model_construct(
        kind="sql",
        name="db",
        conn_id="unused",
        table=None,
        db_schema=None,
        query=f"WITH gone AS (DELETE FROM {name} RETURNING *) SELECT ticket_id, body FROM gone",
        params={},
        columns=["ticket_id", "body"],
        incremental=None,
        partitioning=None,
        sample=None,
        contract=None,
        governance=GOVERNANCE,
    )
    try:
        with pytest.raises(SourceError, match="source 'db'"):
            extract_sql(source, order_by="ticket_id", url=postgres_url)
        with engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {name}")).scalar() == 2
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {name}"))
        engine.dispose()
