"""Erasure requests carry the subject sealed: Airflow stores a run's configuration in its
database, so the trigger form takes only a sealed value, which only the lake's keys open."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from llmops.governance.sealed import PATTERN, SealedSubjectError, seal, unseal

SUBJECT = "Marta.Vandersloot@Example.com"


def test_a_sealed_identifier_opens_to_the_identifier_and_shows_nothing_of_it() -> None:
    first, second = seal(SUBJECT), seal(SUBJECT)
    assert unseal(first) == unseal(second) == SUBJECT
    assert first != second, "sealing twice must not tell two requests for one person apart"
    assert re.match(PATTERN, first) and len(first) < 4096
    assert "vandersloot" not in first.lower() and "marta" not in first.lower()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (SUBJECT, "subject_id must be sealed"),
        ("sealed:v1:AAAA", "not a sealed identifier"),
        ("sealed:v1:" + "A" * 60, "not a sealed identifier"),
    ],
    ids=["plain", "cut-short", "garbage"],
)
def test_a_value_that_is_not_sealed_is_refused_naming_the_field(value: str, message: str) -> None:
    with pytest.raises(SealedSubjectError, match=message):
        unseal(value)


def test_an_altered_sealed_value_is_refused() -> None:
    import base64
    import json

    token = seal(SUBJECT)
    packed = token.removeprefix("sealed:v1:")
    envelope = json.loads(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
    blob = bytearray(base64.b64decode(envelope["data"]))
    blob[-1] ^= 1
    envelope["data"] = base64.b64encode(bytes(blob)).decode()
    altered = "sealed:v1:" + base64.urlsafe_b64encode(json.dumps(envelope).encode()).decode().rstrip("=")
    with pytest.raises(SealedSubjectError, match="cannot be opened with this deployment's keys"):
        unseal(altered)


def test_the_trigger_form_refuses_a_plain_identifier() -> None:
    """Expect the erasure DAG's Param to reject a plain identifier before any run exists."""
    from airflow.sdk.definitions.param import ParamValidationError

    from llmops.orchestration.governance_dags import erasure_dag

    dag = erasure_dag()
    with pytest.raises(ParamValidationError):
        _validated(dag, SUBJECT)
    assert _validated(dag, seal(SUBJECT))["subject_id"].startswith("sealed:v1:")


def _validated(dag, subject_id: str) -> dict:
    import copy

    params = copy.deepcopy(dag.params)
    for key, value in {"subject_id": subject_id, "request_id": "DSR-1", "requested_by": "dpo"}.items():
        params[key] = value
    return params.validate()


def test_the_cli_reads_the_identifier_from_stdin_and_prints_it_sealed() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llmops.cli", "seal-subject"],
        input=SUBJECT + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert unseal(done.stdout.strip()) == SUBJECT
    assert SUBJECT not in done.stdout + done.stderr
