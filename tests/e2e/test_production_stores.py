"""The demo pipeline with the production configuration: every SQL store on the real PostgreSQL
server (Airflow metadata, governance ledger, Optuna study, MLflow backend) and the lake and the
MLflow artifacts on an S3 endpoint on 127.0.0.1 (moto's server).

Only environment variables change, as the README's production table says; the demo runs in a
subprocess (`llmops demo`), because Airflow binds its metadata database once per process. The
test then looks behind the code's back: the rows are in PostgreSQL, the objects in the bucket,
and nothing fell back to the local SQLite files or the local lake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from servers import free_port, require_server, run_mlflow_server

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]

PROJECT = Path(__file__).resolve().parents[2]
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
KEY_ID, SECRET, REGION = "llmops-prod-key-id", "llmops-prod-secret", "us-east-1"
STORES = ("airflow", "ledger", "optuna", "mlflow")


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database per store, dropped afterwards."""
    import sqlalchemy as sa

    require_server("PostgreSQL", 5432)

    suffix = uuid.uuid4().hex[:8]
    names = {store: f"llmops_prod_{store}_{suffix}" for store in STORES}
    admin = sa.create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield {store: f"{PG}/{name}" for store, name in names.items()}
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """A moto S3 server on loopback with one bucket; yields its endpoint, bucket and a client."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name=REGION,
    )
    bucket = f"llmops-prod-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    try:
        yield {"endpoint": endpoint, "bucket": bucket, "client": client}
    finally:
        server.stop()


def _keys(s3: dict[str, Any], prefix: str) -> list[str]:
    pages = s3["client"].get_paginator("list_objects_v2").paginate(Bucket=s3["bucket"], Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def _clean_env(home: Path) -> dict[str, str]:
    """The test session's environment minus its stores and credentials, plus the project paths."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLMOPS_", "MLFLOW_", "AIRFLOW", "AWS_", "PYTEST_"))
    }
    env.update(
        {
            "PYTHONPATH": str(PROJECT / "include"),
            "LLMOPS_PROJECT_DIR": str(PROJECT),
            "LLMOPS_HOME": str(home / "llmops"),
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__OPENLINEAGE__DISABLED": "True",
            "DEMO_TICKETS_API_PORT": str(free_port()),
            "DEMO_TICKETS_API_TOKEN": "prod-demo-token-3b9f",
        }
    )
    return env


@pytest.fixture(scope="module")
def mlflow_on_postgres_and_s3(databases, s3, tmp_path_factory) -> Iterator[str]:
    """An MLflow tracking server: PostgreSQL backend, artifacts proxied to the S3 bucket."""
    root = tmp_path_factory.mktemp("mlflow-prod")
    env = {
        **_clean_env(root),
        "MLFLOW_S3_ENDPOINT_URL": s3["endpoint"],
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": REGION,
    }
    with run_mlflow_server(root, databases["mlflow"], f"s3://{s3['bucket']}/mlflow", env) as url:
        yield url


@pytest.fixture(scope="module")
def production_demo(databases, s3, mlflow_on_postgres_and_s3, tmp_path_factory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("prod-home")
    conn = {
        "conn_type": "aws",
        "login": KEY_ID,
        "password": SECRET,
        "extra": {"endpoint_url": s3["endpoint"], "region_name": REGION},
    }
    env = {
        **_clean_env(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": databases["airflow"],
        "LLMOPS_LEDGER_URL": databases["ledger"],
        "LLMOPS_OPTUNA_URL": databases["optuna"],
        "MLFLOW_TRACKING_URI": mlflow_on_postgres_and_s3,
        "LLMOPS_LAKE_ROOT": f"s3://{s3['bucket']}/lake",
        "LLMOPS_LAKE_CONN_ID": "llmops_lake",
        "AIRFLOW_CONN_LLMOPS_LAKE": json.dumps(conn),
    }
    env["AIRFLOW_CONN_SUPPORT_TICKETS_DB"] = json.dumps(
        {"conn_type": "sqlite", "host": str(home / "llmops" / "demo" / "tickets.db")}
    )
    env["AIRFLOW_CONN_SUPPORT_TICKETS_API"] = json.dumps(
        {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": int(env["DEMO_TICKETS_API_PORT"]),
            "schema": "http",
            "password": env["DEMO_TICKETS_API_TOKEN"],
        }
    )
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    started = time.monotonic()
    demo = subprocess.run(
        [sys.executable, "-m", "llmops.cli", "demo"], env=env, capture_output=True, text=True, timeout=1800
    )
    wall = time.monotonic() - started
    logs = "".join(
        p.read_text(errors="replace")[-6000:] for p in (home / "llmops" / "demo" / "logs").glob("*.log")
    )
    assert demo.returncode == 0, f"{demo.stdout[-3000:]}\n{demo.stderr[-3000:]}\nlog file:\n{logs}"
    print(f"\nproduction-store demo: {wall:.0f} s\n{demo.stdout[-800:]}")
    return {"home": home, "env": env, "stdout": demo.stdout}


def _scalar(url: str, sql: str) -> Any:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    finally:
        engine.dispose()


def test_every_sql_store_is_on_postgres(production_demo, databases):
    """Expect the runs, the ledger chain, the study and the registry in their PostgreSQL databases."""
    states = _scalar(
        databases["airflow"],
        "SELECT string_agg(dag_id || '=' || state, ',' ORDER BY dag_id) FROM dag_run",
    )
    pipelines = ("northwind_kb", "support_bot", "support_replies")  # what `make demo` runs
    assert states == ",".join(f"{p}__{dag}=success" for p in pipelines for dag in ("finetune", "ingest"))
    assert _scalar(databases["ledger"], "SELECT count(*) FROM llmops_ledger_events") >= 10
    events = _scalar(
        databases["ledger"], "SELECT string_agg(DISTINCT event_type, ',') FROM llmops_ledger_events"
    )
    for event in ("snapshot.raw.created", "dataset.validated", "model.trained", "model.promoted"):
        assert event in events
    trials = _scalar(databases["optuna"], "SELECT count(*) FROM trials")
    assert trials >= 1
    champion = _scalar(
        databases["mlflow"],
        "SELECT version FROM registered_model_aliases WHERE name = 'support_bot' AND alias = 'champion'",
    )
    assert champion == 1
    assert _scalar(databases["mlflow"], "SELECT count(*) FROM runs") >= 1 + trials


def test_lake_and_mlflow_artifacts_are_in_the_bucket(production_demo, s3):
    """Expect snapshots, job files and reports in the lake prefix, and the model's files under MLflow's."""
    lake = _keys(s3, "lake/")
    for zone in ("raw/support_bot/", "curated/support_bot/", "sft/support_bot/", "jobs/support_bot/"):
        assert any(key.startswith(f"lake/{zone}") for key in lake), zone
    assert any(key.endswith("audit_report.html") for key in lake)
    # The chained pipeline's stage wrote its merged model to the bucket (encrypted, with its key
    # file), and the final stage read it; no job wrote plaintext weights to the lake.
    merged = [
        k for k in lake if k.startswith("lake/jobs/support_replies/") and "/stage-answer/output/merged/" in k
    ]
    assert any(k.endswith(".safetensors.enc") for k in merged), "no merged stage model in the bucket"
    assert all(k + ".key.json" in merged for k in merged if k.endswith(".safetensors.enc"))
    assert [k for k in lake if k.startswith("lake/jobs/") and k.endswith(".safetensors")] == []
    for dataset in ("text_corpus", "preference_pairs", "prompt_completion"):
        assert any(f"/{dataset}/" in k and k.startswith("lake/sft/") for k in lake), dataset
    artifacts = _keys(s3, "mlflow/")
    assert any(key.endswith("MLmodel") for key in artifacts)
    assert any("adapter" in key and key.endswith(".safetensors") for key in artifacts)


def test_nothing_fell_back_to_local_stores(production_demo):
    """Expect no SQLite database and no lake on the local disk: only the demo's inputs, keys and model."""
    home = production_demo["home"] / "llmops"
    assert sorted(p.name for p in home.glob("*.db")) == []
    assert not (home / "lake").exists()
    assert not (home / "mlartifacts").exists()
    assert not list((production_demo["home"] / "airflow").glob("*.db"))
