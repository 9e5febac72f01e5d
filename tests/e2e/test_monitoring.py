"""Monitoring of the demo champion: the `support_bot__monitor` DAG on unchanged data (no drift),
then the monitor's steps on a drifted curated snapshot (breaches, a signed webhook alert, the
retraining decision), and the audit report's Monitoring section."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PIPELINE = "support_bot"
WEBHOOK_CONN = "llmops_e2e_webhook"
WEBHOOK_SECRET = "e2e-webhook-signing-secret-71c2"
# Words the demo tickets never use: if one shows up in a summary or ledger record, rows leaked.
DRIFT_WORDS = (
    "espresso grinder warranty descaling portafilter boiler gasket thermostat steam wand "
    "calibration firmware subscription capsule frother carafe limescale"
).split()


@pytest.fixture(scope="module")
def bag(demo):
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert not dagbag.import_errors
    return dagbag


def _task_states(dag_id: str, run_id: str) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()
        return {ti.task_id: str(ti.state) for ti in tis}


def test_monitor_dag_on_unchanged_data_measures_zero_drift(bag):
    """Expect a successful run that stores its numbers, records them, and skips alert and retrain."""
    from llmops.ledger import get_ledger
    from llmops.monitoring.store import history
    from llmops.registry.mlflow_registry import alias_version, model_version_info

    run = bag.dags[f"{PIPELINE}__monitor"].test()
    assert run.state == "success"
    states = _task_states(f"{PIPELINE}__monitor", run.run_id)
    assert states["measure"] == "success" and states["decide"] == "success"
    assert {states[t] for t in ("alert", "trigger_retrain", "record_retrain")} == {"skipped"}

    version = alias_version(PIPELINE, "champion")
    trained_on = model_version_info(PIPELINE, version)["tags"]["llmops.curated_snapshot_id"]
    rows = [r for r in history(PIPELINE) if r["run_id"] == run.run_id]
    metrics = {r["metric"]: r for r in rows}
    for column in ("category", "subject", "body"):  # the prompt template's columns (spec default)
        for name in ("length_psi", "length_ks", "token_count_psi", "vocabulary_psi", "oov_rate"):
            assert metrics[f"text.{column}.{name}"]["value"] == 0, (column, name)
            assert metrics[f"text.{column}.{name}"]["threshold"] is not None
    assert not any(r["breached"] for r in rows)
    assert metrics["rows.fresh"]["value"] == 0 and "quality.token_f1" not in metrics
    assert all(r["model_version"] == version for r in rows)

    (measured,) = get_ledger().records(pipeline=PIPELINE, event_type="monitoring.measured", run_id=run.run_id)
    payload = measured.payload
    assert payload["same_snapshot"] is True
    assert payload["reference_snapshot_id"] == payload["current_snapshot_id"] == trained_on
    assert payload["breaches"] == [] and payload["retrain"] is None
    assert payload["quality"]["status"] == "skipped" and "min_token_f1" in payload["quality"]["reason"]
    assert not get_ledger().records(pipeline=PIPELINE, event_type="monitoring.alerted", run_id=run.run_id)
    print("\nunchanged:", json.dumps({m: r["value"] for m, r in sorted(metrics.items())}))


def test_trigger_step_retrains_the_finetune_dag_on_the_current_snapshot(bag):
    dag = bag.dags[f"{PIPELINE}__monitor"]
    trigger = dag.get_task("trigger_retrain")
    assert trigger.trigger_dag_id == f"{PIPELINE}__finetune"
    assert "current_snapshot_id" in trigger.conf["curated_snapshot_id"]
    assert dag.get_task("decide").downstream_task_ids == {"alert", "trigger_retrain"}


class _Receiver:
    """A webhook receiver on 127.0.0.1 that only accepts correctly signed bodies."""

    def __init__(self) -> None:
        from llmops.monitoring.alerts import SIGNATURE_HEADER, verify

        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify(body, WEBHOOK_SECRET, self.headers.get(SIGNATURE_HEADER))
                if ok:
                    received.append(json.loads(body))
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def drifted_snapshot(demo):
    """Publish a curated snapshot of new tickets about another product, with new categories, and
    record it in the ledger as curation does (monitoring reads only snapshots the ledger knows);
    put the previous LATEST marker back (and remove the snapshot) afterwards."""
    import random

    import pyarrow as pa

    from llmops import snapshots
    from llmops.ledger import record
    from llmops.ledger.events import PiiHandled
    from llmops.settings import get_settings
    from llmops.specs import load_pipeline

    lake = get_settings().lake_root
    previous = snapshots.get_latest(lake, "curated", PIPELINE, "records")
    manifest = snapshots.read_manifest(previous)
    from llmops.privacy.keys import get_key_ring

    reference = snapshots.read_snapshot(previous, get_key_ring())
    rng = random.Random(7)
    rows = []
    for i, row in enumerate(reference.to_pylist()[:160]):

        def text(n: int) -> str:
            return " ".join(rng.choice(DRIFT_WORDS) for _ in range(n))

        rows.append(
            {
                **row,
                "ticket_id": f"TCK-{900000 + i}",
                "category": rng.choice(["coffee_machines", "subscriptions"]),
                "subject": text(rng.randint(8, 14)).capitalize(),
                "body": text(rng.randint(60, 120)).capitalize() + ".",
                "resolution": text(rng.randint(20, 40)).capitalize() + ".",
            }
        )
    table = pa.Table.from_pylist(rows, schema=reference.schema)
    ref, _ = snapshots.write_snapshot(
        lake_root=lake,
        zone="curated",
        pipeline=PIPELINE,
        dataset="records",
        table=table,
        kek=get_key_ring(),
        metadata={
            "inputs": {"e2e": "drifted tickets"},
            "governance": manifest["governance"],
            "purpose": manifest.get("purpose"),
        },
        run_id="e2e-drift",
        identity={"e2e": "drifted"},
    )
    published = snapshots.read_manifest(ref)
    record(
        load_pipeline(PIPELINE),
        PiiHandled(
            validated_snapshot_id="e2e-drift",
            curated_snapshot_id=ref.snapshot_id,
            uri=ref.uri,
            row_count=published["row_count"],
            carried_forward_rows=0,
            sha256=published["content_sha256"],
            files=published["files"],
            columns=list(table.column_names),
            privacy={},
            residual_pii={},
            governance=manifest["governance"],
        ),
        f"curated/{ref.snapshot_id}",
        "e2e-drift",
    )
    snapshots.set_latest(ref, lake)
    try:
        yield ref.snapshot_id
    finally:
        snapshots.delete_snapshot(ref, lake)
        snapshots.set_latest(previous, lake)


def test_drifted_snapshot_breaches_alerts_and_asks_for_retraining(demo, drifted_snapshot, monkeypatch):
    """Expect text and category breaches, a low champion score on the new tickets, one signed
    webhook alert, and the retraining decision naming the drifted snapshot; no row text anywhere."""
    from llmops.ledger import get_ledger
    from llmops.monitoring.store import history
    from llmops.orchestration import monitor
    from llmops.specs import PipelineSpec, load_pipeline

    base = load_pipeline(PIPELINE).model_dump(mode="json")
    # The demo spec monitors with defaults (no webhook, no retraining, no quality floor); this
    # what-if spec turns them on for the steps called here, without touching the spec file.
    spec = PipelineSpec.model_validate(
        {
            **base,
            "monitoring": {
                **base["monitoring"],
                "category_column": "category",
                "alert_conn_id": WEBHOOK_CONN,
                "retrain_on_drift": True,
                "quality_samples": 4,
                "thresholds": {**base["monitoring"]["thresholds"], "min_token_f1": 0.5},
            },
        }
    )
    receiver = _Receiver()
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{WEBHOOK_CONN.upper()}",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": receiver.port,
                "schema": "http",
                "password": WEBHOOK_SECRET,
                "extra": {"endpoint": "/hooks/llmops"},
            }
        ),
    )
    run_id = "e2e_drift__1"
    try:
        summary = monitor.measure(spec, run_id)
        result = monitor.alert(spec, summary, run_id, dag_id=f"{PIPELINE}__monitor")
    finally:
        receiver.close()

    assert summary["current_snapshot_id"] == drifted_snapshot and not summary["same_snapshot"]
    breaches = set(summary["breaches"])
    for column in ("subject", "body"):
        assert {
            f"text.{column}.vocabulary_psi",
            f"text.{column}.oov_rate",
            f"text.{column}.length_psi",
        } <= breaches
    assert "category.category.new_category_share" in breaches
    assert summary["metrics"]["category.category.new_category_share"] == 1.0
    quality = summary["quality"]
    assert quality["status"] == "measured" and quality["samples"] == 4 and quality["fresh_rows"] == 160
    assert ("quality.token_f1" in breaches) == (quality["token_f1"] < 0.5)
    assert summary["retrain"] == {
        "dag_id": f"{PIPELINE}__finetune",
        "conf": {"curated_snapshot_id": drifted_snapshot},
    }

    (body,) = receiver.bodies
    assert body["text"].startswith(f"[llmops] {PIPELINE}: ") and "retraining requested" in body["text"]
    assert body["pipeline"] == PIPELINE and body["version"] == summary["model_version"]
    assert {b["metric"] for b in body["breaches"]} == breaches
    assert all(b["value"] is not None and b["threshold"] is not None for b in body["breaches"])
    assert result["channels"] == ["log", f"webhook:{WEBHOOK_CONN}"]

    ledger = get_ledger()
    (measured,) = ledger.records(pipeline=PIPELINE, event_type="monitoring.measured", run_id=run_id)
    (alerted,) = ledger.records(pipeline=PIPELINE, event_type="monitoring.alerted", run_id=run_id)
    assert alerted.payload["http_status"] == 200 and set(alerted.payload["breaches"]) == breaches
    stored = {r["metric"]: r for r in history(PIPELINE) if r["run_id"] == run_id}
    assert {m for m, r in stored.items() if r["breached"]} == breaches
    for text in (json.dumps(summary), json.dumps(measured.payload), json.dumps(body)):
        assert not any(word in text for word in DRIFT_WORDS)

    # A retried measurement replaces its rows and its ledger record stays the first one.
    again = monitor.measure(spec, run_id)
    assert again["breaches"] == summary["breaches"]
    assert len([r for r in history(PIPELINE) if r["run_id"] == run_id]) == len(stored)
    assert len(ledger.records(pipeline=PIPELINE, event_type="monitoring.measured", run_id=run_id)) == 1
    print(
        "\ndrifted:",
        json.dumps({k: v for k, v in summary["metrics"].items() if not k.startswith("rows")}, sort_keys=True),
    )


def test_monitor_dag_on_drifted_data_alerts_and_leaves_retraining_skipped(bag, drifted_snapshot):
    """Expect the demo spec's DAG (no webhook, no retrain_on_drift) to alert in its log only."""
    from llmops.ledger import get_ledger

    run = bag.dags[f"{PIPELINE}__monitor"].test()
    assert run.state == "success"
    states = _task_states(f"{PIPELINE}__monitor", run.run_id)
    assert states["measure"] == states["decide"] == states["alert"] == "success"
    assert states["trigger_retrain"] == states["record_retrain"] == "skipped"
    (measured,) = get_ledger().records(pipeline=PIPELINE, event_type="monitoring.measured", run_id=run.run_id)
    assert measured.payload["current_snapshot_id"] == drifted_snapshot and measured.payload["breaches"]
    assert measured.payload["retrain"] is None
    (alerted,) = get_ledger().records(pipeline=PIPELINE, event_type="monitoring.alerted", run_id=run.run_id)
    assert (
        alerted.payload["channels"] == ["log"] and alerted.payload["breaches"] == measured.payload["breaches"]
    )


def test_audit_report_lists_the_monitoring_time_series(demo):
    """Expect the report's `monitoring` key (schema 1.1, additive) and its HTML section."""
    from llmops.reports.audit import build_report, render_html
    from llmops.specs import load_pipeline

    report = build_report(load_pipeline(PIPELINE), demo["finetune"].run_id)
    section = report["monitoring"]
    assert report["schema_version"] == "1.1" and report["summary"]["decision"] == "promoted"
    assert section["dag_id"] == f"{PIPELINE}__monitor" and section["runs_measured"] >= 3
    assert section["breaches"] == section["latest_run"]["breaches"] and section["breaches"]
    assert {"text.body.vocabulary_psi", "rows.current"} <= {m["metric"] for m in section["latest"]}
    assert any(not run["breaches"] for run in section["runs"])  # the DAG run on unchanged data
    html = render_html(report)
    assert '<section id="monitoring">' in html and "text.body.vocabulary_psi" in html
