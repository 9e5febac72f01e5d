"""No credential and no row value reaches a ledger record, whichever step records the failure.

A password is planted in a connection URL (an unreachable PostgreSQL source, an MLflow tracking
URI) and an e-mail in the exception a failing row raises; the failure is recorded the way the
DAG's failure callback records it, then every ledger row's payload is scanned. Each case first
asserts that the raw text did hold the planted values, so a pass means the sanitiser removed them.
"""

from __future__ import annotations

import json
import uuid

import pytest
from servers import free_port
from small_pipeline import INLINE, inline_kind, inline_source, install, pipeline_spec

PIPELINE = "clean_payloads"
PASSWORD = "S3cretPw"
EMAIL = "jane.planted@example.com"
SOURCE_URL = f"postgresql://u:{PASSWORD}@127.0.0.1:1/x"


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    with inline_kind():
        rows = [{"ticket_id": "T-1", "body": "fine"}, {"ticket_id": "T-2", "body": f"mail {EMAIL}"}]
        install(tmp_path, pipeline_spec(PIPELINE, [inline_source("tickets", rows)]), monkeypatch.setenv)
        yield tmp_path


def _ledger_text() -> str:
    from llmops.ledger import get_ledger

    return json.dumps([r.payload for r in get_ledger().records()], default=str)


def _record_failure(error: BaseException, task_id: str) -> None:
    from llmops.orchestration.failures import record_task_failure

    record_task_failure(
        PIPELINE,
        run_id=f"manual__{uuid.uuid4().hex[:6]}",
        dag_id=f"{PIPELINE}_ingest",
        task_id=task_id,
        map_index=0,
        try_number=1,
        error=error,
    )


def test_a_failing_rows_exception_leaves_neither_the_value_nor_the_password(pipeline, monkeypatch):
    """The row's converter raises quoting the row and the source URL; the task fails; the
    task.failed record holds the exception's type only."""
    from llmops.orchestration.dag_support import fail_fast
    from llmops.orchestration.ingest import extract

    raised: list[BaseException] = []

    def extract_failing(self, source, item, key, schema):
        bad = next(r for r in source.rows if "@" in (r["body"] or ""))
        error = ValueError(f"row {bad['ticket_id']}: cannot convert {bad['body']!r} read from {SOURCE_URL}")
        raised.append(error)
        raise error

    monkeypatch.setattr(type(INLINE.behaviour), "extract", extract_failing)
    run_id = f"manual__{uuid.uuid4().hex[:6]}"
    (item,) = extract.plan(PIPELINE, run_id)
    with pytest.raises(Exception) as info, fail_fast():
        extract.extract_partition(PIPELINE, item, run_id)
    assert EMAIL in str(raised[0]) and PASSWORD in str(raised[0])  # the raw text held both
    _record_failure(info.value, "extract")
    text = _ledger_text()
    assert "task.failed" in json.dumps([r.event_type for r in _records()])
    assert EMAIL not in text and PASSWORD not in text


def _records():
    from llmops.ledger import get_ledger

    return get_ledger().records()


def test_an_unreachable_source_url_loses_its_password(pipeline):
    """An own error naming the source's URL (as a connection error message would) keeps its words,
    not the password."""
    from llmops.ingest.common import SourceError

    error = SourceError(f"source 'tickets': cannot connect to {SOURCE_URL} (OperationalError)")
    assert PASSWORD in str(error)
    _record_failure(error, "plan")
    text = _ledger_text()
    assert PASSWORD not in text and "postgresql://u:***@127.0.0.1:1/x" in text


def test_an_unreachable_tracking_uri_loses_its_password(pipeline, monkeypatch):
    """MLflow does not answer at a tracking URI with a password; the registry's error names the
    URI; the recorded failure does not hold the password."""
    from llmops.registry import mlflow_registry

    port = free_port()  # a loopback port nothing listens on
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://u:{PASSWORD}@127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(mlflow_registry.RegistryUnavailable) as info:
        mlflow_registry.alias_version(PIPELINE, "champion")
    assert PASSWORD in mlflow_registry.configure()  # the URI the client was given held it
    assert f"http://u:***@127.0.0.1:{port}" in str(info.value)  # reduced where it was raised
    _record_failure(info.value, "promote")
    assert PASSWORD not in _ledger_text()


def test_the_ledger_itself_strips_url_passwords_from_any_payload(pipeline):
    """The last filter: a step that put a connection URL straight into a payload (a tracking URI,
    a study's storage URL) still leaves no password in the chained record."""
    from llmops.ledger import get_ledger

    payload = {
        "mlflow": {"tracking_uri": SOURCE_URL},
        "trials": [{"error": f"cannot reach {SOURCE_URL}"}],
        SOURCE_URL: "as a key",
    }
    assert PASSWORD in json.dumps(payload)
    record = get_ledger().append(pipeline=PIPELINE, event_type="x.recorded", subject="s", payload=payload)
    assert PASSWORD not in json.dumps(record.payload) and PASSWORD not in _ledger_text()
    assert record.payload["mlflow"]["tracking_uri"] == "postgresql://u:***@127.0.0.1:1/x"
    assert get_ledger().verify(full=True).ok


def test_a_gx_exception_message_is_reduced_to_its_type() -> None:
    """An expectation that raised: GX's message can quote the value that broke it."""
    from llmops.quality.expectations import _exception_type

    trace = f'Traceback (most recent call last):\n  File "x"\nValueError: cannot parse {EMAIL!r}'
    assert _exception_type({"exception_info": {"exception_traceback": trace}}) == "ValueError"
    assert _exception_type({"exception_info": {"exception_traceback": f"{EMAIL} broke"}}) == "error"
    assert _exception_type({}) == "error"
