"""OpenLineage events of each llmops step, built from small inputs and held to the OpenLineage schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest

RAW_COLUMNS = [
    "ticket_id",
    "created_at",
    "customer_email",
    "customer_name",
    "customer_phone",
    "category",
    "subject",
    "body",
    "resolution",
]
PLANTED = ["jane.roe@example.com", "+1 415 555 0199", "4111 1111 1111 1111", "Jane Roe"]
RUN_ID = "01a220d7-0096-74aa-9417-2a3bee921057"
AIRFLOW = {
    "dagId": "support_bot__ingest",
    "taskId": "t",
    "runId": "manual__2026-01-01T00:00:00+00:00",
    "tryNumber": 1,
}


@pytest.fixture(scope="module")
def spec():
    from llmops.specs import load_pipeline

    return load_pipeline("support_bot")


def _manifest(snapshot_id: str, columns: list[tuple[str, str]], rows: int = 10) -> dict[str, Any]:
    return {
        "snapshot_id": snapshot_id,
        "schema": [{"name": n, "type": t} for n, t in columns],
        "row_count": rows,
        "files": [{"name": "part-00000.parquet", "rows": rows, "sha256": "0" * 64}],
    }


@pytest.fixture
def lake(tmp_path):
    root = tmp_path / "lake"
    ids = {
        "helpdesk_db": "a" * 20,
        "webform_api": "b" * 20,
        "validated": "c" * 20,
        "quarantine": "d" * 20,
        "curated": "e" * 20,
        "sft": "f" * 20,
    }
    raw_cols = [(c, "string") for c in RAW_COLUMNS]
    validated_cols = [(c, "timestamp[ns, tz=UTC]" if c == "created_at" else "string") for c in RAW_COLUMNS]
    curated_cols = [c for c in validated_cols if c[0] not in ("customer_name", "customer_phone")]
    return {
        "helpdesk_db": (
            f"{root}/raw/support_bot/helpdesk_db/{ids['helpdesk_db']}",
            {
                **_manifest(ids["helpdesk_db"], raw_cols, 300),
                "source": {"kind": "sql", "table": "tickets", "query": "SELECT ticket_id FROM tickets"},
            },
        ),
        "webform_api": (
            f"{root}/raw/support_bot/webform_api/{ids['webform_api']}",
            {
                **_manifest(ids["webform_api"], raw_cols, 151),
                "source": {"kind": "rest", "url": "http://127.0.0.1:8765/v1/tickets?per_page=50"},
            },
        ),
        "validated": (
            f"{root}/raw/support_bot/validated/{ids['validated']}",
            _manifest(ids["validated"], [*validated_cols, ("_source", "string")], 443),
        ),
        "quarantine": (
            f"{root}/quarantine/support_bot/rows/{ids['quarantine']}",
            _manifest(
                ids["quarantine"], [*raw_cols, ("_source", "string"), ("_quarantine_reason", "string")], 7
            ),
        ),
        "curated": (
            f"{root}/curated/support_bot/records/{ids['curated']}",
            _manifest(ids["curated"], [*curated_cols, ("_source", "string")], 443),
        ),
        "sft": (
            f"{root}/sft/support_bot/prompt_completion/{ids['sft']}",
            _manifest(
                ids["sft"],
                [("key", "string"), ("prompt", "string"), ("completion", "string"), ("split", "string")],
            ),
        ),
        "ids": ids,
        "root": root,
    }


def _validate_payload(lake) -> dict[str, Any]:
    ids = lake["ids"]
    contract = {
        "source": "helpdesk_db",
        "ok": True,
        "rows": 300,
        "expected_columns": RAW_COLUMNS,
        "missing_columns": [],
        "unexpected_columns": [],
        "rule_counts": {"pattern": {"ticket_id": 2}, "type": {"created_at": 1}},
        "freshness": None,
        "samples_masked": {"contract(ticket_id: does not match pattern)": ["[EMAIL]"]},
    }
    web = {**contract, "source": "webform_api", "rows": 151, "rule_counts": {}, "samples_masked": {}}
    validation = {
        "suite": "support_tickets",
        "success": True,
        "results": [
            {
                "expectation_type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "body"},
                "severity": "blocking",
                "success": True,
                "exception": False,
                "result": {"element_count": 450, "unexpected_count": 0},
            },
            {
                "expectation_type": "expect_column_value_lengths_to_be_between",
                "kwargs": {"column": "subject", "min_value": 3, "max_value": 200, "mostly": 0.99},
                "severity": "warning",
                "success": False,
                "exception": False,
                "result": {
                    "element_count": 450,
                    "unexpected_count": 4,
                    "unexpected_samples_masked": [PLANTED[0], PLANTED[3]],
                },
            },
            {
                "expectation_type": "expect_table_row_count_to_be_between",
                "kwargs": {"min_value": 50},
                "severity": "blocking",
                "success": True,
                "exception": False,
                "result": {"observed_value": 450},
            },
        ],
    }
    return {
        "validated_snapshot_id": ids["validated"],
        "quarantine_snapshot_id": ids["quarantine"],
        "contracts": [contract, web],
        "validation": validation,
    }


def _curate_payload(lake) -> dict[str, Any]:
    return {
        "validated_snapshot_id": lake["ids"]["validated"],
        "curated_snapshot_id": lake["ids"]["curated"],
        "privacy": {
            "rows_scanned": 443,
            "counts_by_type_action": {
                "email": {"pseudonymise": 443, "mask": 12},
                "person_name": {"mask": 30},
            },
            "counts_by_column": {"customer_email": 443, "body": 40, "subject": 2},
            "column_actions": {
                "customer_email": "pseudonymise",
                "customer_name": "drop",
                "customer_phone": "drop",
            },
            "column_types": {"customer_email": "email"},
            "columns_dropped": ["customer_name", "customer_phone"],
            "allowed_columns": {},
            "free_text_columns": ["subject", "body", "resolution"],
            "free_text_actions": {"email": "mask", "person_name": "mask", "phone": "mask"},
            "total_replacements": 485,
        },
        "residual_pii": {},
    }


TRAINED = {
    "mlflow_run_id": "0123456789abcdef0123456789abcdef",
    "adapter_dir": "/srv/lake/jobs/support_bot/run/train/output/adapter",
    "base_model_dir": "/srv/models/tiny-support-base",
    "sft_snapshot_id": "f" * 20,
    "curated_snapshot_id": "e" * 20,
}
REGISTERED = {
    "model_name": "support_bot",
    "version": "1",
    "model_uri": "models:/support_bot/1",
    "alias": "challenger",
}
TRACKING = "http://user:secret@mlflow.internal:5000"


def _steps(spec, lake) -> dict[str, Any]:
    from llmops.lineage import steps

    sources = {s.name: s for s in spec.sources}
    sqlite_url = "sqlite:////srv/demo/tickets.db"
    raw = [(sources[n], *lake[n]) for n in ("helpdesk_db", "webform_api")]
    return {
        "extract": steps.build_extract(
            spec,
            sources["helpdesk_db"],
            {"query": "SELECT ticket_id FROM tickets", "dialect": "sqlite"},
            AIRFLOW,
            sqlite_url,
        ),
        "commit": steps.build_commit(spec, raw, AIRFLOW, urls={"helpdesk_db": sqlite_url}),
        "validate": steps.build_validate(
            spec, raw, lake["validated"], lake["quarantine"], _validate_payload(lake), AIRFLOW
        ),
        "curate": steps.build_curate(
            spec, lake["validated"], lake["curated"], _curate_payload(lake), AIRFLOW
        ),
        "prepare_training_data": steps.build_prepare_training_data(
            spec, lake["curated"], lake["sft"], AIRFLOW
        ),
        "train": steps.build_train(spec, lake["sft"], TRAINED, TRACKING, AIRFLOW),
        "register": steps.build_register(spec, TRAINED, REGISTERED, TRACKING, AIRFLOW),
    }


def _event(lineage) -> dict[str, Any]:
    from openlineage.client.serde import Serde

    return json.loads(Serde.to_json(lineage.to_event(RUN_ID, "llmops", f"support_bot__x.{lineage.step}")))


def _datasets(event, side):
    return {(d["namespace"], d["name"]): d for d in event[side]}


@pytest.fixture
def events(spec, lake) -> dict[str, dict[str, Any]]:
    return {step: _event(lineage) for step, lineage in _steps(spec, lake).items()}


def test_every_step_event_is_valid_openlineage(events):
    """Expect each step's event, and each facet whose schema is held here, to pass the schemas."""
    from llmops.lineage.validation import event_errors, schema_documents

    assert len(events) == 7
    checked = set()
    for step, event in events.items():
        assert event_errors(event) == [], step
        assert event["eventType"] == "RUNNING" and event["run"]["runId"] == RUN_ID
        for side in ("inputs", "outputs"):
            for dataset in event[side]:
                for group in ("facets", "inputFacets", "outputFacets"):
                    for facet in (dataset.get(group) or {}).values():
                        checked.add(facet["_schemaURL"].partition("#")[0])
        checked.add(event["run"]["facets"]["llmops"]["_schemaURL"].partition("#")[0])
    # The custom facets and the audited standard facets were all checked against their schemas.
    assert set(schema_documents()) - {"https://openlineage.io/spec/2-0-2/OpenLineage.json"} <= checked


def test_dataset_names_follow_the_naming_conventions(events, lake):
    """Expect SQL, REST, lake, base-model and MLflow datasets named as the OpenLineage spec says."""
    from llmops.lineage.naming import http_location, lake_location, mlflow_namespace, sql_location

    commit = events["commit"]
    assert set(_datasets(commit, "inputs")) == {
        ("sqlite:///srv/demo/tickets.db", "tickets"),
        ("http://127.0.0.1:8765", "/v1/tickets"),
    }
    raw_path = lake["helpdesk_db"][0]
    assert ("file", raw_path) in _datasets(commit, "outputs")
    register = events["register"]
    assert _datasets(register, "inputs") == {
        ("mlflow://mlflow.internal:5000", f"runs/{TRAINED['mlflow_run_id']}"): register["inputs"][0]
    }
    assert list(_datasets(register, "outputs")) == [("mlflow://mlflow.internal:5000", "models/support_bot/1")]
    assert "secret" not in json.dumps(events)
    train_inputs = _datasets(events["train"], "inputs")
    assert ("file", "/srv/models/tiny-support-base") in train_inputs

    assert sql_location("postgresql+psycopg2://u:pw@db.internal:5433/support", "tickets", "helpdesk") == (
        "postgres://db.internal:5433",
        "support.helpdesk.tickets",
    )
    assert sql_location("mysql+pymysql://u:pw@maria:3306/support", "tickets") == (
        "mysql://maria:3306",
        "support.tickets",
    )
    assert http_location("https://api.example.com/v1/tickets?page=2", "/v1/tickets") == (
        "https://api.example.com",
        "/v1/tickets",
    )
    assert lake_location("s3://lake-bucket/llmops/raw/support_bot/helpdesk_db/abc/") == (
        "s3://lake-bucket",
        "llmops/raw/support_bot/helpdesk_db/abc",
    )
    assert mlflow_namespace("sqlite:////srv/mlflow.db") == "mlflow://local"


def test_every_dataset_has_schema_and_data_source_where_known(events):
    """Expect schemas from the manifests on lake datasets, and a data source on every dataset."""
    validated = events["validate"]["outputs"][0]
    fields = {f["name"]: f.get("type") for f in validated["facets"]["schema"]["fields"]}
    assert fields["created_at"].startswith("timestamp") and "_source" in fields
    for event in events.values():
        for dataset in [*event["inputs"], *event["outputs"]]:
            assert dataset["facets"]["dataSource"]["uri"].split("://")[0], dataset["name"]
    assert events["commit"]["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 300
    assert events["commit"]["outputs"][0]["facets"]["version"]["datasetVersion"] == "a" * 20


def test_validate_carries_contract_and_suite_assertions_without_values(events):
    """Expect each raw input to carry its contract's rules and the suite's results, never samples."""
    inputs = events["validate"]["inputs"]
    helpdesk = {
        (a["assertion"], a.get("column")): a
        for a in inputs[0]["inputFacets"]["dataQualityAssertions"]["assertions"]
    }
    assert helpdesk[("contract.pattern", "ticket_id")]["success"] is False
    assert helpdesk[("contract.pattern", "ticket_id")]["actual"] == "2"
    assert helpdesk[("contract.unique", "ticket_id")]["success"] is True
    assert helpdesk[("contract.min_rows", None)] == {
        "assertion": "contract.min_rows",
        "success": True,
        "severity": "error",
        "expected": "50",
        "actual": "300",
    }
    lengths = helpdesk[("expect_column_value_lengths_to_be_between", "subject")]
    assert lengths["success"] is False and lengths["severity"] == "warn" and lengths["actual"] == "4"
    assert lengths["expected"] == "min_value=3, max_value=200, mostly=0.99"
    assert helpdesk[("expect_table_row_count_to_be_between", None)]["actual"] == "450"
    web = {
        (a["assertion"], a.get("column"))
        for a in inputs[1]["inputFacets"]["dataQualityAssertions"]["assertions"]
    }
    assert ("contract.pattern", "ticket_id") in web and ("contract.unique", "ticket_id") not in web
    text = json.dumps(events["validate"])
    assert not [v for v in PLANTED if v in text] and "[EMAIL]" not in text
    assert {o["name"].split("/")[-2] for o in events["validate"]["outputs"]} == {"validated", "rows"}


def test_curate_marks_pii_and_masked_columns(events):
    """Expect the PII facet (counts, actions, no values) and masking column lineage on curated."""
    curated = events["curate"]["outputs"][0]
    pii = curated["facets"]["llmops_pii"]
    assert pii["typesFound"] == [
        {"type": "email", "count": 455, "actions": {"pseudonymise": 443, "mask": 12}},
        {"type": "person_name", "count": 30, "actions": {"mask": 30}},
    ]
    columns = {c["column"]: c for c in pii["columns"]}
    assert columns["customer_email"] == {
        "column": "customer_email",
        "action": "pseudonymise",
        "detectedType": "email",
        "replacements": 443,
    }
    assert columns["customer_name"]["action"] == "drop" and pii["residual"] == {}
    assert pii["freeText"]["columns"] == ["subject", "body", "resolution"]

    lineage = curated["facets"]["columnLineage"]["fields"]
    email = lineage["customer_email"]
    assert email["transformationType"] == "MASKED"
    [transformation] = email["inputFields"][0]["transformations"]
    assert transformation["type"] == "DIRECT" and transformation["masking"] is True
    assert lineage["body"]["inputFields"][0]["transformations"][0]["masking"] is True
    assert lineage["category"]["transformationType"] == "IDENTITY"
    assert lineage["category"]["inputFields"][0]["transformations"][0]["subtype"] == "IDENTITY"
    assert "customer_name" not in lineage and "customer_phone" not in lineage  # dropped: no output column


def test_allowed_pii_carries_its_justification(spec, lake):
    """Expect an 'allow' column policy to show up with its justification (and no replacement count)."""
    from llmops.lineage.steps import build_curate

    payload = _curate_payload(lake)
    payload["privacy"]["column_actions"]["customer_phone"] = "allow"
    payload["privacy"]["allowed_columns"] = {
        "customer_phone": "callback number the customer asked us to keep"
    }
    event = _event(build_curate(spec, lake["validated"], lake["curated"], payload, AIRFLOW))
    columns = {c["column"]: c for c in event["outputs"][0]["facets"]["llmops_pii"]["columns"]}
    assert columns["customer_phone"] == {
        "column": "customer_phone",
        "action": "allow",
        "justification": "callback number the customer asked us to keep",
    }


def test_run_facets_link_airflow_mlflow_and_model(events):
    """Expect the llmops run facet to name the Airflow run, the MLflow run and the model version."""
    facet = events["register"]["run"]["facets"]["llmops"]
    assert facet["pipeline"] == "support_bot" and facet["step"] == "register"
    assert facet["airflow"]["runId"] == AIRFLOW["runId"]
    assert facet["mlflow"] == {
        "namespace": "mlflow://mlflow.internal:5000",
        "experimentName": "support_bot",
        "runId": TRAINED["mlflow_run_id"],
    }
    assert facet["model"] == {
        "name": "support_bot",
        "version": "1",
        "uri": "models:/support_bot/1",
        "alias": "challenger",
    }
    assert events["validate"]["run"]["facets"]["llmops"]["snapshots"]["raw"] == ["a" * 20, "b" * 20]
    assert events["extract"]["job"]["facets"]["sql"]["query"] == "SELECT ticket_id FROM tickets"


def test_steps_connect_every_source_to_the_model_version(events):
    """Expect the dataset edges of the seven steps to join both sources to the registered version."""
    edges: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for event in events.values():
        for i in event["inputs"]:
            for o in event["outputs"]:
                edges.setdefault((i["namespace"], i["name"]), set()).add((o["namespace"], o["name"]))
    model = ("mlflow://mlflow.internal:5000", "models/support_bot/1")
    for source in _datasets(events["commit"], "inputs"):
        seen, todo = {source}, [source]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert model in seen, source


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda e: e.pop("job"), "'job' is a required property"),
        (lambda e: e["run"].update(runId="not-a-uuid"), "is not a 'uuid'"),
        (lambda e: e.update(eventType="DONE"), "is not one of"),
        (lambda e: _pii(e)["columns"][0].update(sample="jane@example.com"), "Additional properties"),
        (lambda e: _pii(e).update(values=["jane@example.com"]), "is not one of"),
        (
            lambda e: _pii(e)["typesFound"].append({"type": "jane@example.com", "count": 1, "actions": {}}),
            "does not match",
        ),
        (lambda e: _pii(e)["columns"][0].update(action="encrypt"), "is not one of"),
        (lambda e: e["run"]["facets"]["llmops"].pop("pipeline"), "'pipeline' is a required property"),
        (
            lambda e: e["outputs"][0]["facets"]["columnLineage"]["fields"]["body"].pop("inputFields"),
            "'inputFields'",
        ),
        (
            lambda e: e["outputs"][0]["facets"]["llmops_pii"].update(
                _schemaURL="https://llmops.example/openlineage/x.json"
            ),
            "unknown llmops",
        ),
    ],
)
def test_schemas_reject_malformed_events_and_facets(events, change, expected):
    """Expect the checks to have teeth: structure errors, and any place a value could hide, fail."""
    from llmops.lineage.validation import event_errors

    event = json.loads(json.dumps(events["curate"]))
    change(event)
    errors = event_errors(event)
    assert errors and any(expected in e for e in errors), errors


def _pii(event):
    return event["outputs"][0]["facets"]["llmops_pii"]


# ------------------------------------------------------------------------------------- emission


class _TI:
    dag_id, task_id, run_id, map_index, try_number = "d", "t", "manual__x", -1, 1


def test_emitters_never_fail_the_task(spec, monkeypatch, caplog):
    """Expect broken inputs and a failing transport to be logged, never raised; a third-party
    error by its type only (its text may quote data)."""
    from llmops.lineage import openlineage as ol

    monkeypatch.setattr(ol, "is_active", lambda: True)
    monkeypatch.setattr(ol, "_task_instance", lambda: _TI())
    ol.emit_commit(spec, [{"source": "no_such_source", "snapshot_id": "x"}])
    ol.emit_curate(spec, {})

    def broken(lineage, ti):
        raise RuntimeError("transport down")

    monkeypatch.setattr(ol, "emit", broken)
    ol.emit_register(spec, TRAINED, REGISTERED)
    warnings = [r.getMessage() for r in caplog.records if "lineage of" in r.getMessage()]
    assert len(warnings) == 3 and "RuntimeError" in warnings[-1] and "transport down" not in warnings[-1]


def test_emitters_do_nothing_when_inactive_or_outside_a_task(spec, monkeypatch):
    """Expect no event (and no lake reads) when OpenLineage is off or no task is running."""
    from llmops.lineage import openlineage as ol

    sent = []
    monkeypatch.setattr(ol, "emit", lambda lineage, ti: sent.append(lineage))
    monkeypatch.setattr(ol, "is_active", lambda: False)
    monkeypatch.setattr(ol, "_task_instance", lambda: _TI())
    ol.emit_register(spec, TRAINED, REGISTERED)
    monkeypatch.setattr(ol, "is_active", lambda: True)
    monkeypatch.setattr(ol, "_task_instance", lambda: None)
    ol.emit_register(spec, TRAINED, REGISTERED)
    assert sent == []
    monkeypatch.setattr(ol, "_task_instance", lambda: _TI())
    ol.emit_register(spec, TRAINED, REGISTERED)
    assert [s.step for s in sent] == ["register"]


def test_emit_goes_through_the_providers_api_for_the_task_run(spec, monkeypatch):
    """Expect the provider's emit_dataset_lineage, given the task instance (hence its OL run id)."""
    import airflow.providers.openlineage.api as api

    from llmops.lineage import openlineage as ol
    from llmops.lineage import steps

    calls = []
    monkeypatch.setattr(api, "emit_dataset_lineage", lambda **kwargs: calls.append(kwargs))
    ti = _TI()
    lineage = steps.build_register(spec, TRAINED, REGISTERED, TRACKING, AIRFLOW)
    ol.emit(lineage, ti)
    [call] = calls
    assert call["task_instance"] is ti
    assert call["outputs"] == lineage.outputs and "llmops" in call["additional_run_facets"]


def test_provider_is_configured_for_json_lines_without_source_code(tmp_path, monkeypatch):
    """Expect the test environment's config: file transport appending JSON Lines (creating its
    folder), the provider active, source code off for every task (locked), the erasure DAG silent."""
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter
    from airflow.providers.openlineage.utils.emission_policy import resolve_task_emission_policy
    from airflow.providers.standard.operators.python import PythonOperator
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

    transport = conf.transport()
    assert transport["type"] == "file" and transport["append"] is True
    assert transport["log_file_path"].endswith(".jsonl")
    assert conf.is_disabled() is False
    task = PythonOperator(task_id="t", python_callable=print)
    policy = resolve_task_emission_policy(operator=task, dag_id="support_bot__finetune", task_id="t")
    assert policy.emit is True and policy.include_source_code is False
    assert (
        resolve_task_emission_policy(operator=task, dag_id="data_erasure_request", task_id="erase").emit
        is False
    )

    path = tmp_path / "not" / "yet" / "events.jsonl"
    monkeypatch.setenv(
        "AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({**transport, "log_file_path": str(path)})
    )
    adapter = OpenLineageAdapter()
    for state in (RunState.START, RunState.FAIL):
        adapter.emit(
            RunEvent(
                eventType=state,
                eventTime="2026-01-01T00:00:00+00:00",
                run=Run(runId=RUN_ID),
                job=Job(namespace="llmops", name="probe"),
            )
        )
    lines = path.read_text().splitlines()
    assert [json.loads(line)["eventType"] for line in lines] == ["START", "FAIL"]


def test_chain_stages_have_their_own_datasets_and_the_merged_base_as_version(spec, lake):
    """Expect a chained final training to name the previous stage's merged model as its base, and
    prepare_training_data to output one dataset per stage with its own column lineage."""
    from llmops.lineage import steps
    from llmops.specs.schema import StageSpec

    stage = StageSpec(name="domain", method="continued_pretraining", text_columns=["subject", "body"])
    uri, manifest = lake["sft"]
    stage_manifest = {**manifest, "snapshot_id": "stage0000000000000000"}
    step = steps.build_prepare_training_data(
        spec, lake["curated"], lake["sft"], AIRFLOW, [(stage, (uri + "-stage", stage_manifest))]
    )
    event = _event(step)
    assert len(event["outputs"]) == 2
    stage_fields = event["outputs"][0]["facets"]["columnLineage"]["fields"]
    assert set(stage_fields) == {"key", "text", "split"}
    assert {f["field"] for f in stage_fields["text"]["inputFields"]} == {"subject", "body"}
    chained = {**TRAINED, "chain": [{"stage": "domain", "merged_model_sha256": "ab" * 32}]}
    train = _event(steps.build_train(spec, lake["sft"], chained, TRACKING, AIRFLOW))
    base = train["inputs"][1]  # [training dataset, base model]
    assert base["facets"]["version"]["datasetVersion"] == "merged:" + "ab" * 32
