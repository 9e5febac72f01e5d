"""The ingest DAG end to end with production-shaped sources: a partitioned, incremental PostgreSQL
table, CSV exports on S3, and a REST API, with the lake itself on S3 (all on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from llmops import snapshots, storage
from llmops.cli import scaffold_dag_source
from llmops.privacy.keys import get_key_ring

pytestmark = [pytest.mark.slow]
PROJECT = Path(__file__).resolve().parents[2]
GOV = {"data_owner": "qa@example.com", "purposes": ["testing"], "lawful_basis": "contract"}
COLUMNS = ["event_id", "updated_at", "customer_email", "body"]
SUITE = {
    "name": "it_events",
    "expectations": [
        {
            "type": "expect_column_values_to_not_be_null",
            "kwargs": {"column": "event_id"},
            "meta": {"severity": "blocking"},
        },
        {
            "type": "expect_column_values_to_not_be_null",
            "kwargs": {"column": "body", "mostly": 0.9},
            "meta": {"severity": "warning"},
        },
    ],
}


def _spec(table: str, bucket: str, s3_conn: str) -> dict:
    return {
        "name": "it_events",
        "description": "integration test pipeline",
        "owner": "qa",
        "purpose": "testing",
        "schedule": None,
        "sources": [
            {
                "kind": "sql",
                "name": "events_db",
                "conn_id": "it_events_pg",
                "table": table,
                "columns": COLUMNS,
                "incremental": {"column": "updated_at"},
                "partitioning": {"column": "seq", "method": "mod", "partitions": 3},
                "chunk_rows": 500,
                "governance": GOV,
            },
            {
                "kind": "files",
                "name": "events_files",
                "uri": f"s3://{bucket}/exports/",
                "conn_id": s3_conn,
                "pattern": "*.csv",
                "format": "csv",
                "columns": COLUMNS,
                "governance": GOV,
            },
            {
                "kind": "rest",
                "name": "events_api",
                "conn_id": "it_events_api",
                "endpoint": "/v1/tickets",
                "columns": COLUMNS,
                "pagination": {"type": "page", "page_size": 40},
                "governance": GOV,
            },
        ],
        "dataset": {"key": "event_id", "normalization": {"lowercase_columns": ["customer_email"]}},
        "validation": {"suite": "it_events", "max_quarantine_fraction": 0.2},
        "privacy": {
            "columns": {"customer_email": {"action": "pseudonymise"}},
            "free_text": {"columns": ["body"], "types": {"email": "mask", "phone": "mask"}},
        },
        "training": {
            "base_model": {"uri": "unused"},
            "prompt_template": "{body}",
            "completion_column": "body",
        },
        "gates": [{"metric": "token_f1", "min": 0.01}],
        "registry": {"model_name": "it_events"},
    }


@pytest.fixture
def pipeline(tmp_path, monkeypatch, postgres_url, s3_bucket, s3_client, airflow_db):
    from llmops.demo.tickets_api import serve_in_thread

    bucket, s3_conn = s3_bucket
    url = postgres_url.replace("+psycopg2", "+psycopg")
    table = f"it_events_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (seq integer primary key, event_id text, updated_at timestamptz, "
            f"customer_email text, body text)"
        )
        conn.execute(
            sa.text(f"INSERT INTO {table} VALUES (:seq, :event_id, :updated_at, :email, :body)"),
            [
                {
                    "seq": i,
                    "event_id": f"DB-{i:05d}",
                    "updated_at": datetime(2026, 9, 1, tzinfo=UTC) + timedelta(minutes=i),
                    "email": f"User{i}@Example.com",
                    "body": f"order {i} late, write to user{i}@example.com",
                }
                for i in range(3000)
            ],
        )
    csv_rows = "event_id,updated_at,customer_email,body\n" + "".join(
        f"F-{i:04d},2026-09-02T10:00:00Z,f{i}@example.com,file row {i}\n" for i in range(150)
    )
    s3_client.put_object(Bucket=bucket, Key="exports/part-1.csv", Body=csv_rows.encode())
    api_records = [
        {
            "event_id": f"API-{i:03d}",
            "updated_at": "2026-09-03T09:00:00Z",
            "customer_email": f"a{i}@example.com",
            "body": f"api {i}",
        }
        for i in range(90)
    ]
    server, api_url = serve_in_thread(api_records, "it-token")
    port = server.server_address[1]

    pipelines, dags, gx = tmp_path / "pipelines", tmp_path / "dags", tmp_path / "gx"
    for folder in (pipelines, dags, gx / "expectations"):
        folder.mkdir(parents=True)
    (pipelines / "it_events.yaml").write_text(yaml.safe_dump(_spec(table, bucket, s3_conn)))
    (gx / "expectations" / "it_events.json").write_text(json.dumps(SUITE))
    (dags / "it_events.py").write_text(scaffold_dag_source("it_events"))  # what new-pipeline writes
    pg = sa.make_url(url)
    monkeypatch.setenv(
        "AIRFLOW_CONN_IT_EVENTS_PG",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": pg.host,
                "port": pg.port,
                "login": pg.username,
                "schema": pg.database,
            }
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_IT_EVENTS_API",
        json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http", "password": "it-token"}
        ),
    )
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(pipelines))
    # dag.test() serialises DAGs found in the configured bundle: point it at this test's folder.
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    monkeypatch.setenv("LLMOPS_GX_DIR", str(gx))
    monkeypatch.setenv("LLMOPS_LAKE_ROOT", f"s3://{bucket}/lake")
    monkeypatch.setenv("LLMOPS_LAKE_CONN_ID", s3_conn)
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    storage.clear_filesystem_cache()
    try:
        yield {
            "engine": engine,
            "table": table,
            "dags": dags,
            "bucket": bucket,
            "s3": s3_client,
            "lake": f"s3://{bucket}/lake",
        }
    finally:
        server.shutdown()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()


RUN_DAG = textwrap.dedent(
    """
    import json, sys
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    run = bag.dags[sys.argv[2]].test()
    print("RESULT " + json.dumps({"state": str(run.state), "run_id": run.run_id}))
    """
)


class Run:
    def __init__(self, state: str, run_id: str) -> None:
        self.state, self.run_id = state, run_id


def _run_ingest(dags: Path) -> Run:
    """dag.test() in a fresh interpreter: Airflow binds its DAG bundle to the dags folder it starts with."""
    result = subprocess.run(
        [sys.executable, "-c", RUN_DAG, str(dags), "it_events__ingest"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT / "include")},
        timeout=600,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"dag run did not finish:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    # raw_decode: a log line written at exit by another thread can land before the newline
    return Run(**json.JSONDecoder().raw_decode(lines[-1].removeprefix("RESULT "))[0])


def _raw_manifest(lake: str, source: str, run_id: str) -> dict:
    from llmops.ledger import get_ledger

    (event,) = [
        r
        for r in get_ledger().records(event_type="snapshot.raw.created", run_id=run_id)
        if r.payload["source"] == source
    ]
    return snapshots.read_manifest(
        snapshots.snapshot_ref(lake, "raw", "it_events", source, event.payload["snapshot_id"])
    )


def test_partitioned_incremental_ingest_on_an_s3_lake(pipeline):
    """Expect partitions, sources and watermark runs to add up, with every snapshot on S3."""
    from llmops.ingest.state import get_watermark

    lake = pipeline["lake"]
    first = _run_ingest(pipeline["dags"])
    assert first.state == "success"
    db = _raw_manifest(lake, "events_db", first.run_id)
    assert db["row_count"] == 3000 and len(db["files"]) == 3
    assert db["source"]["partitions"] == 3 and db["encryption"]["kek_ids"]
    assert _raw_manifest(lake, "events_files", first.run_id)["row_count"] == 150
    assert _raw_manifest(lake, "events_api", first.run_id)["row_count"] == 90
    curated_ref = snapshots.get_latest(lake, "curated", "it_events", "records")
    curated = snapshots.read_snapshot(curated_ref, get_key_ring()).to_pandas()
    assert len(curated) == 3240
    assert "@example.com" not in " ".join(curated["body"].dropna()) + " ".join(curated["customer_email"])
    keys = pipeline["s3"].list_objects_v2(Bucket=pipeline["bucket"], Prefix="lake/raw/it_events/events_db/")
    assert any(k["Key"].endswith("part-00002.parquet.enc") for k in keys["Contents"])
    assert get_watermark("it_events", "events_db").startswith("2026-09-03 01:59:00")  # minute 2999

    # New and changed rows: only those are extracted; the curated set keeps everything, newest wins.
    with pipeline["engine"].begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE {pipeline['table']} SET body = 'edited', updated_at = '2026-10-01T00:00:00Z' WHERE seq < 10"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {pipeline['table']} VALUES (5000, 'DB-05000', '2026-10-02T00:00:00Z', 'n@example.com', 'new')"
        )
    second = _run_ingest(pipeline["dags"])
    assert second.state == "success"
    assert _raw_manifest(lake, "events_db", second.run_id)["row_count"] == 11
    curated = snapshots.read_snapshot(
        snapshots.get_latest(lake, "curated", "it_events", "records"), get_key_ring()
    ).to_pandas()
    assert len(curated) == 3241
    assert (curated.set_index("event_id").loc[[f"DB-{i:05d}" for i in range(10)], "body"] == "edited").all()
    assert get_watermark("it_events", "events_db").startswith("2026-10-02")
    after_second = snapshots.read_manifest(snapshots.get_latest(lake, "curated", "it_events", "records"))

    # Nothing new in the database: the curated content is exactly the same (a new snapshot, since
    # its lineage, the validated input, differs).
    third = _run_ingest(pipeline["dags"])
    assert third.state == "success"
    assert _raw_manifest(lake, "events_db", third.run_id)["row_count"] == 0
    after_third = snapshots.read_manifest(snapshots.get_latest(lake, "curated", "it_events", "records"))
    assert after_third["row_count"] == after_second["row_count"]
    assert after_third["content_sha256"] == after_second["content_sha256"]


def test_failed_run_does_not_advance_the_watermark(pipeline, monkeypatch):
    """Expect a run that fails validation to leave the watermark where it was, losing no rows."""
    from llmops.ingest.state import get_watermark

    suite = {
        **SUITE,
        "expectations": [
            *SUITE["expectations"],
            {
                "type": "expect_table_row_count_to_be_between",
                "kwargs": {"max_value": 10},
                "meta": {"severity": "blocking"},
            },
        ],
    }
    gx = Path(os.environ["LLMOPS_GX_DIR"]) / "expectations" / "it_events.json"
    gx.write_text(json.dumps(suite))
    failed = _run_ingest(pipeline["dags"])
    assert failed.state == "failed"
    assert get_watermark("it_events", "events_db") is None
    gx.write_text(json.dumps(SUITE))
    assert _run_ingest(pipeline["dags"]).state == "success"
    assert get_watermark("it_events", "events_db") is not None


KILLER = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from llmops import snapshots

    lake, run_id = sys.argv[1], sys.argv[2]
    schema = pa.schema([("id", pa.string()), ("body", pa.string())])

    def batches():
        for start in range(0, 10_000_000, 50_000):
            yield pa.record_batch({"id": [f"{i:09d}" for i in range(start, start + 50_000)], "body": ["x" * 100] * 50_000})
            time.sleep(0.05)

    snapshots.stage_part(lake_root=lake, pipeline="p", dataset="d", run_id=run_id, part=0, batches=batches(),
                         schema=schema, kek=bytes(range(32)), row_group_rows=50_000)
    """
)


def test_process_killed_mid_write_leaves_nothing_visible(tmp_path):
    """Expect a writer killed mid-part to leave no snapshot and no staged part; a retry commits cleanly."""
    import pyarrow as pa

    lake = str(tmp_path / "lake")
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "include")}
    proc = subprocess.Popen([sys.executable, "-c", KILLER, lake, "run-1"], env=env)
    staging = tmp_path / "lake" / "_staging" / "p" / "d" / "run-1"
    deadline = time.monotonic() + 60
    while not (staging.exists() and any(f.stat().st_size > 1_000_000 for f in staging.iterdir())):
        assert time.monotonic() < deadline and proc.poll() is None, "writer never got going"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list((tmp_path / "lake").rglob("manifest.json"))
    assert not list(staging.glob("part-*"))  # only a temp file, never a complete-looking part
    schema = pa.schema([("id", pa.string()), ("body", pa.string())])
    table = pa.table({"id": ["1", "2"], "body": ["a", "b"]}, schema=schema)
    part = snapshots.stage_part(
        lake_root=lake,
        pipeline="p",
        dataset="d",
        run_id="run-1",
        part=0,
        batches=table.to_batches(),
        schema=schema,
        kek=bytes(range(32)),
    )
    ref, manifest = snapshots.commit_parts(
        lake_root=lake, zone="raw", pipeline="p", dataset="d", parts=[part], metadata={}
    )
    assert manifest["row_count"] == 2
    assert not staging.exists()  # the killed attempt's temp file was cleared with the staging folder
