"""The demo pipeline, run once per test session for every e2e test module."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TOKEN = "e2e-api-token-5d1e"


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


@pytest.fixture(scope="session")
def demo(airflow_db, session_home, mlflow_server):
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
    }
