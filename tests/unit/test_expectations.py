"""Great Expectations validation: severity, quarantine reasons, and results that never carry raw PII."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from llmops.orchestration.ingest.validate import pii_masker
from llmops.quality.expectations import SuiteNotFound, load_suite, validate_dataframe

GX_DIR = Path(__file__).resolve().parents[2] / "great_expectations"


def _frame(n: int = 120) -> pd.DataFrame:
    rows = [
        {
            "ticket_id": f"T-{i}",
            "created_at": "2026-09-01T08:00:00",
            "customer_email": f"user{i}@example.com",
            "category": "billing",
            "subject": "Refund",
            "body": "I would like a refund for my order please.",
            "resolution": "We refunded it.",
        }
        for i in range(n)
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def suite() -> dict:
    return load_suite(GX_DIR, "support_tickets")


def test_clean_data_passes(suite):
    """Expect a clean frame to meet every expectation and quarantine nothing."""
    outcome = validate_dataframe(_frame(), suite, pii_masker())
    assert outcome.success and not outcome.row_failures
    assert outcome.statistics["unsuccessful_expectations"] == 0


def test_row_failures_are_quarantined_with_reasons(suite):
    """Expect each failing row to be quarantined with the expectations it failed, even under `mostly`."""
    df = _frame()
    df.loc[3, "body"] = None
    df.loc[7, "category"] = "billling"
    df.loc[9, "body"] = "short"
    outcome = validate_dataframe(df, suite, pii_masker())
    assert outcome.success  # within the suite's `mostly` tolerances: warnings, not blocking
    assert sorted(outcome.row_failures) == [3, 7, 9]
    assert "expect_column_values_to_not_be_null(body)" in outcome.row_failures[3]
    assert outcome.row_failures[7] == ["expect_column_values_to_be_in_set(category)"]
    assert any("value_lengths" in r for r in outcome.row_failures[9])


def test_blocking_failure_says_what_and_by_how_much(suite):
    """Expect too many null bodies to fail a blocking expectation with counts in the message."""
    df = _frame()
    df.loc[:19, "body"] = None
    outcome = validate_dataframe(df, suite, pii_masker())
    assert not outcome.success
    message = next(m for m in outcome.blocking_failures if "not_be_null on column 'body'" in m)
    assert "20 of 120 rows unexpected (16.7%, allowed 5.0%)" in message


def test_results_never_contain_raw_failing_values(suite):
    """Expect stored results to hold the shapes of failing values only: no content, not even personal
    data a detector would miss (a name no list knows)."""
    df = _frame()
    df.loc[5, "category"] = "contact anna.schmidt@example.org please"
    df.loc[6, "customer_email"] = "not-an-email +49 30 1234567 Oluwaseun"
    outcome = validate_dataframe(df, suite, pii_masker())
    stored = json.dumps(outcome.to_dict())
    for raw in ("anna", "schmidt", "example", "1234567", "Oluwaseun", "contact"):
        assert raw not in stored
    assert "aaaaaaa aaaa.aaaaaaa@aaaaaaa.aaa aaaaaa" in stored


def test_missing_suite_and_bad_severity(tmp_path):
    with pytest.raises(SuiteNotFound, match="expectation suite 'nope' not found"):
        load_suite(GX_DIR, "nope")
    (tmp_path / "expectations").mkdir()
    (tmp_path / "expectations" / "s.json").write_text(
        json.dumps(
            {
                "name": "s",
                "expectations": [
                    {
                        "type": "expect_column_to_exist",
                        "kwargs": {"column": "a"},
                        "meta": {"severity": "fatal"},
                    }
                ],
            }
        )
    )
    with pytest.raises(ValueError, match=r"expectations\[0\].meta.severity must be 'blocking' or 'warning'"):
        load_suite(tmp_path, "s")
