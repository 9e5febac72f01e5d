"""When a SQL source breaks: rows that are not UTF-8 are quarantined (the rest goes on), driver
messages that quote row values reach neither the ledger nor lineage nor the logs, and a renamed
column fails once as schema drift while a refused connection stays retryable.

Real PostgreSQL: a SQL_ASCII database (it stores any bytes, as legacy databases do) and the
ingest steps run as the DAG's tasks run them, on a local lake and a SQLite ledger.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from small_pipeline import GOVERNANCE, install, pipeline_spec

from llmops import snapshots
from llmops.ledger.events import ContractViolated, TaskFailed

PIPELINE = "src_failures"
EMAIL = "jane.doe@example.com"
# 'mail jane.doe@example.com \xff bad': invalid UTF-8 in the middle of personal data.
BAD_BYTES = "6d61696c206a616e652e646f65406578616d706c652e636f6d20ff20626164"
# psycopg 2 reads rows through a cursor, psycopg 3 through COPY; psycopg 3 needs a UTF-8 client
# to connect to a SQL_ASCII database at all.
DRIVERS = {"psycopg2": "postgresql+psycopg2", "psycopg_copy": "postgresql+psycopg"}


@pytest.fixture(scope="module")
def ascii_db() -> str:
    """A SQL_ASCII database on the test server (created once; tables are per test)."""
    from servers import require_server

    require_server("PostgreSQL", 5432)
    admin = sa.create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/test", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = 'llmops_sql_ascii'")).first()
        if not exists:
            conn.execute(
                sa.text(
                    "CREATE DATABASE llmops_sql_ascii ENCODING 'SQL_ASCII' TEMPLATE template0 "
                    "LC_COLLATE 'C' LC_CTYPE 'C'"
                )
            )
    admin.dispose()
    return "postgres@127.0.0.1:5432/llmops_sql_ascii"


@pytest.fixture(params=sorted(DRIVERS))
def pipeline(request, ascii_db, tmp_path, monkeypatch) -> dict[str, Any]:
    table = f"tickets_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(f"postgresql+psycopg2://{ascii_db}", client_encoding="utf8")
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (ticket_id varchar(10) PRIMARY KEY, body text)")
        conn.exec_driver_sql(
            f"INSERT INTO {table} VALUES ('T-1', 'Grüße aus Köln'), "
            f"('T-2', convert_from('\\x{BAD_BYTES}'::bytea, 'SQL_ASCII')), ('T-3', 'plain'), ('T-4', 'more')"
        )
    url = f"{DRIVERS[request.param]}://{ascii_db}"
    if request.param == "psycopg_copy":
        url += "?client_encoding=utf8"
    source = {
        "kind": "sql",
        "name": "tickets_db",
        "conn_id": "src_failures_db",
        "table": table,
        "columns": ["ticket_id", "body"],
        "governance": GOVERNANCE,
    }
    install(tmp_path, pipeline_spec(PIPELINE, [source]), monkeypatch.setenv)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SRC_FAILURES_DB",
        json.dumps({"conn_type": "postgres", "extra": {"sqlalchemy_url": url}}),
    )
    try:
        yield {"engine": engine, "table": table, "lake": str(tmp_path / "lake")}
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()


def _ledger_text() -> str:
    from llmops.ledger import get_ledger

    return json.dumps([r.payload for r in get_ledger().records(pipeline=PIPELINE)], default=str)


def test_a_row_that_is_not_utf8_is_quarantined_and_the_rest_proceeds(pipeline, caplog):
    """Expect the undecodable row in quarantine with its reason, the three others validated, and
    the row's e-mail nowhere in the ledger or the logs (before: the whole source failed)."""
    from llmops.orchestration.ingest import extract, validate

    caplog.set_level(logging.DEBUG)
    run_id = f"manual__{uuid.uuid4().hex[:6]}"
    items = extract.plan(PIPELINE, run_id)
    parts = [extract.extract_partition(PIPELINE, item, run_id) for item in items]
    committed = extract.commit_raw(PIPELINE, parts, run_id)
    result = validate.validate(PIPELINE, committed, run_id)

    assert (result["rows_accepted"], result["rows_quarantined"]) == (3, 1)
    quarantine = snapshots.read_snapshot(
        snapshots.snapshot_ref(
            pipeline["lake"], "quarantine", PIPELINE, "rows", result["quarantine_snapshot_id"]
        ),
        _kek(),
    ).to_pylist()
    assert [(r["ticket_id"], r[snapshots.QUARANTINE_REASON]) for r in quarantine] == [
        ("T-2", "undecodable(body: not UTF-8)")
    ]
    validated = snapshots.read_snapshot(
        snapshots.snapshot_ref(
            pipeline["lake"], "raw", PIPELINE, "validated", result["validated_snapshot_id"]
        ),
        _kek(),
    ).to_pandas()
    assert sorted(validated["ticket_id"]) == ["T-1", "T-3", "T-4"]
    assert "Grüße aus Köln" in set(validated["body"])  # valid UTF-8 beyond ASCII is read as such
    assert EMAIL not in _ledger_text()
    assert EMAIL not in caplog.text


def _kek() -> Any:
    from llmops.privacy.keys import get_key_ring

    return get_key_ring()


def test_driver_message_quoting_a_row_reaches_no_ledger_lineage_or_log(
    pipeline, tmp_path, monkeypatch, caplog
):
    """Expect a PostgreSQL error that quotes a row's e-mail (a failed cast) to leave the task as its
    type and SQLSTATE only: in the task.failed ledger row, the OpenLineage FAIL event (message and
    stack trace), the logged traceback and the source error. Before, each held the e-mail."""
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter

    from llmops.errors import ExternalError
    from llmops.ingest.sql import extract_sql
    from llmops.orchestration.dag_support import fail_fast
    from llmops.orchestration.failures import record_task_failure
    from llmops.specs.schema import SqlSource

    caplog.set_level(logging.DEBUG)
    with pipeline["engine"].begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE {pipeline['table']} SET body = 'write to {EMAIL}' WHERE ticket_id = 'T-3'"
        )
    failing = f"SELECT CAST(body AS integer) FROM {pipeline['table']} WHERE ticket_id = 'T-3'"
    with pytest.raises(sa.exc.DataError) as raw:  # the driver's own text does quote the row
        with pipeline["engine"].connect() as conn:
            conn.exec_driver_sql(failing)
    assert EMAIL in str(raw.value)

    with pytest.raises(ExternalError) as info, fail_fast(), pipeline["engine"].connect() as conn:
        conn.exec_driver_sql(failing)
    error = info.value
    assert str(error).startswith("sqlalchemy.exc.DataError (SQLSTATE 22P02")
    assert EMAIL not in "".join(traceback.format_exception(error))

    run_id = f"manual__{uuid.uuid4().hex[:6]}"
    record_task_failure(
        PIPELINE, run_id=run_id, dag_id="d", task_id="extract", map_index=0, try_number=1, error=error
    )
    from llmops.ledger import get_ledger

    (failed,) = get_ledger().records(pipeline=PIPELINE, event_type=TaskFailed.name)
    assert failed.payload["error_type"] == "DataError" and "22P02" in failed.payload["error"]
    assert EMAIL not in _ledger_text()

    events = tmp_path / "lineage" / "events.jsonl"
    monkeypatch.setenv(
        "AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({**conf.transport(), "log_file_path": str(events)})
    )
    OpenLineageAdapter().fail_task(
        run_id=str(uuid.uuid4()),
        job_name="d.extract",
        end_time="2026-01-01T00:00:00+00:00",
        task=OperatorLineage(),
        nominal_start_time=None,
        nominal_end_time=None,
        owners=["qa"],
        tags=[],
        job_description=None,
        error=error,
    )
    (event,) = [json.loads(line) for line in events.read_text().splitlines()]
    assert event["eventType"] == "FAIL" and "22P02" in event["run"]["facets"]["errorMessage"]["message"]
    assert EMAIL not in events.read_text()

    source = SqlSource(
        kind="sql",
        name="casting",
        conn_id="src_failures_db",
        query=f"SELECT ticket_id, CAST(CAST(body AS integer) AS text) AS body FROM {pipeline['table']}",
        columns=["ticket_id", "body"],
        governance=GOVERNANCE,
    )
    url = json.loads(__import__("os").environ["AIRFLOW_CONN_SRC_FAILURES_DB"])["extra"]["sqlalchemy_url"]
    with pytest.raises(Exception) as source_error:
        extract_sql(source, order_by="ticket_id", url=url)
    assert "source 'casting'" in str(source_error.value) and "22P02" in str(source_error.value)
    assert EMAIL not in str(source_error.value)
    assert EMAIL not in caplog.text


def test_a_renamed_column_fails_once_as_schema_drift_recorded_as_a_contract(pipeline):
    """Expect a column renamed before the run to fail planning with SchemaDrift, a permanent error
    naming the source and the column (fail_fast: no retry), recorded as a broken contract."""
    from airflow.sdk.exceptions import AirflowFailException

    from llmops.errors import PermanentError
    from llmops.ingest.common import SchemaDrift
    from llmops.ledger import get_ledger
    from llmops.orchestration.dag_support import fail_fast
    from llmops.orchestration.ingest import extract

    with pipeline["engine"].begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {pipeline['table']} RENAME COLUMN body TO body_text")
    run_id = f"manual__{uuid.uuid4().hex[:6]}"
    with pytest.raises(
        AirflowFailException, match="SchemaDrift: .*tickets_db.*column\\(s\\) body not found"
    ) as info:
        with fail_fast():
            extract.plan(PIPELINE, run_id)
    assert isinstance(info.value.__cause__, SchemaDrift) and isinstance(info.value.__cause__, PermanentError)
    (violated,) = get_ledger().records(pipeline=PIPELINE, event_type=ContractViolated.name)
    (contract,) = violated.payload["contracts"]
    assert contract["source"] == "tickets_db" and contract["missing_columns"] == ["body"]
    assert "body_text" in contract["observed_columns"] and contract["ok"] is False


def test_a_column_dropped_after_planning_fails_the_extraction_as_drift(pipeline):
    """Expect a column dropped between plan and extract (the driver's undefined-column error) to be
    named as schema drift too, recorded with the partition, instead of a retried driver error."""
    from llmops.ingest.common import SchemaDrift
    from llmops.ledger import get_ledger
    from llmops.orchestration.ingest import extract

    run_id = f"manual__{uuid.uuid4().hex[:6]}"
    (item,) = extract.plan(PIPELINE, run_id)
    with pipeline["engine"].begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {pipeline['table']} DROP COLUMN body")
    with pytest.raises(SchemaDrift, match=r"column\(s\) body not found \(the source has ticket_id\)"):
        extract.extract_partition(PIPELINE, item, run_id)
    (violated,) = get_ledger().records(pipeline=PIPELINE, event_type=ContractViolated.name)
    assert violated.payload["inputs"] == [{"source": "tickets_db", "partition": 0}]
    assert violated.payload["contracts"][0]["missing_columns"] == ["body"]


def test_a_refused_connection_stays_retryable(pipeline, monkeypatch):
    """Expect a connection refused (nothing listens) to leave fail_fast as a plain SourceError, which
    Airflow retries, not as an immediate failure; named by source and driver type, the driver's
    text (host, user, statement) withheld."""
    from llmops.errors import PermanentError
    from llmops.ingest.common import SourceError
    from llmops.orchestration.dag_support import fail_fast
    from llmops.orchestration.ingest import extract

    monkeypatch.setenv(
        "AIRFLOW_CONN_SRC_FAILURES_DB",
        json.dumps(
            {"conn_type": "postgres", "extra": {"sqlalchemy_url": "postgresql+psycopg2://u@127.0.0.1:9/x"}}
        ),
    )
    with pytest.raises(SourceError) as info, fail_fast():
        extract.plan(PIPELINE, f"manual__{uuid.uuid4().hex[:6]}")
    assert not isinstance(info.value, PermanentError)
    assert "source 'tickets_db'" in str(info.value) and "OperationalError" in str(info.value)
    assert "driver message withheld" in str(info.value) and "127.0.0.1" not in str(info.value)
