"""Error text at the task boundary: this package's messages are kept, a third-party exception is
reduced to its type and codes (its message may quote the data that broke it), and `fail_fast`
lets no third-party text through in the exception chain a traceback would print."""

from __future__ import annotations

import traceback

import pytest

from llmops.errors import ExternalError, PermanentError, error_type, safe_error_text
from llmops.ingest.common import SourceError
from llmops.orchestration.dag_support import fail_fast

EMAIL = "jane.doe@example.com"


class Drift(PermanentError):
    """A permanent error defined outside the package (a plugin's): PermanentError makes it own."""


def test_own_messages_are_kept_third_party_ones_withheld() -> None:
    """Expect SourceError's text kept, a ValueError quoting an e-mail reduced to its type, codes
    kept (errno), and the reduced error remembering its original type for the ledger."""
    assert safe_error_text(SourceError("source 'db': 3 rows")) == "source 'db': 3 rows"
    reduced = safe_error_text(ValueError(f"invalid literal: '{EMAIL}'"))
    assert reduced.startswith("ValueError: message withheld") and EMAIL not in reduced
    assert "(code 111)" in safe_error_text(ConnectionRefusedError(111, f"refused {EMAIL}"))
    assert error_type(ExternalError.of(KeyError(EMAIL))) == "KeyError"
    assert safe_error_text("Task received SIGTERM") == "Task received SIGTERM"


def test_fail_fast_reduces_third_party_errors_and_keeps_them_retryable() -> None:
    """Expect a third-party error to leave as ExternalError (not an immediate failure) with no
    trace of its message in the printed traceback."""
    with pytest.raises(ExternalError) as info, fail_fast():
        raise ValueError(f"invalid input syntax for type integer: '{EMAIL}'")
    assert EMAIL not in "".join(traceback.format_exception(info.value))


def test_fail_fast_cuts_third_party_causes_out_of_own_errors() -> None:
    """Expect an own error raised from a third-party one to keep its message but lose the cause
    (a traceback prints every link), for retried and permanent errors alike."""
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(SourceError) as retried, fail_fast():
        try:
            raise ValueError(EMAIL)
        except ValueError as exc:
            raise SourceError("source 'db': row 3 unreadable") from exc
    assert EMAIL not in "".join(traceback.format_exception(retried.value))
    assert str(retried.value) == "source 'db': row 3 unreadable"

    with pytest.raises(AirflowFailException) as failed, fail_fast():
        try:
            raise ValueError(EMAIL)
        except ValueError:
            raise Drift("column body missing")  # noqa: B904 - the implicit context is the point
    assert EMAIL not in "".join(traceback.format_exception(failed.value))
    assert "column body missing" in str(failed.value)


def test_airflow_signals_pass_untouched() -> None:
    """Expect a skip raised inside fail_fast to reach Airflow as a skip."""
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="nothing new"), fail_fast():
        raise AirflowSkipException("nothing new")


def test_a_password_in_a_url_never_reaches_the_ledger(monkeypatch) -> None:
    """Expect the registry's own 'did not answer' error, which names the tracking URI, to lose the
    URI's password on its way to the ledger (and any own message quoting a URL to do the same)."""
    from servers import free_port

    from llmops.registry import mlflow_registry

    port = free_port()  # a loopback port nothing listens on
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://svc-user:S3cret-Pa55@127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(mlflow_registry.RegistryUnavailable) as raised:
        mlflow_registry.alias_version("support_bot", "champion")
    text = safe_error_text(raised.value)
    assert "S3cret-Pa55" not in text and f"http://svc-user:***@127.0.0.1:{port}" in text
    quoted = SourceError("source 'db': postgresql://etl:hunter2@db.internal/x refused")
    assert safe_error_text(quoted) == "source 'db': postgresql://etl:***@db.internal/x refused"
