"""The demo pipeline end to end with real Airflow runs (dag.test), real GX, training and MLflow."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _planted_values(planted: dict) -> list[str]:
    values = [v for kind in ("email", "phone", "payment_card", "iban", "person_name") for v in planted[kind]]
    assert len(values) > 300
    return values


def _settings():
    from llmops.settings import get_settings

    return get_settings()


def test_ingest_publishes_curated_snapshot_without_pii(demo):
    """Expect a curated snapshot with every planted PII value removed and counts that reconcile."""
    from llmops import snapshots

    assert demo["ingest"].state == "success"
    ref = snapshots.get_latest(_settings().lake_root, "curated", "support_bot", "records")
    manifest = snapshots.read_manifest(ref)
    from llmops.privacy.keys import get_key_ring

    table = snapshots.read_snapshot(ref, get_key_ring())
    assert "customer_name" not in table.column_names and "customer_phone" not in table.column_names
    text = json.dumps(table.to_pylist(), ensure_ascii=False, default=str)
    leaked = [v for v in _planted_values(demo["planted"]) if v in text]
    assert leaked == []
    assert "[EMAIL]" in text and "[PERSON_NAME]" in text and "[PAYMENT_CARD]" in text
    assert all(e.startswith("<email:") for e in table.column("customer_email").to_pylist())
    assert manifest["privacy"]


def test_raw_zone_is_encrypted_at_rest(demo):
    """Expect raw and quarantine snapshots on disk to be ciphertext, readable only with the key."""
    lake = Path(_settings().lake_root)
    encrypted = list(lake.glob("raw/support_bot/*/*/part-*.parquet.enc")) + list(
        lake.glob("quarantine/**/part-*.parquet.enc")
    )
    assert len(encrypted) >= 4
    assert not list(lake.glob("raw/**/*.parquet")) and not list(lake.glob("quarantine/**/*.parquet"))
    assert not [p for p in lake.glob("_staging/**/*") if p.is_file()]  # every staged part was committed
    some_email = sorted(demo["planted"]["email"])[0].encode()
    for path in encrypted:
        blob = path.read_bytes()
        assert b"PAR1" not in blob[:8] and some_email not in blob
        with pytest.raises(Exception):  # noqa: B017 - not a Parquet file without decryption
            pq.read_table(path)


def test_validation_quarantined_the_planted_bad_rows(demo):
    from llmops.ledger import get_ledger

    (record,) = get_ledger().records(
        pipeline="support_bot", event_type="dataset.validated", run_id=demo["ingest"].run_id
    )
    p = record.payload
    assert p["counts_reconcile"]
    assert p["rows_in"] == 451 and p["normalisation"]["exact_duplicates_removed"] == 1
    assert p["rows_quarantined"] == 7
    assert p["rows_accepted"] + p["rows_quarantined"] == p["rows_after_normalisation"]
    assert p["contracts"][1]["field_drift"]["unexpected_fields"] == {"internal_notes": 1}


def test_finetune_registers_and_promotes_champion(demo):
    """Expect a registered version with alias champion, tagged with its data and gate results."""
    from llmops.registry.mlflow_registry import alias_version, model_version_info

    assert demo["finetune"].state == "success"
    version = alias_version("support_bot", "champion")
    assert version == "1"
    info = model_version_info("support_bot", version)
    assert info["tags"]["llmops.gates_passed"] == "true"
    assert len(info["tags"]["llmops.curated_snapshot_id"]) == 20
    assert "champion" in info["aliases"]


def test_search_trials_are_child_runs_and_the_final_training_uses_the_best(demo):
    """Expect 3 trials told to the study, one child MLflow run each, and the best values trained."""
    from mlflow import MlflowClient

    from llmops.ledger import get_ledger
    from llmops.registry.mlflow_registry import configure

    run_id = demo["finetune"].run_id
    ledger = get_ledger()
    completed = ledger.records(pipeline="support_bot", event_type="hpo.completed", run_id=run_id)
    assert len(completed) == 1
    summary = completed[0].payload
    assert [t["state"] for t in summary["trials"]] == ["succeeded"] * 3
    assert all(t["global_step"] == 12 for t in summary["trials"])
    best = summary["best"]
    trained = ledger.records(pipeline="support_bot", event_type="model.trained", run_id=run_id)[-1].payload
    assert trained["tuned_by_search"] is True
    assert trained["hyperparameters"]["learning_rate"] == best["params"]["learning_rate"]
    assert trained["lora"]["r"] == best["params"]["lora_r"]

    configure()
    client = MlflowClient()
    experiment = client.get_experiment_by_name("support_bot")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`llmops.airflow_run_id` = '{run_id}'"
    )
    stages = {r.data.tags["llmops.stage"]: r for r in runs}
    assert {"search", "trial-0", "trial-1", "trial-2", "train"} <= set(stages)
    parent = stages["search"].info.run_id
    assert all(stages[f"trial-{n}"].data.tags.get("mlflow.parentRunId") == parent for n in range(3))
    assert all("eval_loss" in stages[f"trial-{n}"].data.metrics for n in range(3))
    assert stages["search"].data.metrics["trials_succeeded"] == 3
    # The run is over: none of its MLflow runs is left RUNNING (they end with the audit report).
    assert {r.info.status for r in runs} == {"FINISHED"}, {
        r.data.tags["llmops.stage"]: r.info.status for r in runs
    }


def test_probes_run_and_the_weak_model_is_compared_with_the_champion(demo):
    """Expect the PII probe to prompt where values were redacted (hashes only, no leak), word-list
    rates to be measured, and the weak run's gates to compare it with champion v1 on the same data."""
    from llmops import storage
    from llmops.ledger import get_ledger
    from llmops.orchestration.finetune.jobs import job_root
    from llmops.specs import load_pipeline

    ledger = get_ledger()
    [evaluated] = ledger.records(
        pipeline="support_bot", event_type="model.evaluated", run_id=demo["finetune"].run_id
    )
    probe = evaluated.payload["pii_probe"]
    assert probe["prompts"] > 10 and probe["target_values"] > 10
    assert probe["pii_leakage_rate"] == 0.0
    metrics = evaluated.payload["metrics"]
    assert metrics["toxicity_rate"] == 0.0 and 0.0 <= metrics["refusal_rate"] <= 1.0
    assert evaluated.payload["champion"].startswith("no champion yet")

    from llmops.encrypted_files import read_encrypted
    from llmops.privacy.keys import get_key_ring

    prompts_uri = storage.join(
        job_root(load_pipeline("support_bot"), demo["finetune"].run_id), "eval", "probe_prompts.jsonl.enc"
    )
    prompts = read_encrypted(prompts_uri, get_key_ring()).decode()
    lines = [json.loads(line) for line in prompts.splitlines()]
    records = [line["prompt"] for line in lines if line["kind"] == "record"]
    # Record prompts, cut just before the redaction placeholder: the model is asked to fill in the
    # value; then one prompt per canary planted in the training split (its row cut before the secret).
    assert len(records) == probe["prompts"] and not [p for p in records if "[EMAIL]" in p]
    assert len(lines) - len(records) == probe["canary_prompts"] >= 1
    assert [v for v in _planted_values(demo["planted"]) if v in prompts] == []

    [gated] = ledger.records(pipeline="support_bot", event_type="model.gated", run_id=demo["weak"].run_id)
    assert gated.payload["champion"] == "champion v1"
    [versus] = [g for g in gated.payload["gates"] if g["beat_champion_by"] is not None]
    assert versus["champion"] is not None and versus["observed"] is not None


def test_registered_model_generates_answers(demo):
    """Expect the champion to load through MLflow and answer a ticket in the trained style."""
    import mlflow

    from llmops.registry.mlflow_registry import configure

    configure()
    model = mlflow.pyfunc.load_model("models:/support_bot@champion")
    import pandas as pd

    prompt = "Ticket (billing): Charged twice for order #12345\nI was charged twice.\nAnswer:"
    answers = model.predict(pd.DataFrame({"prompt": [prompt]}))
    answer = answers[0].lower() if len(answers) == 1 else ""
    # The trained style: the team's sign-off, with the agent's name as the curated data has it
    # (masked), never a real name. Which topic the tiny model picks for the reply varies by run.
    assert "from northwind support" in answer and "[person_name]" in answer, answer


def test_failed_gates_leave_champion_untouched_and_still_report(demo):
    """Expect the weak run to fail its gates, register nothing, keep champion v1, and write a report."""
    from llmops.registry.mlflow_registry import alias_version
    from llmops.reports.audit import build_report
    from llmops.specs import load_pipeline

    assert demo["weak"].state == "failed"
    assert alias_version("support_bot", "champion") == "1"
    report = build_report(load_pipeline("support_bot"), demo["weak"].run_id)
    assert report["summary"]["decision"] == "rejected by gates"
    assert report["registry"] is None
    assert any(not g["passed"] for g in report["gates"]["gates"])
    assert any(f["task_id"] == "check_gates" and f["error_type"] == "GateFailed" for f in report["failures"])


def test_audit_report_contents_and_no_pii(demo):
    """Expect an HTML and JSON report naming sources, counts, hashes, PII handling, metrics and the version."""
    from llmops import storage
    from llmops.storage import safe_run_id

    folder = storage.join(_settings().reports_root, "support_bot", safe_run_id(demo["finetune"].run_id))
    report = storage.read_json(storage.join(folder, "audit_report.json"))
    html = storage.read_bytes(storage.join(folder, "audit_report.html")).decode()
    assert report["summary"]["decision"] == "promoted" and report["summary"]["model"] == "support_bot v1"
    assert {s["name"] for s in report["data"]["sources"]} == {"helpdesk_db", "webform_api"}
    assert all(len(s["sha256"]) == 64 and s["encryption"]["kek_ids"] for s in report["data"]["sources"])
    assert report["data"]["validation"]["rows_quarantined"] == 7
    assert report["data"]["privacy"]["privacy"]
    assert report["gates"]["passed"] and report["evaluation"]["token_f1"] >= 0.5
    assert report["training"]["result"]["base_model_sha256"]
    assert report["ledger"]["verification"]["ok"]
    assert "Compliance audit report" in html and "support_bot v1" in html
    for text in (json.dumps(report, ensure_ascii=False), html):
        leaked = [v for v in _planted_values(demo["planted"]) if v in text]
        assert leaked == []
    assert demo["token"] not in html


def test_no_pii_or_secret_in_xcom(demo):
    """Expect XCom (stored in the Airflow DB) to hold ids and counts only."""
    db = Path(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        values = " ".join(str(v) for (v,) in conn.execute("SELECT value FROM xcom"))
    assert values
    assert [v for v in _planted_values(demo["planted"]) if v in values] == []
    assert demo["token"] not in values


def test_ledger_verifies(demo):
    from llmops.ledger import get_ledger

    result = get_ledger().verify()
    assert result.ok and result.records >= 15


def test_retried_extract_is_idempotent(demo):
    """Expect re-running extraction and commit of a finished run to find its own snapshot, recording nothing new."""
    from llmops.ledger import get_ledger
    from llmops.orchestration.ingest import extract as ingest

    ledger = get_ledger()
    before = len(ledger.records())
    (first,) = [
        r
        for r in ledger.records(event_type="snapshot.raw.created", run_id=demo["ingest"].run_id)
        if r.payload["source"] == "helpdesk_db"
    ]
    items = [i for i in ingest.plan("support_bot", demo["ingest"].run_id) if i["source"] == "helpdesk_db"]
    parts = [ingest.extract_partition("support_bot", item, demo["ingest"].run_id) for item in items]
    (again,) = ingest.commit_raw("support_bot", parts, demo["ingest"].run_id, sources=["helpdesk_db"])
    assert again["snapshot_id"] == first.payload["snapshot_id"]
    assert len(ledger.records()) == before


# ------------------------------------------------------------------------------------------------
# Governance over time. These change the lake, so they run last in this module.


def _answers_for(keys: tuple[str, ...]) -> list[tuple[str, str]]:
    """The batch-inference answers held for these record keys (the results table is the company's)."""
    from llmops.cli import demo_dir

    with sqlite3.connect(demo_dir() / "tickets.db") as conn:
        marks = ", ".join("?" for _ in keys)
        rows = conn.execute(
            f"SELECT record_key, model_version FROM support_bot_answers WHERE record_key IN ({marks})", keys
        ).fetchall()
    conn.close()
    return rows


def _scan_for_subject(demo, mlflow_server_root) -> list[str]:
    """Every identifier of the planted subject anywhere the platform wrote: the lake (every zone,
    staging and job folders, encrypted files decrypted), the ledger, the reports, the OpenLineage
    events, the Airflow database (XCom, task instances, rendered fields...) and task log, the MLflow
    tracking database and artifact store. The source systems (the demo's own database and API
    file) are not the platform's and are left out. The erasure request's own run conf is searched
    too: it holds the subject sealed."""
    from identifier_scan import scan

    from llmops.cli import demo_dir

    home = demo["home"]
    return scan(
        [home / "llmops", home / "airflow", mlflow_server_root],
        [*demo["subject"].values(), *demo["subject_keys"]],
        exclude=[demo_dir()],
    )


@pytest.mark.rewrites_demo(step=1)
def test_erasure_leaves_no_identifier_of_the_subject_anywhere(demo, mlflow_server_root):
    """Expect an erasure request to remove every identifier of a subject planted in both source
    kinds from every byte the platform wrote (batch answers included), flag v1, and keep the subject
    out of the next ingest of the same sources."""
    from airflow.dag_processing.dagbag import DagBag

    from llmops import snapshots
    from llmops.demo.tickets_api import serve_in_thread
    from llmops.governance.erasure import open_erasure_reviews
    from llmops.governance.sealed import seal
    from llmops.ledger import get_ledger

    subject, subject_keys = demo["subject"], demo["subject_keys"]
    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    scored = bag.dags["support_bot__batch_inference"].test()
    assert scored.state == "success"
    assert [key for key, _ in _answers_for(subject_keys)] == [subject_keys[0]]  # the batch table is the db's
    task_log = (demo["home"] / "airflow" / "logs" / "e2e-session.log").read_text()
    assert "committed" in task_log and "support_bot" in task_log  # the log holds the runs' own lines
    before = _scan_for_subject(demo, mlflow_server_root)
    # The scan can fail: before erasure it finds the subject in the raw zone (decrypted) and in the jobs.
    assert any("/lake/raw/" in hit for hit in before), before
    assert any(subject["customer_email"].lower() in hit.lower() for hit in before)
    lake = _settings().lake_root
    curated_before = snapshots.read_manifest(snapshots.get_latest(lake, "curated", "support_bot", "records"))

    run = bag.dags["data_erasure_request"].test(
        run_conf={
            "subject_id": seal(subject["customer_email"].upper()),
            "request_id": "DSR-2026-0001",
            "requested_by": "dpo@northwind.example",
            "pipeline": "support_bot",
        }
    )
    assert run.state == "success"
    assert _scan_for_subject(demo, mlflow_server_root) == []
    assert _answers_for(subject_keys) == []
    curated_after = snapshots.read_manifest(snapshots.get_latest(lake, "curated", "support_bot", "records"))
    assert curated_after["row_count"] == curated_before["row_count"] - len(subject_keys)
    assert curated_after["erasure"]["replaces"] == curated_before["snapshot_id"]
    assert open_erasure_reviews("support_bot", "1") == ["DSR-2026-0001"]
    (done,) = get_ledger().records(event_type="erasure.completed", run_id=run.run_id)
    assert done.payload["records_found"] == len(subject_keys) and done.payload["snapshots_rewritten"] >= 4
    assert done.payload["models_flagged"] == [{"model_name": "support_bot", "version": "1"}]
    assert done.payload["job_files_removed"] >= 2 and done.payload["batch_answers_removed"] == 1
    assert get_ledger().verify().ok

    # The sources still hold the subject: the next ingest keeps them out (suppression list).
    server, url = serve_in_thread(demo["api_records"], demo["token"])
    os.environ["AIRFLOW_CONN_SUPPORT_TICKETS_API"] = json.dumps(
        {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": server.server_address[1],
            "schema": "http",
            "password": demo["token"],
        }
    )
    try:
        again = bag.dags["support_bot__ingest"].test()
    finally:
        server.shutdown()
    assert again.state == "success"
    assert _scan_for_subject(demo, mlflow_server_root) == []


@pytest.mark.rewrites_demo(step=2)
def test_retention_keeps_model_lineage_and_deletes_the_rest(demo):
    """Expect expired snapshots to be deleted and recorded, except the champion's lineage when asked to keep it."""
    from datetime import UTC, datetime, timedelta

    from llmops import snapshots
    from llmops.governance.retention import apply_retention
    from llmops.specs import load_pipeline

    spec = load_pipeline("support_bot")
    lake = _settings().lake_root
    later = datetime.now(UTC) + timedelta(days=3650)
    count = sum(
        len(snapshots.list_snapshots(lake, z, "support_bot")) for z in ("raw", "quarantine", "curated", "sft")
    )
    dry = apply_retention(spec, later, "retention-dry", dry_run=True)
    assert len(dry["deleted"]) + len(dry["kept"]) == count and dry["kept"]
    assert (
        sum(
            len(snapshots.list_snapshots(lake, z, "support_bot"))
            for z in ("raw", "quarantine", "curated", "sft")
        )
        == count
    )

    now_ok = apply_retention(spec, datetime.now(UTC), "retention-now")
    assert now_ok["deleted"] == [] and now_ok["kept"] == []

    strict = spec.model_copy(
        update={"retention": spec.retention.model_copy(update={"keep_model_lineage": False})}
    )
    done = apply_retention(strict, later, "retention-strict")
    assert len(done["deleted"]) == count
    assert all(
        not snapshots.list_snapshots(lake, z, "support_bot") for z in ("raw", "quarantine", "curated", "sft")
    )
    with pytest.raises(snapshots.SnapshotError, match="run the support_bot__ingest DAG first"):
        snapshots.get_latest(lake, "curated", "support_bot", "records")
