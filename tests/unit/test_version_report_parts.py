"""The model-version compliance report's pieces, on a real SQLite ledger (no registry, no Airflow)."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest
from ledger_chains import finetune_run, ingest_run, sid

from llmops.ledger import Ledger
from llmops.reports import lineage_graph
from llmops.reports.deployment import deployment_history, deployment_status, replay_aliases
from llmops.reports.model_version import (
    ReportRequestError,
    VersionNotRegistered,
    build_model_version_report,
    markdown_text,
    plan_reports,
    render_data_card,
    render_model_card,
    render_model_version_html,
)
from llmops.reports.period import Window, collection_period, parse_window
from llmops.reports.version_data import ingest_chain
from llmops.specs import load_spec

SPEC = load_spec(Path(__file__).resolve().parents[2] / "include" / "pipelines" / "support_bot.yaml")
PIPELINE, MODEL = SPEC.name, SPEC.registry.model_name


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")


def _promote(ledger: Ledger, version: str, previous: str | None, run_id: str) -> None:
    """What `finetune.promote` records."""
    ledger.append(
        pipeline=PIPELINE,
        event_type="model.promoted",
        subject=f"model/{MODEL}/{version}",
        run_id=run_id,
        payload={"model_name": MODEL, "version": version, "champion": version, "previous": previous},
    )


def _rollback(ledger: Ledger, champion: str, rolled_back: str, run_id: str) -> None:
    """What `finetune.rollback` records."""
    ledger.append(
        pipeline=PIPELINE,
        event_type="model.rolled_back",
        subject=f"model/{MODEL}/{champion}",
        run_id=run_id,
        payload={
            "model_name": MODEL,
            "champion": champion,
            "rolled_back": rolled_back,
            "reason": "INC-7 wrong refunds",
            "requested_by": "oncall-anna",
        },
    )


def _three_versions(ledger: Ledger) -> None:
    """v1 promoted, v2 promoted then rolled back (v1 champion again), v3 registered but rejected."""
    ids = ingest_run(ledger, PIPELINE, "ingest-1", label="i1")
    finetune_run(ledger, PIPELINE, "ft-1", curated=ids["curated"], model_name=MODEL, version="1", label="f1")
    _promote(ledger, "1", None, "ft-1")
    finetune_run(ledger, PIPELINE, "ft-2", curated=ids["curated"], model_name=MODEL, version="2", label="f2")
    _promote(ledger, "2", "1", "ft-2")
    _rollback(ledger, "1", "2", "rollback-1")
    finetune_run(ledger, PIPELINE, "ft-3", curated=ids["curated"], model_name=MODEL, version="3", label="f3")
    ledger.append(
        pipeline=PIPELINE,
        event_type="model.rejected",
        subject=f"model/{MODEL}/3",
        run_id="ft-3",
        payload={
            "model_name": MODEL,
            "version": "3",
            "approved": False,
            "outcome": "rejected",
            "approver": {"id": "alice", "name": "Alice"},
            "responded_at": "2026-11-28T09:30:00+00:00",
        },
    )


# ------------------------------------------------------------------------------ period and request


def test_collection_period_spans_watermarks_and_ingest_times():
    """Expect per-source periods and an overall min/max over every timestamp bound."""
    sources = [
        {
            "name": "db",
            "raw_snapshot_id": "a",
            "ingested_at": "2026-03-05T10:00:00+00:00",
            "watermark": {
                "column": "updated_at",
                "low": "2026-01-01T00:00:00",
                "high": "2026-03-01T00:00:00",
            },
        },
        {
            "name": "api",
            "raw_snapshot_id": "b",
            "ingested_at": "2026-03-06T08:00:00+00:00",
            "watermark": None,
        },
    ]
    period = collection_period(sources)
    assert period["from"] == "2026-01-01T00:00:00+00:00"  # a naive watermark is read as UTC
    assert period["to"] == "2026-03-06T08:00:00+00:00"
    assert period["basis"] == "mixed" and period["open_start"] is False
    assert [(s["source"], s["basis"], s["column"]) for s in period["sources"]] == [
        ("db", "watermark", "updated_at"),
        ("api", "ingest time", None),
    ]


def test_collection_period_of_a_first_load_and_of_an_id_watermark():
    """Expect an open start when a watermark had no lower bound, and ingest times standing in for
    bounds that are not timestamps (an id column)."""
    first = {
        "name": "db",
        "raw_snapshot_id": "a",
        "ingested_at": "2026-03-05T10:00:00+00:00",
        "watermark": {"column": "updated_at", "low": None, "high": "2026-03-01T00:00:00+00:00"},
    }
    ids = {
        "name": "ids",
        "raw_snapshot_id": "b",
        "ingested_at": "2026-03-07T10:00:00+00:00",
        "watermark": {"column": "id", "low": "100", "high": "250"},
    }
    period = collection_period([first, ids])
    assert period["open_start"] is True
    assert period["from"] == "2026-03-01T00:00:00+00:00" and period["to"] == "2026-03-07T10:00:00+00:00"
    assert period["sources"][1]["from"] == "100" and period["sources"][1]["to"] == "250"
    assert collection_period([])["from"] is None


def test_window_is_whole_days_inclusive():
    window = parse_window("2026-03-01", "2026-03-02")
    assert window == Window(date(2026, 3, 1), date(2026, 3, 2))
    assert window.contains("2026-03-02T23:59:59+00:00") and window.contains("2026-03-01T00:00:00+00:00")
    assert not window.contains("2026-03-03T00:00:00+00:00") and not window.contains(
        "2026-02-28T23:00:00+00:00"
    )
    assert Window().contains("2020-01-01T00:00:00+00:00")


@pytest.mark.parametrize(
    ("date_from", "date_to", "message"),
    [
        ("2026-13-01", None, "Param 'date_from': expected an ISO date (YYYY-MM-DD), got '2026-13-01'"),
        (None, "last week", "Param 'date_to': expected an ISO date (YYYY-MM-DD), got 'last week'"),
        (
            "2026-03-02",
            "2026-03-01",
            "Params 'date_from' (2026-03-02) and 'date_to' (2026-03-01): date_from is after",
        ),
    ],
)
def test_bad_dates_are_refused_naming_the_param(date_from, date_to, message):
    with pytest.raises(ReportRequestError) as info:
        parse_window(date_from, date_to)
    assert message in str(info.value)


def test_plan_lists_registered_versions_and_names_the_bad_param(ledger):
    """Expect every registered version by default, one on request, and errors naming the Param."""
    _three_versions(ledger)
    items = plan_reports(PIPELINE, None, None, None, ledger=ledger)
    assert [(i["pipeline"], i["version"]) for i in items] == [
        (PIPELINE, "1"),
        (PIPELINE, "2"),
        (PIPELINE, "3"),
    ]
    assert [i["version"] for i in plan_reports(PIPELINE, 2, None, None, ledger=ledger)] == ["2"]
    assert plan_reports("", None, None, "2000-01-01", ledger=ledger) == []  # all registered after the window
    with pytest.raises(
        ReportRequestError,
        match=r"Param 'pipeline': no valid pipeline spec named 'nope'.*known: northwind_kb, support_bot, support_replies",
    ):
        plan_reports("nope", None, None, None, ledger=ledger)
    with pytest.raises(
        ReportRequestError,
        match=r"Param 'model_version': pipeline 'support_bot' registered no version 9 .*registered: 1, 2, 3",
    ):
        plan_reports(PIPELINE, 9, None, None, ledger=ledger)
    with pytest.raises(ReportRequestError, match="Param 'model_version': name the pipeline too"):
        plan_reports("", 1, None, None, ledger=ledger)
    with pytest.raises(ReportRequestError, match="Param 'model_version': expected a version number"):
        plan_reports(PIPELINE, "v1", None, None, ledger=ledger)


# ------------------------------------------------------------------------------- deployment history


def test_rolled_back_version_history_and_status(ledger):
    """Expect v2's promotion and rollback (with who and why), and v1 replaced then restored."""
    _three_versions(ledger)
    records = ledger.records(pipeline=PIPELINE)
    v2 = deployment_history(records, MODEL, "2")
    assert [e["event"] for e in v2] == ["registered", "promoted", "rolled back", "challenger moved"]
    assert v2[1]["description"] == "promoted: alias champion; v1 kept as previous"
    assert v2[2]["actor"] == "oncall-anna" and "INC-7 wrong refunds" in v2[2]["description"]
    assert v2[2]["aliases_after"] == ["challenger", "rolled_back"]
    assert v2[3]["description"] == "alias challenger moved to v3" and v2[3]["aliases_after"] == [
        "rolled_back"
    ]
    v1 = deployment_history(records, MODEL, "1")
    assert [e["event"] for e in v1] == [
        "registered",
        "promoted",
        "challenger moved",
        "replaced as champion",
        "restored as champion",
    ]
    assert v1[-1]["aliases_after"] == ["champion"]
    final = replay_aliases(records, MODEL)[-1][2]
    assert final == {"champion": "1", "rolled_back": "2", "challenger": "3"}
    assert deployment_status(["rolled_back"], v2) == ("rolled back", "rolled back")
    assert deployment_status([], v2) == ("retired", "rolled back")  # its alias moved on since
    assert deployment_status(["champion"], v1) == ("champion", "promoted (champion)")


def test_never_promoted_version(ledger):
    """Expect a rejected version's history to show the approver's decision and no promotion."""
    _three_versions(ledger)
    v3 = deployment_history(ledger.records(pipeline=PIPELINE), MODEL, "3")
    assert [e["event"] for e in v3] == ["registered", "not approved"]
    assert v3[1]["actor"] == "Alice (alice)" and v3[1]["description"] == "not approved (rejected)"
    assert deployment_status(["challenger"], v3) == ("rejected at approval", "rejected at approval")
    assert deployment_status(["challenger"], v3[:1]) == ("challenger", "registered, not promoted")


def test_serving_deployments_are_part_of_the_history(ledger):
    """Expect a version's deployments to serving targets (and failed ones) in its history, without
    the smoke test's generated answer."""
    _three_versions(ledger)
    for target, event in (("mlflow", "model.deployed"), ("kserve", "model.deployment_failed")):
        ledger.append(
            pipeline=PIPELINE,
            event_type=event,
            subject=f"model/{MODEL}/1/{target}",
            run_id="ft-1",
            payload={
                "model_name": MODEL,
                "version": "1",
                "target": target,
                "trigger": "promotion",
                "smoke_test": {"answer": "Dear Anna Chen, a generated answer"},
            },
        )
    history = deployment_history(ledger.records(pipeline=PIPELINE), MODEL, "1")
    served = [(e["event"], e["description"]) for e in history if e["event_type"].startswith("model.deploy")]
    assert served == [
        ("deployed", "deployed to mlflow (on promotion)"),
        ("deployment failed", "deployment to kserve (on promotion): failed"),
    ]
    assert "Anna Chen" not in json.dumps(history)


# ------------------------------------------------------------------------------------- data chain


def test_ingest_chain_follows_erasure_rewrites_and_carried_forward_rows(ledger):
    """Expect a curated snapshot rewritten by an erasure to lead to the run that wrote it, and its
    carried-forward rows to the run before."""
    first = ingest_run(ledger, PIPELINE, "ingest-1", label="old")
    second = ingest_run(ledger, PIPELINE, "ingest-2", label="new", carried_forward_rows=12)
    rewritten = sid("rewritten")
    ledger.append(
        pipeline=PIPELINE,
        event_type="erasure.snapshot_rewritten",
        subject=f"curated/records/{second['curated']}",
        run_id="erasure-1",
        payload={
            "request_id": "DSR-1",
            "old_snapshot_id": second["curated"],
            "new_snapshot_id": rewritten,
            "rows_removed": 1,
            "rows_kept": 70,
        },
    )
    chain = ingest_chain(ledger.records(pipeline=PIPELINE), rewritten)
    assert [(e["run_id"], e["curated_snapshot_id"], e["written_as"]) for e in chain] == [
        ("ingest-2", rewritten, second["curated"]),
        ("ingest-1", first["curated"], first["curated"]),
    ]
    assert chain[0]["erasure_rewrites"][0]["request_id"] == "DSR-1" and chain[0]["carried_forward_rows"] == 12
    assert chain[1]["carried_forward_rows"] == 0 and chain[1]["carried_from"] is None

    # A version trained after the erasure: both ingest runs' sources, and the rewrite in its lineage.
    finetune_run(ledger, PIPELINE, "ft-9", curated=rewritten, model_name=MODEL, version="9", label="f9")
    report = build_model_version_report(SPEC, MODEL, "9", ledger=ledger, registry=False)
    assert report["run"]["ingest_run_ids"] == ["ingest-2", "ingest-1"] and len(report["data"]["sources"]) == 2
    assert report["data"]["curated"]["written_as"] == second["curated"]
    steps = {(e["from"], e["to"]): e["step"] for e in report["lineage"]["edges"]}
    assert steps[(f"curated:{second['curated']}", f"curated:{rewritten}")] == "erasure rewrite"
    assert steps[(f"curated:{first['curated']}", f"curated:{second['curated']}")] == "carry forward"
    assert steps[(f"curated:{rewritten}", f"sft:{sid('f9:sft')}")] == "prepare_training_data"
    [curated] = [s for s in report["data"]["snapshots"] if s["snapshot_id"] == second["curated"]]
    assert curated["state"] == f"rewritten by erasure request DSR-1 (as {rewritten})"


# ------------------------------------------------------------------------------ the whole report


def test_report_of_a_rolled_back_version_holds_the_evidence_and_no_secret(ledger):
    """Expect each section built from the ledger; no sample values, no password; registry left out."""
    _three_versions(ledger)
    report = build_model_version_report(SPEC, MODEL, "2", ledger=ledger, registry=False, generated_by="r-1")
    assert report["schema_version"] == "1.2" and report["kind"] == "model version"
    assert report["cost"] is None  # the chain holds no cost.recorded record
    summary = report["summary"]
    assert (summary["model"], summary["status"], summary["decision"]) == (
        "support_bot v2",
        "rolled back",
        "rolled back",
    )
    assert summary["aliases"] == ["rolled_back"] and summary["ledger_verified"] is True
    assert (
        summary["rows_ingested"] == 60 and summary["rows_quarantined"] == 3 and summary["training_rows"] == 48
    )
    # Which split each number comes from: the gates' metrics from the test split, never trained on.
    assert (summary["validation_rows"], summary["test_rows"]) == (6, 9) and summary["eval_rows"] == 6
    assert report["evaluation"]["split"] == "test"
    assert report["evaluation"]["split_rows"] == {"train": 48, "validation": 6, "test": 9}
    [source] = report["data"]["sources"]
    assert source["name"] == "helpdesk_db" and source["encryption"]["kek_ids"] == ["17da000ef30e8fca"]
    [check] = report["data"]["validation"]
    assert [e["expectation_type"] for e in check["expectations"]] == [
        "expect_table_row_count_to_be_between",
        "expect_column_values_to_not_be_null",
    ]
    assert check["expectations"][0]["observed_value"] == 60
    assert check["quarantine_reasons"] == [{"reason": "expect_column_values_to_not_be_null(body)", "rows": 3}]
    [privacy] = report["data"]["privacy"]
    assert {"pii_type": "email", "action": "pseudonymise", "count": 57} in privacy["detections"]
    assert report["hpo"]["trials"][1]["state"] == "failed" and report["hpo"]["used_for_final_training"]
    assert (
        report["training"]["base_model"]["sha256"]
        and report["training"]["code_version"]["git_commit"] == "abc1234"
    )
    assert (
        report["evaluation"]["gates"]["passed"]
        and report["evaluation"]["probes"]["pii_leakage"]["prompts"] == 9
    )
    assert report["approval"]["decision"] == "automatic"
    assert report["registry"]["registry_error"] == "not consulted"
    assert report["registry"]["aliases_from_ledger"] == ["rolled_back"]
    assert any("search trials failed" in item for item in report["limitations"])
    text = json.dumps(report)
    assert "a sample value that must not be reported" not in text and "deadbeef" not in text
    assert "T**-masked-sample" not in text
    assert "s3cret" not in text and "hunter2" not in text and "https://ci:***@mlflow.example" in text
    events = {e["event_type"] for e in report["ledger"]["events"]}
    assert {"snapshot.raw.created", "model.trained", "model.promoted", "model.rolled_back"} <= events


def test_report_of_an_unknown_version_is_refused(ledger):
    _three_versions(ledger)
    with pytest.raises(VersionNotRegistered, match="no ledger record of registering support_bot v7"):
        build_model_version_report(SPEC, MODEL, "7", ledger=ledger, registry=False)


def test_window_limits_history_not_the_facts_of_the_version(ledger):
    """Expect a period before everything to keep data and training but drop later events."""
    _three_versions(ledger)
    report = build_model_version_report(
        SPEC, MODEL, "2", ledger=ledger, registry=False, window=parse_window("2000-01-01", "2000-01-31")
    )
    assert report["period"] == {"date_from": "2000-01-01", "date_to": "2000-01-31"}
    assert report["deployment"]["history"] == [] and report["ledger"]["events"] == []
    assert report["data"]["sources"] and report["training"]["mlflow_run_id"]
    assert report["summary"]["status"] == "rolled back"  # the state is computed from all events


def test_rendered_files_are_self_contained_and_escaped(ledger):
    """Expect HTML with an inline SVG and no script or external resource, and Markdown cards whose
    table cells cannot be broken by a value."""
    _three_versions(ledger)
    report = build_model_version_report(SPEC, MODEL, "1", ledger=ledger, registry=False)
    report["pipeline"]["description"] = "Bot | <script>alert(1)</script>"
    html = render_model_version_html(report)
    assert "<svg" in html and "Compliance report: support_bot v1" in html
    assert "<script" not in html.lower() and "&lt;script&gt;" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "url(http" not in html and "@import" not in html
    card, data_card = render_model_card(report), render_data_card(report)
    assert card.startswith('---\nmodel_name: "support_bot"') and "## Intended use" in card
    assert "Bot \\| &lt;script&gt;" in card and "<script" not in card
    assert "## Sources and provenance" in data_card and "## Personal and sensitive information" in data_card
    assert markdown_text("a|b\nc<d>") == "a\\|b\\nc&lt;d&gt;"


# ---------------------------------------------------------------------------------------- lineage


def _graph() -> lineage_graph.LineageGraph:
    graph = lineage_graph.LineageGraph()
    graph.add_node("source:db", "source", "db", "sql", location="tickets")
    graph.add_node("source:api", "source", "api", "rest", location="http://api.example:8080/v1/tickets")
    graph.add_node("raw:db", "raw", "db", sid("raw-db"), snapshot_id=sid("raw-db"))
    graph.add_node("raw:api", "raw", "api", sid("raw-api"), snapshot_id=sid("raw-api"))
    graph.add_edge("source:db", "raw:db", "commit", "ingest-1")
    graph.add_edge("source:api", "raw:api", "commit", "ingest-1")
    return graph


def _commit_event() -> dict:
    return {
        "eventType": "RUNNING",
        "run": {
            "facets": {"llmops": {"pipeline": PIPELINE, "step": "commit", "airflow": {"runId": "ingest-1"}}}
        },
        "inputs": [
            {"namespace": "sqlite:///demo/tickets.db", "name": "tickets"},
            {"namespace": "http://api.example:8080", "name": "/v1/tickets"},
        ],
        "outputs": [
            {"namespace": "file", "name": f"/lake/raw/{PIPELINE}/db/{sid('raw-db')}"},
            {"namespace": "file", "name": f"/lake/raw/{PIPELINE}/api/{sid('raw-api')}"},
            {"namespace": "s3://user:pw@bucket", "name": "elsewhere"},
        ],
    }


def test_lineage_edges_are_checked_against_openlineage_events():
    """Expect each source matched by its recorded location (an exact URL wins over a table-name
    suffix), both commit edges confirmed, and an unknown dataset listed with its credentials redacted."""
    graph = _graph()
    unmatched = lineage_graph.check_against_openlineage(graph, [_commit_event()])
    assert [e["confirmed_by_openlineage"] for e in graph.edges] == [True, True]
    assert graph.nodes["source:api"]["openlineage"] == {
        "namespace": "http://api.example:8080",
        "name": "/v1/tickets",
    }
    assert unmatched == [{"namespace": "s3://user:***@bucket", "name": "elsewhere", "step": "commit"}]


def test_lineage_events_are_read_from_the_file_transport(tmp_path, monkeypatch):
    """Expect only this pipeline's step events of the given runs, a half-written line skipped."""
    path = tmp_path / "openlineage.jsonl"
    other = {
        **_commit_event(),
        "run": {"facets": {"llmops": {"pipeline": "other", "airflow": {"runId": "ingest-1"}}}},
    }
    path.write_text(
        "\n".join([json.dumps(_commit_event()), json.dumps(other), '{"run": {"facets": {"llmops"']) + "\n"
    )
    monkeypatch.setenv(
        "AIRFLOW__OPENLINEAGE__TRANSPORT",
        json.dumps({"type": "file", "log_file_path": str(path), "append": True}),
    )
    events, status = lineage_graph.read_events(PIPELINE, {"ingest-1"})
    assert len(events) == 1 and status["configured"] and status["unreadable_lines"] == 0
    monkeypatch.setenv(
        "AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({"type": "http", "url": "http://marquez"})
    )
    events, status = lineage_graph.read_events(PIPELINE, {"ingest-1"})
    assert events == [] and status == {**status, "configured": False, "transport": "http"}


def test_lineage_svg_escapes_text_and_marks_unconfirmed_edges():
    graph = _graph()
    graph.add_node("source:x", "source", "<b>x</b>", "sql", location="x")
    svg = lineage_graph.render_svg(graph.to_dict({"configured": True, "events_matched": 0}))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "&lt;b&gt;x&lt;/b&gt;" in svg and "<b>" not in svg
    assert svg.count('stroke-dasharray="5 4"') == 2  # nothing confirmed by OpenLineage
    assert "http" not in svg and "<script" not in svg
