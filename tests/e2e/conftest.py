"""The demo pipeline, run once per test session for every e2e test module."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TOKEN = "e2e-api-token-5d1e"
# A data subject planted in both source kinds of the demo (the helpdesk database and the web-form
# API), with identifiers no other record shares: the erasure test looks for each of them in every
# byte the platform wrote. The e-mail's case differs from how the pipeline normalises it.
SUBJECT = {
    "customer_email": "Marta.Vandersloot@Example.com",
    "customer_name": "Marta Vandersloot",
    "customer_phone": "+44 20 7946 0321",
}
SUBJECT_KEYS = ("TCK-10002", "WEB-20004")
SUBJECT_TEXT = (
    " You can reach me at marta.vandersloot@example.com or +44 20 7946 0321. Thanks, Marta Vandersloot"
)


@pytest.hookimpl(trylast=True)  # after a shuffle (make test-shuffled), so the order holds there too
def pytest_collection_modifyitems(config, items):
    """Run the tests that rewrite the shared demo lake (erasure, retention) after every other e2e
    test, whatever the file order, so readers of the demo never see a lake they emptied; and the
    rewriters in their declared `rewrites_demo(step=n)` order, since each changes the lake the next
    one reads (erasure needs the raw snapshots that retention deletes)."""
    e2e = [i for i, item in enumerate(items) if "/tests/e2e/" in str(item.path).replace("\\", "/")]
    if not e2e:
        return
    span = items[e2e[0] : e2e[-1] + 1]
    readers = [item for item in span if not item.get_closest_marker("rewrites_demo")]
    writers = [item for item in span if item.get_closest_marker("rewrites_demo")]
    writers.sort(key=lambda item: item.get_closest_marker("rewrites_demo").kwargs.get("step", 0))
    items[e2e[0] : e2e[-1] + 1] = readers + writers


def _plant_subject(db: Path, records: list[dict]) -> None:
    """The subject's identifiers in one database ticket and one API record, in columns and text."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE tickets SET customer_email = ?, customer_name = ?, customer_phone = ?,"
            " body = body || ? WHERE ticket_id = ?",
            (*SUBJECT.values(), SUBJECT_TEXT, SUBJECT_KEYS[0]),
        )
    conn.close()
    (record,) = [r for r in records if r["ticket_id"] == SUBJECT_KEYS[1]]
    record.update(SUBJECT)
    record["body"] += SUBJECT_TEXT


@pytest.fixture(scope="session")
def task_log(session_home) -> Path:
    """Everything the platform logs during the e2e session (INFO and up), as a worker's task log
    file would hold it: the erasure test searches it too. Airflow configures logging when it is
    imported, dropping handlers added before, so it is imported first; the handler also sits on
    the package's and the task loggers, which that configuration leaves alone."""
    import logging

    import airflow.settings  # noqa: F401  (configures logging)

    path = session_home / "airflow" / "logs" / "e2e-session.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    loggers = [logging.getLogger(name) for name in ("", "llmops", "airflow.task")]
    for logger in loggers:
        logger.addHandler(handler)
    if logging.getLogger("llmops").getEffectiveLevel() > logging.INFO:
        logging.getLogger("llmops").setLevel(logging.INFO)
    yield path
    for logger in loggers:
        logger.removeHandler(handler)
    handler.close()


@pytest.fixture(scope="session")
def demo(airflow_db, session_home, mlflow_server, task_log):
    """Run the ingest DAG, then the finetune DAG, as a user's `make demo` does, against a real
    MLflow tracking server on 127.0.0.1 (runs, proxied artifacts, registry, aliases)."""
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server  # for the rest of the session: the server stays up
    from airflow.dag_processing.dagbag import DagBag

    from llmops.cli import build_demo_model, demo_dir
    from llmops.demo.sample_data import generate
    from llmops.demo.tickets_api import serve_in_thread

    generate(demo_dir())
    build_demo_model()
    records = json.loads((demo_dir() / "api_tickets.json").read_text())
    _plant_subject(demo_dir() / "tickets.db", records)
    server, url = serve_in_thread(records, TOKEN)
    port = server.server_address[1]
    os.environ["AIRFLOW_CONN_SUPPORT_TICKETS_DB"] = json.dumps(
        {"conn_type": "sqlite", "host": str(demo_dir() / "tickets.db")}
    )
    os.environ["AIRFLOW_CONN_SUPPORT_TICKETS_API"] = json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http", "password": TOKEN}
    )
    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert not bag.import_errors
    try:
        ingest = bag.dags["support_bot__ingest"].test()
        finetune = bag.dags["support_bot__finetune"].test()
        # A second run that cannot learn in one step: its gates must fail and leave the champion alone.
        weak = bag.dags["support_bot__finetune"].test(run_conf={"max_steps": 3, "learning_rate": 1e-5})
    finally:
        server.shutdown()
    planted = json.loads((demo_dir() / "planted_pii.json").read_text())
    return {
        "ingest": ingest,
        "finetune": finetune,
        "weak": weak,
        "planted": planted,
        "home": session_home,
        "token": TOKEN,
        "api_records": records,
        "subject": SUBJECT,
        "subject_keys": SUBJECT_KEYS,
    }
