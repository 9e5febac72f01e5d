"""Webhook alerts against real HTTP servers on 127.0.0.1: signed, retried, bounded in time."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from llmops.monitoring.alerts import (
    SIGNATURE_HEADER,
    WebhookError,
    WebhookNotifier,
    WebhookRejected,
    sign,
    verify,
)

SECRET = "whsec-3f9a7c1e-never-log-me"
PATH_TOKEN = "T000/B000/XXXXPATHTOKEN"  # a Slack webhook's path is a credential too
CONN_ID = "llmops_test_webhook"


class Receiver:
    """A webhook receiver in a thread: verifies the signature, can fail the first N requests."""

    def __init__(self, fail_first: int = 0, status: int = 200, fail_status: int = 503):
        self.bodies: list[dict] = []
        self.attempts = 0
        self.signatures_ok: list[bool] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                ok = verify(body, SECRET, self.headers.get(SIGNATURE_HEADER))
                receiver.signatures_ok.append(ok)
                if self.path != f"/services/{PATH_TOKEN}":
                    code = 404
                elif not ok:
                    code = 401
                elif receiver.attempts <= fail_first:
                    code = fail_status
                else:
                    code = status
                    receiver.bodies.append(json.loads(body))
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _connection(monkeypatch, port: int, password: str | None = SECRET) -> None:
    conn = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": port,
        "schema": "http",
        "extra": {"endpoint": f"/services/{PATH_TOKEN}"},
    }
    if password is not None:
        conn["password"] = password
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _no_secrets(text: str) -> None:
    assert SECRET not in text and PATH_TOKEN not in text and "XXXXPATHTOKEN" not in text


FIELDS = {
    "event": "llmops.monitoring.breach",
    "pipeline": "support_bot",
    "model": "support_bot",
    "version": "3",
    "breaches": [{"metric": "text.body.vocabulary_psi", "value": 1.7, "threshold": 0.2}],
    "metrics": {"text.body.vocabulary_psi": 1.7, "rows.current": 400},
    "report": "/lake/reports/support_bot/run/audit_report.html",
}


def test_signed_alert_has_slack_text_and_structured_fields(monkeypatch, caplog):
    """Expect one signed POST carrying `text` plus the structured fields, and the alert logged."""
    caplog.set_level(logging.INFO)
    with Receiver() as receiver:
        _connection(monkeypatch, receiver.port)
        notifier = WebhookNotifier(CONN_ID, text="[llmops] support_bot: drift", fields=FIELDS, backoff=0.01)
        delivery = notifier.send(notifier.build_payload())
    assert delivery["status"] == 200 and delivery["attempts"] == 1
    assert receiver.signatures_ok == [True]
    (body,) = receiver.bodies
    assert body["text"] == "[llmops] support_bot: drift"
    assert {k: body[k] for k in FIELDS} == FIELDS
    assert body["sent_at"] and body["source"] == "llmops"
    assert "ALERT [llmops] support_bot: drift" in caplog.text
    assert f"http://127.0.0.1:{receiver.port}" in caplog.text
    _no_secrets(caplog.text)


def test_signature_is_hmac_sha256_of_the_raw_body():
    body = b'{"text":"x"}'
    assert sign(body, "k") == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert verify(body, "k", sign(body, "k"))
    assert not verify(body + b" ", "k", sign(body, "k"))
    assert not verify(body, "other", sign(body, "k")) and not verify(body, "k", None)


def test_unsigned_when_the_connection_has_no_password(monkeypatch):
    """Expect no signature header without a secret (the receiver here then refuses: 401, not retried)."""
    with Receiver() as receiver:
        _connection(monkeypatch, receiver.port, password=None)
        with pytest.raises(WebhookRejected, match="HTTP 401"):
            WebhookNotifier(CONN_ID, text="t", backoff=0.01).send({"text": "t"})
    assert receiver.attempts == 1 and receiver.signatures_ok == [False]


def test_retries_a_failing_receiver_until_it_answers(monkeypatch, caplog):
    """Expect two 503s to be retried with backoff and the third attempt to deliver."""
    caplog.set_level(logging.INFO)
    with Receiver(fail_first=2) as receiver:
        _connection(monkeypatch, receiver.port)
        started = time.monotonic()
        delivery = WebhookNotifier(CONN_ID, text="t", retries=3, backoff=0.05).send({"text": "t"})
        elapsed = time.monotonic() - started
    assert delivery["attempts"] == 3 and receiver.attempts == 3 and len(receiver.bodies) == 1
    assert all(receiver.signatures_ok)
    assert elapsed >= 0.05 + 0.1  # waited 0.05 then 0.1 s between attempts
    assert caplog.text.count("HTTP 503") == 2
    _no_secrets(caplog.text)


def test_gives_up_after_its_retries_with_a_clear_error(monkeypatch):
    with Receiver(fail_first=10) as receiver:
        _connection(monkeypatch, receiver.port)
        with pytest.raises(WebhookError, match=r"failed after 3 attempt\(s\).*HTTP 503") as info:
            WebhookNotifier(CONN_ID, text="t", retries=2, backoff=0.01).send({"text": "t"})
    assert receiver.attempts == 3
    assert not isinstance(info.value, WebhookRejected)  # transient: the task's own retries may still help


def test_receiver_down_fails_fast_and_names_no_secret(monkeypatch, caplog):
    """Expect a refused connection to fail within seconds, naming the connection and origin only."""
    port = _free_port()  # nothing listens here any more
    _connection(monkeypatch, port)
    started = time.monotonic()
    with pytest.raises(WebhookError) as info:
        WebhookNotifier(CONN_ID, text="t", retries=2, backoff=0.05).send({"text": "t"})
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert f"webhook '{CONN_ID}' (http://127.0.0.1:{port})" in message
    assert "ConnectionError" in message and "3 attempt(s)" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained URL text
    _no_secrets(message)
    _no_secrets(caplog.text)


def test_receiver_that_never_answers_times_out(monkeypatch):
    """Expect a receiver that accepts but never answers to cost timeout x attempts, not a hung task."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nobody ever reads or answers
        _connection(monkeypatch, silent.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(WebhookError, match=r"2 attempt\(s\).*(ReadTimeout|Timeout)"):
            WebhookNotifier(CONN_ID, text="t", timeout=0.5, retries=1, backoff=0.01).send({"text": "t"})
        assert time.monotonic() - started < 5


def test_a_deadline_stops_retrying(monkeypatch):
    with Receiver(fail_first=10) as receiver:
        _connection(monkeypatch, receiver.port)
        with pytest.raises(WebhookError, match=r"1 attempt\(s\)"):
            WebhookNotifier(CONN_ID, text="t", retries=5, backoff=2, deadline=1).send({"text": "t"})
    assert receiver.attempts == 1


def test_works_as_a_failure_callback(monkeypatch):
    """Expect the notifier called with a task-failure context to post the run's ids and the error type,
    never the error's message (it can quote data)."""
    from airflow.sdk import DAG

    with Receiver() as receiver:
        _connection(monkeypatch, receiver.port)
        context = {
            "dag": DAG("support_bot__monitor", schedule=None),
            "ti": SimpleNamespace(dag_id="support_bot__monitor", task_id="measure", run_id="manual__1"),
            "dag_run": SimpleNamespace(run_id="manual__1"),
            "exception": ValueError("customer jane@example.com broke it"),
        }
        WebhookNotifier(CONN_ID, fields={"pipeline": "support_bot"}, backoff=0.01)(context)
    (body,) = receiver.bodies
    assert body["text"] == "[llmops] support_bot__monitor.measure failed (ValueError) in run manual__1"
    assert body["dag_id"] == "support_bot__monitor" and body["task_id"] == "measure"
    assert body["run_id"] == "manual__1" and body["error_type"] == "ValueError"
    assert body["pipeline"] == "support_bot"
    assert "jane@example.com" not in json.dumps(body)


def test_text_is_templated_like_any_notifier_field(monkeypatch):
    with Receiver() as receiver:
        _connection(monkeypatch, receiver.port)
        context = {"dag_run": SimpleNamespace(run_id="manual__7"), "run_id": "manual__7"}
        WebhookNotifier(CONN_ID, text="run {{ run_id }} needs a look", backoff=0.01)(context)
    assert receiver.bodies[0]["text"] == "run manual__7 needs a look"


def test_missing_connection_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", raising=False)
    from llmops.connections import ConnectionConfigError

    with pytest.raises(ConnectionConfigError, match=CONN_ID):
        WebhookNotifier(CONN_ID, text="t").send({"text": "t"})
