"""Batch inference against the real PostgreSQL on 127.0.0.1 and the real MLflow tracking server.

The champion is a registered pyfunc loaded from the registry (``models:/<name>/<version>``); the
source and results tables live in Postgres; the `<pipeline>__batch_inference` DAG runs for real.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from llmops.registry import mlflow_registry as registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2]
PLANTED_EMAIL = "jane.roe@example.org"
AGENT_EMAIL = "agent@northwind.example"


class DraftReply:
    """A deterministic stand-in champion: a fixed reply quoting the prompt's first line, plus an
    e-mail address (which must be masked before it reaches the results table)."""

    def predict(self, prompts: list[str]) -> list[str]:
        return [f"Re: {p.splitlines()[0][:80]} -- write to {AGENT_EMAIL}" for p in prompts]


@pytest.fixture
def batch_pipeline(mlflow_server, postgres_url, monkeypatch, tmp_path):
    """Pipeline `batch_check` scoring a fresh Postgres table; champion v1 registered."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("LLMOPS_LAKE_ROOT", str(tmp_path / "lake"))
    suffix = uuid.uuid4().hex[:8]
    source, target, model = f"tickets_{suffix}", f"answers_{suffix}", f"batch-test-{suffix}"
    engine = sa.create_engine(postgres_url)
    rows = [
        {
            "ticket_id": f"TCK-{i:04d}",
            "category": ["billing", "refund", "login"][i % 3],
            "subject": f"Write to me at {PLANTED_EMAIL}" if i == 3 else f"Help with order {i}",
            "body": f"Order {i} is late.",
        }
        for i in range(1, 13)
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {source} (ticket_id text primary key, category text, subject text, body text)"
            )
        )
        conn.execute(sa.text(f"INSERT INTO {source} VALUES (:ticket_id, :category, :subject, :body)"), rows)
    url = sa.make_url(postgres_url)
    monkeypatch.setenv(
        "AIRFLOW_CONN_BATCH_CHECK_DB",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": url.host,
                "port": url.port,
                "login": url.username,
                "schema": url.database,
            }
        ),
    )
    raw = yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())
    raw["name"] = "batch_check"
    raw["registry"] = {"model_name": model}
    raw["batch_inference"] = {
        "conn_id": "batch_check_db",
        "table": source,
        "key_column": "ticket_id",
        "target_table": target,
        "chunk_rows": 5,
    }
    raw.pop("deployment")
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "batch_check.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(pipelines))
    registry.configure()

    class Champion(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return DraftReply().predict([str(p) for p in model_input["prompt"]])

    with mlflow.start_run(experiment_id=registry.ensure_experiment(model)):
        info = mlflow.pyfunc.log_model(name="model", python_model=Champion(), pip_requirements=["mlflow"])
    for _ in range(2):
        mlflow.register_model(info.model_uri, model)
    registry.promote(model, "1")
    try:
        yield {"engine": engine, "source": source, "target": target, "model": model, "rows": rows}
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {source}"))
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {target}"))
        engine.dispose()


def _results(ctx) -> list[dict]:
    with ctx["engine"].connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT * FROM {ctx['target']} ORDER BY model_version, record_key")
        ).mappings()
        return [dict(r) for r in rows]


def test_batch_scoring_upserts_idempotently_and_follows_the_champion(batch_pipeline, airflow_db, tmp_path):
    """Expect every row scored once per champion version; a rerun (the DAG, for real) to leave the
    same rows; a changed source row to be rescored in place; raw PII never in the results."""
    from llmops.ledger import get_ledger
    from llmops.orchestration.batch import batch_score
    from llmops.orchestration.batch_dag import batch_inference_dag
    from llmops.specs import load_pipeline

    ctx = batch_pipeline
    first = batch_score("batch_check", "batch-run-1", scored_at="2026-12-01T00:00:00+00:00")
    assert (first["rows_read"], first["rows_scored"], first["rows_unchanged"]) == (12, 12, 0)
    before = _results(ctx)
    assert len(before) == 12 and {r["model_version"] for r in before} == {"1"}
    assert len({r["record_key"] for r in before}) == 12
    text = json.dumps(before)
    assert PLANTED_EMAIL not in text and AGENT_EMAIL not in text and "[EMAIL]" in text
    assert before[0]["answer"].startswith("Re: Ticket (refund): Help with order 1 -- write to [EMAIL]")
    assert before[2]["answer"].startswith("Re: Ticket (billing): Write to me at [EMAIL]")

    dag = batch_inference_dag(load_pipeline("batch_check"))
    # dag.test() runs only DAGs the metadata DB knows: serialize this one as the DAG processor would.
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    (tmp_path / "no-dags").mkdir()
    bag = DagBag(dag_folder=str(tmp_path / "no-dags"))
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    run = dag.test()
    assert run.state == "success"
    assert _results(ctx) == before  # same rows, same values, no duplicates
    [rerun] = get_ledger().records(pipeline="batch_check", event_type="batch.scored", run_id=run.run_id)
    assert (rerun.payload["rows_scored"], rerun.payload["rows_unchanged"]) == (0, 12)

    with ctx["engine"].begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {ctx['source']} SET subject = 'Changed subject' WHERE ticket_id = 'TCK-0005'")
        )
    changed = batch_score("batch_check", "batch-run-3", scored_at="2026-12-03T00:00:00+00:00")
    assert (changed["rows_scored"], changed["rows_unchanged"]) == (1, 11)
    after = {r["record_key"]: r for r in _results(ctx)}
    assert len(after) == 12 and "Changed subject" in after["TCK-0005"]["answer"]
    assert after["TCK-0005"]["airflow_run_id"] == "batch-run-3"
    assert after["TCK-0006"]["airflow_run_id"] == "batch-run-1"

    registry.promote(ctx["model"], "2")
    batch_score("batch_check", "batch-run-4", scored_at="2026-12-04T00:00:00+00:00")
    rows = _results(ctx)
    assert len(rows) == 24 and sum(r["model_version"] == "2" for r in rows) == 12


def test_sqlite_source_and_bad_configuration(batch_pipeline, tmp_path, monkeypatch):
    """Expect the same step on a SQLite file (source = target, one file) and a clear error for a
    template column the source lacks."""
    from llmops.deployment.batch import BatchInputError
    from llmops.orchestration.batch import batch_score

    db = tmp_path / "tickets.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE tickets (ticket_id text primary key, category text, subject text, body text)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO tickets VALUES (:t, 'billing', 'Invoice', 'Wrong amount')"),
            [{"t": f"T{i}"} for i in range(7)],
        )
    monkeypatch.setenv("AIRFLOW_CONN_BATCH_CHECK_DB", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    path = Path(tmp_path / "pipelines" / "batch_check.yaml")
    raw = yaml.safe_load(path.read_text())
    raw["batch_inference"].update(table="tickets", target_table="answers", chunk_rows=3)
    path.write_text(yaml.safe_dump(raw))
    assert batch_score("batch_check", "r1", scored_at="2026-12-01")["rows_scored"] == 7
    assert batch_score("batch_check", "r2", scored_at="2026-12-02")["rows_unchanged"] == 7
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM answers")).scalar() == 7

    raw["batch_inference"]["prompt_template"] = "{subject} / {priority}"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(BatchInputError, match="table 'tickets' has no column\\(s\\) 'priority'"):
        batch_score("batch_check", "r3", scored_at="2026-12-03")
    engine.dispose()
