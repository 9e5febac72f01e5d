"""Data quality metrics of a snapshot, checked against hand-computed numbers, and their trend across runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from llmops.quality.metrics import headline, metrics_trend, quality_metrics

NOW = datetime(2026, 9, 3, 12, 0, tzinfo=UTC)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ticket_id": ["T-1", "T-2", "T-2", "T-3", None],
            "body": ["hello there world", "hi", "", "a b c d", None],
            "created_at": [
                "2026-09-03T10:00:00",  # 2 h old
                "2026-09-03T14:00:00+02:00",  # 12:00 UTC: 0 h old
                "2026-09-01T12:00:00Z",  # 48 h old
                "not a date",
                None,
            ],
            "notes": [None, None, None, None, np.nan],
        }
    )


@pytest.fixture
def metrics() -> dict:
    return quality_metrics(
        _frame(),
        key="ticket_id",
        text_columns=["body"],
        timestamp_column="created_at",
        now=NOW,
        contract_valid_rows=3,
    )


def test_rows_completeness_and_uniqueness(metrics):
    """Expect row count, per-column non-null shares, their mean, and key distinct share and duplicates."""
    assert metrics["rows"] == 5 and metrics["columns"] == 4
    assert metrics["completeness"] == {"ticket_id": 0.8, "body": 0.8, "created_at": 0.8, "notes": 0.0}
    assert metrics["completeness_mean"] == 0.6  # (0.8 * 3 + 0) / 4
    assert metrics["uniqueness"] == {
        "column": "ticket_id",
        "distinct": 3,
        "distinct_share": 0.6,
        "duplicates": 1,
        "nulls": 1,
    }


def test_validity_and_freshness(metrics):
    """Expect validity as valid rows over rows, and ages of newest and oldest timestamps across zones."""
    assert metrics["validity"] == {"valid_rows": 3, "share": 0.6}
    assert metrics["freshness"] == {
        "column": "created_at",
        "timestamps": 3,
        "unparseable": 1,
        "newest_age_hours": 0.0,
        "oldest_age_hours": 48.0,
    }


def test_text_length_distribution(metrics):
    """Expect character percentiles by linear interpolation over [0, 2, 7, 17] and token mean/p95."""
    body = metrics["text"]["body"]
    assert body["values"] == 4 and body["blank"] == 1
    assert body["chars"] == {
        "min": 0,
        "p5": 0.3,  # 0 + 0.15 * (2 - 0)
        "p25": 1.5,  # position 0.75: 0 + 0.75 * 2
        "median": 4.5,  # (2 + 7) / 2
        "p75": 9.5,  # position 2.25: 7 + 0.25 * 10
        "p95": 15.5,  # position 2.85: 7 + 0.85 * 10
        "max": 17,
        "mean": 6.5,
    }
    # tokens [0, 1, 3, 4]: mean 2, p95 at position 2.85: 3 + 0.85 * 1
    assert body["tokens"] == {"mean": 2.0, "p95": 3.85}


def test_metrics_are_json_safe_and_rounded():
    """Expect no NaN anywhere and shares rounded to 4 places (1/3 -> 0.3333)."""
    df = pd.DataFrame({"k": ["a", "b", "c"], "x": [1.0, np.nan, np.nan], "t": [np.nan] * 3})
    metrics = quality_metrics(df, key="k", text_columns=["t"], timestamp_column=None, now=NOW)
    json.dumps(metrics, allow_nan=False)
    assert metrics["completeness"]["x"] == 0.3333
    assert metrics["text"]["t"]["chars"]["median"] is None
    assert metrics["validity"] is None and metrics["freshness"] is None


def test_empty_dataset_gives_undefined_shares_not_errors():
    """Expect zero rows to give None shares and ages rather than a division error or NaN."""
    df = pd.DataFrame({"k": pd.Series([], dtype=object), "body": pd.Series([], dtype=object)})
    metrics = quality_metrics(
        df, key="k", text_columns=["body"], timestamp_column="body", now=NOW, contract_valid_rows=0
    )
    json.dumps(metrics, allow_nan=False)
    assert metrics["rows"] == 0
    assert metrics["completeness"] == {"k": None, "body": None} and metrics["completeness_mean"] is None
    assert metrics["uniqueness"]["distinct_share"] is None
    assert metrics["validity"] == {"valid_rows": 0, "share": None}
    assert metrics["freshness"]["newest_age_hours"] is None


def test_freshness_from_datetime_columns():
    """Expect a cast (datetime) column, naive or zoned, to give the same ages as its text."""
    naive = pd.DataFrame(
        {"k": ["a", "b"], "ts": pd.to_datetime(["2026-09-03T06:00:00", "2026-09-02T12:00:00"])}
    )
    zoned = naive.assign(ts=naive["ts"].dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo"))
    for df in (naive, zoned):
        fresh = quality_metrics(df, key="k", text_columns=[], timestamp_column="ts", now=NOW)["freshness"]
        assert (fresh["newest_age_hours"], fresh["oldest_age_hours"]) == (6.0, 24.0)


def test_absent_columns():
    """Expect an absent key to be an error, and absent text or timestamp columns to be reported as None."""
    df = pd.DataFrame({"k": ["a"]})
    with pytest.raises(ValueError, match="key column 'id' is not in the dataset"):
        quality_metrics(df, key="id", text_columns=[], timestamp_column=None, now=NOW)
    metrics = quality_metrics(df, key="k", text_columns=["body"], timestamp_column="ts", now=NOW)
    assert metrics["text"] == {"body": None} and metrics["freshness"] is None
    with pytest.raises(ValueError, match="contract_valid_rows"):
        quality_metrics(df, key="k", text_columns=[], timestamp_column=None, now=NOW, contract_valid_rows=2)


# ---------------------------------------------------------------------------------------- trend


def _run(rows: int, completeness: float, uniqueness: float, validity: float | None, median: float) -> dict:
    return {
        "rows": rows,
        "completeness_mean": completeness,
        "uniqueness": {"distinct_share": uniqueness},
        "validity": None if validity is None else {"share": validity},
        "text": {"body": {"chars": {"median": median}}},
    }


def test_headline_flattens_the_followed_numbers(metrics):
    """Expect rows, completeness, key uniqueness, validity and median length per text column."""
    assert headline(metrics) == {
        "rows": 5,
        "completeness_mean": 0.6,
        "key_uniqueness": 0.6,
        "validity": 0.6,
        "median_chars.body": 4.5,
    }


def test_trend_flags_changes_beyond_the_threshold():
    """Expect +50% rows and -25% median length flagged, a 20% drop (at the threshold) and small changes not."""
    history = [_run(900, 0.9, 1.0, 0.9, 100), _run(1000, 0.99, 1.0, 0.95, 120)]
    current = _run(1500, 0.97, 0.8, 0.94, 90)
    trend = metrics_trend(history, current)
    rows = trend["metrics"]["rows"]
    assert rows == {
        "current": 1500,
        "previous": 1000,
        "change": 500,
        "relative_change": 0.5,
        "flag": True,
        "series": [900, 1000, 1500],
    }
    assert trend["metrics"]["key_uniqueness"]["relative_change"] == -0.2
    assert trend["metrics"]["key_uniqueness"]["flag"] is False  # exactly 20% is not beyond 20%
    assert trend["metrics"]["median_chars.body"]["relative_change"] == -0.25
    assert trend["flagged"] == ["rows", "median_chars.body"]
    assert trend["threshold"] == 0.2 and trend["runs"] == 3
    json.dumps(trend, allow_nan=False)


def test_trend_threshold_is_a_parameter():
    """Expect a 10% threshold to flag a 15% change that the default leaves alone."""
    history, current = [_run(100, 1.0, 1.0, 1.0, 50)], _run(115, 1.0, 1.0, 1.0, 50)
    assert metrics_trend(history, current)["flagged"] == []
    assert metrics_trend(history, current, threshold=0.1)["flagged"] == ["rows"]
    with pytest.raises(ValueError, match="threshold"):
        metrics_trend(history, current, threshold=-1)


def test_trend_without_history_or_with_gaps():
    """Expect no previous value and no flag on a first run, and the latest known value used across gaps."""
    first = metrics_trend([], _run(10, 1.0, 1.0, None, 5))
    assert first["flagged"] == [] and first["metrics"]["rows"]["previous"] is None
    assert first["metrics"]["rows"]["change"] is None

    history = [_run(10, 1.0, 1.0, 0.5, 5), _run(10, 1.0, 1.0, None, 5)]
    validity = metrics_trend(history, _run(10, 1.0, 1.0, 0.9, 5))["metrics"]["validity"]
    assert validity["previous"] == 0.5 and validity["flag"] is True
    assert validity["series"] == [0.5, None, 0.9]


def test_trend_from_zero_is_flagged_and_new_columns_are_not():
    """Expect a change from 0 flagged (no relative change defined), and a text column new this run not flagged."""
    history = [_run(0, 1.0, 1.0, 1.0, 5)]
    current = _run(40, 1.0, 1.0, 1.0, 5)
    current["text"]["subject"] = {"chars": {"median": 30.0}}
    trend = metrics_trend(history, current)
    assert trend["metrics"]["rows"]["relative_change"] is None and trend["metrics"]["rows"]["flag"] is True
    assert trend["metrics"]["median_chars.subject"]["previous"] is None
    assert trend["flagged"] == ["rows"]
