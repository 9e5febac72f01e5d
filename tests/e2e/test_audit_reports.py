"""The `compliance_audit_report` DAG on the demo: the champion's report, model card and data card,
and no planted PII, API token, connection password or key anywhere under the reports root."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PIPELINE = "support_bot"
FILES = ("audit_report.json", "audit_report.html", "model_card.md", "data_card.md")


@pytest.fixture(scope="module")
def bag(demo):
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert not dagbag.import_errors
    return dagbag


@pytest.fixture(scope="module")
def report_run(bag):
    """One run of the DAG for the demo pipeline (every registered version)."""
    run = bag.dags["compliance_audit_report"].test(run_conf={"pipeline": PIPELINE})
    assert run.state == "success"
    return run


def _folder(version: str) -> Path:
    from llmops.settings import get_settings

    return Path(get_settings().reports_root) / PIPELINE / f"model-{PIPELINE}-v{version}"


def _champion() -> str:
    from llmops.registry.mlflow_registry import alias_version

    version = alias_version(PIPELINE, "champion")
    assert version is not None
    return version


def test_champion_report_answers_which_data_how_validated_protected_approved_deployed(report_run):
    """Expect the champion's report to hold the demo's sources and counts, every expectation, the PII
    actions, its gates, its promotion, and a verified ledger; and its four files on disk."""
    from llmops.ledger import get_ledger

    version = _champion()
    folder = _folder(version)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    report = json.loads((folder / "audit_report.json").read_text())
    assert report["kind"] == "model version" and report["schema_version"] == "1.2"
    cost = report["cost"]  # the demo prices CPU hours: the search trials and the final training
    assert cost["currency"] == "EUR" and cost["totals"]["cost"] > 0
    assert {job["kind"] for job in cost["jobs"]} >= {"trial", "train"}
    assert cost["totals"]["gpu_hours"] == 0
    assert report["generated_by"]["dag_run_id"] == report_run.run_id
    summary = report["summary"]
    assert summary["model"] == f"{PIPELINE} v{version}" and summary["status"] == "champion"
    assert summary["gates_passed"] is True and summary["ledger_verified"] is True

    ledger = get_ledger()
    [registered] = ledger.records(
        pipeline=PIPELINE, event_type="model.registered", subject=f"model/{PIPELINE}/{version}"
    )
    raw = {
        r.payload["source"]: r.payload
        for r in ledger.records(pipeline=PIPELINE, event_type="snapshot.raw.created")
        if r.run_id == report["run"]["ingest_run_id"]
    }
    data = report["data"]
    assert {s["name"]: (s["row_count"], s["raw_snapshot_id"], s["sha256"]) for s in data["sources"]} == {
        name: (p["row_count"], p["snapshot_id"], p["sha256"]) for name, p in raw.items()
    }
    assert (
        set(raw) == {"helpdesk_db", "webform_api"} and report["run"]["finetune_run_id"] == registered.run_id
    )
    assert all(s["encryption"]["kek_ids"] for s in data["sources"])
    assert data["collection_period"]["from"] and data["collection_period"]["to"]

    [check] = data["validation"]
    assert check["rows_quarantined"] == 7 == sum(r["rows"] for r in check["quarantine_reasons"])
    assert check["rows_in"] == sum(p["row_count"] for p in raw.values()) and check["counts_reconcile"]
    assert len(check["expectations"]) == check["statistics"]["evaluated_expectations"] >= 5
    assert all(
        e["success"] is not None and e["severity"] in ("blocking", "warning") for e in check["expectations"]
    )
    assert check["evidence"]["lake_copy"]["matches_ledger"] is True

    [privacy] = data["privacy"]
    actions = {c["column"]: c["action"] for c in privacy["columns"]}
    assert actions == {"customer_email": "pseudonymise", "customer_name": "drop", "customer_phone": "drop"}
    assert privacy["residual_pii"] == {} and {d["pii_type"] for d in privacy["detections"]} >= {
        "email",
        "phone",
    }

    assert report["training"]["base_model"]["sha256"] and report["training"]["config_sha256"]
    assert report["hpo"] and len(report["hpo"]["trials"]) == 3
    gates = report["evaluation"]["gates"]
    assert gates["passed"] and {g["metric"] for g in gates["results"]} >= {"token_f1", "pii_leakage_rate"}
    assert report["evaluation"]["probes"]["pii_leakage"]["rate"] == 0

    assert report["approval"]["decision"] == "automatic"  # the demo spec needs no human approval
    history = [e["event"] for e in report["deployment"]["history"]]
    assert history[:2] == ["registered", "promoted"]
    assert report["registry"]["matches_ledger"] is True and "champion" in report["registry"]["aliases"]
    lineage = report["lineage"]
    assert lineage["openlineage"]["configured"] and lineage["edges_confirmed"] == lineage["edges_checked"] > 5
    assert report["ledger"]["verification"]["ok"]

    html = (folder / "audit_report.html").read_text()
    assert "<svg" in html and "<script" not in html.lower()
    card = (folder / "model_card.md").read_text()
    assert "## Intended use" in card and "customer_support_automation" in card and "## Limitations" in card
    assert "## Personal and sensitive information" in (folder / "data_card.md").read_text()

    [generated] = ledger.records(
        pipeline=PIPELINE,
        event_type="report.generated",
        subject=f"report/model-{PIPELINE}-v{version}",
        run_id=report_run.run_id,
    )
    assert set(generated.payload["files"]) == {"json", "html", "model_card", "data_card"}


def _secrets() -> dict[str, str]:
    """The demo's API token, every connection password, and the keys in their usual encodings."""
    from llmops.privacy.keys import get_kek, get_pseudonymisation_key
    from llmops.specs import load_pipeline

    found: dict[str, str] = {}
    for name, value in os.environ.items():
        if not name.startswith("AIRFLOW_CONN_"):
            continue
        try:
            password = json.loads(value).get("password")
        except ValueError:
            password = urlsplit(value).password
        if password:
            found[f"{name} password"] = password
    keys = {
        "KEK": get_kek(),
        "pseudonymisation key": get_pseudonymisation_key(
            load_pipeline(PIPELINE).privacy.pseudonymisation_conn_id
        ),
    }
    for label, key in keys.items():
        found[f"{label} (base64)"] = base64.b64encode(key).decode()
        found[f"{label} (urlsafe base64)"] = base64.urlsafe_b64encode(key).decode().rstrip("=")
        found[f"{label} (hex)"] = key.hex()
    return found


def test_no_pii_token_password_or_key_in_any_report_file(report_run, demo):
    """Expect none of the planted PII values, the API token, a connection password or key material in
    any file under the reports root: per-run and per-version, HTML, JSON and Markdown."""
    from llmops.settings import get_settings

    files = [p for p in Path(get_settings().reports_root).rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert set(FILES) <= names and "LATEST.json" in names
    assert any(p.parent.name.startswith("manual__") for p in files)  # the fine-tune runs' reports too
    planted = [
        v for kind in ("email", "phone", "payment_card", "iban", "person_name") for v in demo["planted"][kind]
    ]
    assert len(planted) > 300
    secrets = {"API token": demo["token"], **_secrets()}
    assert "AIRFLOW_CONN_SUPPORT_TICKETS_API password" in secrets
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        leaked = [v for v in planted if v in text]
        assert leaked == [], f"{path}: planted PII {leaked[:3]}"
        exposed = [label for label, value in secrets.items() if value and value in text]
        assert exposed == [], f"{path}: {exposed}"


def test_bad_params_fail_naming_the_param(bag, capfd):
    """Expect an unknown pipeline to fail the run with the Param named, and a malformed date to be
    refused before a run starts."""
    from airflow.sdk.exceptions import ParamValidationError

    dag = bag.dags["compliance_audit_report"]
    run = dag.test(run_conf={"pipeline": "no_such_pipeline"})
    assert run.state == "failed"
    out, err = capfd.readouterr()
    assert "Param 'pipeline': no valid pipeline spec named 'no_such_pipeline'" in out + err
    assert "known: northwind_kb, support_bot, support_replies" in out + err
    with pytest.raises(ParamValidationError, match="date_to"):
        dag.test(run_conf={"pipeline": PIPELINE, "date_to": "31/12/2026"})
