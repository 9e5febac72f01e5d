"""Secrets in task logs: a connection password that a task reads through llmops is masked by
Airflow's secrets masker wherever the task logs or prints it.

Masking happens in the task supervisor that a real executor starts, not in ``dag.test()``'s
in-process runner, so the task runs through the LocalExecutor against a real API server on
127.0.0.1 (the execution API), and the test reads the task's log file as the UI would show it.
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "masking-check-token-93c1f0"
DB_PASSWORD = "masking-db-pass-5e27aa"
DAG_FILE = '''"""Airflow DAG for the secret-masking test: logs and prints connection secrets on purpose."""

import logging

from airflow.sdk import dag, task


@dag(dag_id="secret_masking_check", schedule=None, catchup=False)
def secret_masking_check():
    @task
    def use_connections():
        from llmops.connections import get_connection, http_auth_headers, sqlalchemy_url

        api = get_connection("masking_api")
        headers = http_auth_headers(api)
        url = sqlalchemy_url(get_connection("masking_db"))
        log = logging.getLogger("airflow.task")
        log.info("api password %s, header %s", api.password, headers)
        log.info("database url %s", url.render_as_string(hide_password=False))
        print(f"printed: {api.password}")
        return "done"

    use_connections()


secret_masking_check()
'''


def test_connection_secrets_are_masked_in_task_logs(airflow_db, monkeypatch, tmp_path_factory):
    import os
    from pathlib import Path

    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow_api_server import run_api_server

    monkeypatch.setenv(
        "AIRFLOW_CONN_MASKING_API",
        json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": 9, "schema": "http", "password": TOKEN}
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_MASKING_DB",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "login": "u",
                "password": DB_PASSWORD,
                "schema": "d",
            }
        ),
    )

    # The executor's worker loads the DAG from its file, as in production: a DAG folder of its own.
    dags = tmp_path_factory.mktemp("masking-dags")
    (dags / "secret_masking_check.py").write_text(DAG_FILE)
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(dags), bundle_path=dags, bundle_name="dags-folder")
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)
    built = bag.dags["secret_masking_check"]

    with run_api_server(tmp_path_factory.mktemp("masking"), {"admin": "admin"}) as server:
        monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
        monkeypatch.setenv("AIRFLOW__API__BASE_URL", server.base_url)
        monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", server.jwt_secret)
        run = built.test(use_executor=True)
    assert run.state == "success"
    logs_dir = Path(os.environ["AIRFLOW_HOME"]) / "logs" / "dag_id=secret_masking_check"
    (log_file,) = [p for p in logs_dir.rglob("*.log") if f"run_id={run.run_id}" in str(p)]
    text = log_file.read_text()
    assert "api password ***" in text and "printed: ***" in text, text[-3000:]
    assert "Bearer ***" in text
    assert TOKEN not in text and DB_PASSWORD not in text
