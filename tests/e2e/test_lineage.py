"""OpenLineage events of the demo runs: valid, PII-free, with FAIL events, and one connected graph.

Reads the JSON Lines file the provider's file transport appended to during the session's demo
runs (ingest, finetune, and the weak finetune run whose gates fail).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STEPS = {
    "support_bot__ingest.extract": "extract",
    "support_bot__ingest.commit": "commit",
    "support_bot__ingest.validate": "validate",
    "support_bot__ingest.curate": "curate",
    "support_bot__finetune.prepare_data": "prepare_training_data",
    "support_bot__finetune.collect_train": "train",
    "support_bot__finetune.register": "register",
}
FUNCTION_DEF = re.compile(r"(^|\n)[ \t]*(async[ \t]+)?def[ \t]+\w+\(")


def _lineage_file() -> Path:
    return Path(json.loads(os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"])["log_file_path"])


@pytest.fixture(scope="module")
def events(demo) -> list[dict[str, Any]]:
    """Every event of the file; DAG-level events are sent from a process pool, so a last line still
    being written is waited for (briefly) rather than skipped."""
    path = _lineage_file()
    deadline = time.monotonic() + 15
    while True:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        try:
            return [json.loads(line) for line in lines]
        except json.JSONDecodeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _airflow_run_id(event: dict[str, Any]) -> str | None:
    facets = event["run"].get("facets") or {}
    return ((facets.get("airflow") or {}).get("dagRun") or {}).get("run_id") or (
        (facets.get("airflowDagRun") or {}).get("dagRun") or {}
    ).get("run_id")


def _planted_values(planted: dict) -> list[str]:
    values = [v for kind in ("email", "phone", "payment_card", "iban", "person_name") for v in planted[kind]]
    assert len(values) > 300
    return values


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_every_event_is_valid_openlineage(events):
    """Expect every event, and each llmops and audited standard facet in it, to pass the schemas."""
    from llmops.lineage.validation import event_errors

    assert len(events) > 50
    invalid = {i: errors for i, event in enumerate(events) if (errors := event_errors(event))}
    assert invalid == {}
    assert {e["eventType"] for e in events} >= {"START", "RUNNING", "COMPLETE", "FAIL"}


def test_each_step_adds_its_datasets_to_its_own_task_run(events, demo):
    """Expect one RUNNING event per step and task run, sharing the runId of that task's START and
    COMPLETE events (so viewers merge them), in both successful DAG runs."""
    by_run: dict[str, set[str]] = defaultdict(set)
    for event in events:
        by_run[event["run"]["runId"]].add(event["eventType"])
    ours = [e for e in events if "llmops" in (e["run"].get("facets") or {})]
    seen = defaultdict(set)
    for event in ours:
        assert event["eventType"] == "RUNNING"
        assert {"START", "COMPLETE"} <= by_run[event["run"]["runId"]], event["job"]["name"]
        facet = event["run"]["facets"]["llmops"]
        assert STEPS[event["job"]["name"]] == facet["step"]
        assert facet["airflow"]["runId"] == _airflow_run_id(event)
        seen[facet["airflow"]["runId"]].add(facet["step"])
    assert seen[demo["ingest"].run_id] == {"extract", "commit", "validate", "curate"}
    assert seen[demo["finetune"].run_id] == {"prepare_training_data", "train", "register"}
    assert seen[demo["weak"].run_id] == {
        "prepare_training_data",
        "train",
    }  # its gates failed: nothing registered


def test_failed_gate_task_has_fail_events(events, demo):
    """Expect the weak run's check_gates to end in a FAIL event naming the gate failure, and its
    DAG run too."""
    weak = demo["weak"].run_id
    fails = [
        e
        for e in events
        if e["eventType"] == "FAIL"
        and e["job"]["name"] == "support_bot__finetune.check_gates"
        and _airflow_run_id(e) == weak
    ]
    assert len(fails) == 1
    assert "GateFailed" in fails[0]["run"]["facets"]["errorMessage"]["message"]
    starts = [
        e for e in events if e["eventType"] == "START" and e["run"]["runId"] == fails[0]["run"]["runId"]
    ]
    assert len(starts) == 1
    assert not [
        e for e in events if e["eventType"] == "FAIL" and _airflow_run_id(e) == demo["finetune"].run_id
    ]


def test_no_event_holds_pii_or_python_source(events, demo):
    """Expect none of the planted PII values (in any case), no event of the erasure DAG (its run conf
    names a data subject), no source-code facet and no task function's source."""
    text = "\n".join(json.dumps(e, ensure_ascii=False) for e in events).lower()
    assert [v for v in _planted_values(demo["planted"]) if v.lower() in text] == []
    assert not [e for e in events if e["job"]["name"].startswith("data_erasure_request")]
    assert demo["token"].lower() not in text
    assert not [e for e in events if "sourceCode" in (e["job"].get("facets") or {})]
    strings = [s for e in events for s in _strings(e)]
    assert not [s for s in strings if FUNCTION_DEF.search(s)]


def test_lineage_graph_joins_every_source_to_the_registered_model(events, demo):
    """Expect the dataset edges of all events (input -> output) to lead from each source the ingest
    read (a SQL table and a REST endpoint) to the registered model version."""
    from llmops.ledger import get_ledger

    assert demo["finetune"].state == "success", "the demo's finetune run registered no model version"
    edges: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for event in events:
        for i in event.get("inputs") or []:
            for o in event.get("outputs") or []:
                edges[(i["namespace"], i["name"])].add((o["namespace"], o["name"]))
    commits = [
        e for e in events if e["job"]["name"] == "support_bot__ingest.commit" and e["eventType"] == "RUNNING"
    ]
    sources = {(d["namespace"], d["name"]) for e in commits for d in e["inputs"]}
    assert {ns.split("://")[0] for ns, _ in sources} == {"sqlite", "http"}
    [registered] = get_ledger().records(
        pipeline="support_bot", event_type="model.registered", run_id=demo["finetune"].run_id
    )
    models = {
        (d["namespace"], d["name"])
        for e in events
        if e["job"]["name"] == "support_bot__finetune.register"
        for d in e["outputs"]
    }
    assert len(models) == 1
    [model] = models
    assert (
        model[0].startswith("mlflow://") and model[1] == f"models/support_bot/{registered.payload['version']}"
    )
    for source in sources:
        seen, todo = {source}, [source]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert model in seen, source
    # The run that trained it is the one MLflow registered.
    [register] = [
        e
        for e in events
        if e["job"]["name"] == "support_bot__finetune.register" and e["eventType"] == "RUNNING"
    ]
    assert register["inputs"][0]["name"] == f"runs/{registered.payload['mlflow_run_id']}"
    assert register["run"]["facets"]["llmops"]["model"]["version"] == str(registered.payload["version"])


def test_step_facets_carry_quality_pii_and_masking(events, demo):
    """Expect contract and suite assertions on the raw inputs of validate, and the PII facet and
    masking column lineage on the curated output."""
    [validate] = [
        e
        for e in events
        if e["job"]["name"] == "support_bot__ingest.validate" and e["eventType"] == "RUNNING"
    ]
    for dataset in validate["inputs"]:
        assertions = dataset["inputFacets"]["dataQualityAssertions"]["assertions"]
        assert any(a["assertion"].startswith("contract.") for a in assertions)
        assert any(a["assertion"].startswith("expect_") for a in assertions)
    [curate] = [
        e for e in events if e["job"]["name"] == "support_bot__ingest.curate" and e["eventType"] == "RUNNING"
    ]
    curated = curate["outputs"][0]["facets"]
    pii = curated["llmops_pii"]
    assert {c["column"]: c["action"] for c in pii["columns"]} == {
        "customer_email": "pseudonymise",
        "customer_name": "drop",
        "customer_phone": "drop",
    }
    assert pii["totalReplacements"] > 0 and pii["residual"] == {}
    fields = curated["columnLineage"]["fields"]
    assert fields["customer_email"]["transformationType"] == "MASKED"
    assert fields["body"]["inputFields"][0]["transformations"][0]["masking"] is True
    assert "customer_name" not in fields
    assert {f["name"] for f in curated["schema"]["fields"]} >= {"ticket_id", "customer_email", "body"}
