"""Data contracts: every row-level and table-level rule, the messages that fail a run, and safe records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from llmops.errors import PermanentError
from llmops.quality.contracts import (
    ContractViolation,
    check_contract,
    conforms,
    enforce,
    evaluate_contract,
)
from llmops.specs.schema import DataContract

NOW = datetime(2026, 9, 3, 12, 0, tzinfo=UTC)


def _contract(**spec) -> DataContract:
    return DataContract.model_validate(spec)


def _check(df: pd.DataFrame, contract: DataContract | None, **kwargs):
    kwargs.setdefault("expected_columns", list(df.columns))
    kwargs.setdefault("drift", None)
    kwargs.setdefault("now", NOW)
    return evaluate_contract("tickets", contract, df, **kwargs)


def _bad_rows(values: list, rule: dict) -> list[int]:
    df = pd.DataFrame({"c": pd.Series(values, dtype=object)})
    return sorted(_check(df, _contract(columns={"c": rule})).row_violations)


# ------------------------------------------------------------------------------------- row rules


def test_not_nullable_flags_none_and_nan_but_not_empty_string():
    """Expect None and NaN to break `nullable: false` and an empty string not to: it is a value."""
    df = pd.DataFrame({"body": pd.Series(["ok", None, "", np.nan, " "], dtype=object)})
    outcome = _check(df, _contract(columns={"body": {"nullable": False}}))
    assert outcome.row_violations == {
        1: ["contract(body: not nullable)"],
        3: ["contract(body: not nullable)"],
    }
    assert outcome.rule_counts == {"nullable": {"body": 2}}
    assert outcome.ok  # row-level promises quarantine rows, they do not fail the run


def test_int_accepts_whole_numbers_in_any_spelling():
    """Expect "12", "-3", "+5", "12.0", " 7 " and "1e3" to be ints, and "1.5", "", "abc", "inf", "1,000" not."""
    values = ["12", "-3", "+5", "12.0", " 7 ", "1e3", "1.5", "", "abc", "inf", "1,000", None]
    assert _bad_rows(values, {"type": "int"}) == [6, 7, 8, 9, 10]


def test_int_reason_names_column_and_type():
    """Expect a value that is not a whole number to be quarantined with 'contract(col: not an int)'."""
    df = pd.DataFrame({"n": ["1", "1.5"]})
    outcome = _check(df, _contract(columns={"n": {"type": "int"}}))
    assert outcome.row_violations == {1: ["contract(n: not an int)"]}


def test_float_accepts_numbers_only():
    """Expect decimals, negatives and exponents to be floats, and text, empty strings and '1.2.3' not."""
    values = ["1.5", "-0.25", "1e-3", "3", "", "abc", "1.2.3", None]
    assert _bad_rows(values, {"type": "float"}) == [4, 5, 6]


def test_bool_accepts_the_cast_spellings_case_insensitively():
    """Expect true/false/t/f/1/0/yes/no in any case to be bools, and 'maybe', '' and '2' not."""
    values = ["TRUE", "false", "T", "f", "1", "0", "Yes", "NO", "maybe", "", "2", None]
    assert _bad_rows(values, {"type": "bool"}) == [8, 9, 10]


def test_timestamp_accepts_iso_8601_with_or_without_zone():
    """Expect ISO 8601 timestamps with or without a zone (and bare dates) to pass, partial or invalid ones not."""
    good = [
        "2026-09-01T08:00:00",  # no zone
        "2026-09-01T08:00:00Z",
        "2026-09-01T08:00:00.123456+02:00",
        "2026-09-01T08:00+0530",
        "2026-09-01 08:00:00",
        "2026-09-01",
    ]
    bad = ["2026-09", "2026", "01/09/2026", "2026-13-01T00:00:00", "2026-09-01T25:00:00", "", "yesterday"]
    df = pd.DataFrame({"created_at": pd.Series([*good, *bad, None], dtype=object)})
    outcome = _check(df, _contract(columns={"created_at": {"type": "timestamp"}}))
    assert sorted(outcome.row_violations) == list(range(len(good), len(good) + len(bad)))
    assert outcome.row_violations[len(good)] == ["contract(created_at: not a timestamp)"]
    assert outcome.schema_diff["type_drift"] == {"created_at": {"type": "timestamp", "unparseable": len(bad)}}


def test_date_needs_a_real_calendar_day_and_nothing_else():
    """Expect YYYY-MM-DD of a real day to pass, and 30 February, a timestamp or another format to fail."""
    values = ["2026-02-28", "2024-02-29", "2026-02-30", "2026-02-28T00:00:00", "28.02.2026", "", None]
    assert _bad_rows(values, {"type": "date"}) == [2, 3, 4, 5]


def test_allowed_values_are_exact_and_ignore_nulls():
    """Expect values outside the list (case and empty string included) to fail, and nulls to pass."""
    df = pd.DataFrame({"category": pd.Series(["billing", "Billing", "", None, np.nan, "tech"], dtype=object)})
    outcome = _check(df, _contract(columns={"category": {"allowed_values": ["billing", "tech"]}}))
    assert outcome.row_violations == {
        1: ["contract(category: not in allowed values)"],
        2: ["contract(category: not in allowed values)"],
    }


def test_pattern_handles_unicode_and_fails_empty_strings():
    """Expect unicode word characters and literals to match, and an empty string to fail the pattern."""
    df = pd.DataFrame(
        {
            "name": ["Café crème", "Zoë Ångström", "naïve!", ""],
            "code": ["№12", "№7", "No12", "№"],
        }
    )
    contract = _contract(columns={"name": {"pattern": r"^[\w ]+$"}, "code": {"pattern": r"^№\d+$"}})
    outcome = _check(df, contract)
    assert outcome.row_violations == {
        2: ["contract(name: does not match pattern)", "contract(code: does not match pattern)"],
        3: ["contract(name: does not match pattern)", "contract(code: does not match pattern)"],
    }


def test_pattern_is_searched_unless_anchored():
    """Expect an unanchored pattern to match anywhere in the value, and an anchored one the whole value."""
    assert _bad_rows(["T-1", "xT-1x", "T-"], {"pattern": r"T-\d"}) == [2]
    assert _bad_rows(["T-1", "xT-1x", "T-"], {"pattern": r"^T-\d$"}) == [1, 2]


def test_max_length_counts_characters_not_bytes():
    """Expect 200 accented characters to fit max_length 200 and 201 not, with the limit in the reason."""
    df = pd.DataFrame({"subject": ["é" * 200, "é" * 201, None]})
    outcome = _check(df, _contract(columns={"subject": {"max_length": 200}}))
    assert outcome.row_violations == {1: ["contract(subject: longer than 200)"]}


def test_row_numbers_are_positions_whatever_the_index():
    """Expect reasons keyed by 0-based position, in contract column order, when the frame's index is not."""
    df = pd.DataFrame({"a": ["x", None], "b": ["1", "one"]}, index=[10, 20])
    contract = _contract(columns={"a": {"nullable": False}, "b": {"type": "int"}})
    outcome = _check(df, contract)
    assert outcome.row_violations == {1: ["contract(a: not nullable)", "contract(b: not an int)"]}


def test_conforms_treats_nulls_as_conforming():
    """Expect the type check itself to leave nulls to the nullability rule, with the input's index."""
    values = pd.Series(["1", None, "x"], index=[5, 6, 7], dtype=object)
    assert conforms(values, "int").to_dict() == {5: True, 6: True, 7: False}
    with pytest.raises(ValueError, match="unknown contract type"):
        conforms(values, "decimal")


# ----------------------------------------------------------------------------------- table rules


def test_unique_counts_repeated_values_and_ignores_nulls():
    """Expect 3 repeats among 8 rows (nulls not counted) to fail the run with a message naming the numbers."""
    ids = ["T-1", "T-1", "T-1", "T-2", "T-2", "T-3", None, None]
    df = pd.DataFrame({"ticket_id": ids})
    outcome = _check(df, _contract(columns={"ticket_id": {"unique": True}}))
    assert not outcome.ok
    assert outcome.table_violations == [
        "source 'tickets': column 'ticket_id' has 3 duplicated values in 8 rows (contract: unique)"
    ]
    assert outcome.rule_counts == {"unique": {"ticket_id": 3}}
    assert outcome.row_violations == {}


def test_freshness_names_age_and_allowance():
    """Expect a newest timestamp 52 hours old to break a 24 h freshness promise, with both numbers."""
    newest = NOW - timedelta(hours=52)
    df = pd.DataFrame(
        {"created_at": [(newest - timedelta(days=3)).isoformat(), newest.replace(tzinfo=None).isoformat()]}
    )
    contract = _contract(freshness={"column": "created_at", "max_age_hours": 24})
    outcome = _check(df, contract)
    assert outcome.table_violations == [
        "source 'tickets': newest created_at is 52.0 h old, contract allows 24 h"
    ]
    assert outcome.freshness == {"column": "created_at", "max_age_hours": 24.0, "newest_age_hours": 52.0}


def test_freshness_reads_zones_and_accepts_recent_data():
    """Expect an offset timestamp converted to UTC, a naive `now` taken as UTC, and fresh data to pass."""
    df = pd.DataFrame({"created_at": ["2026-09-03T13:00:00+02:00", "not a time"]})  # 11:00 UTC
    contract = _contract(freshness={"column": "created_at", "max_age_hours": 1.5})
    outcome = _check(df, contract, now=datetime(2026, 9, 3, 12, 0))
    assert outcome.ok
    assert outcome.freshness["newest_age_hours"] == 1.0


def test_freshness_without_any_timestamp_or_column_fails():
    """Expect a freshness column holding no timestamp, or absent, to fail rather than pass silently."""
    contract = _contract(freshness={"column": "created_at", "max_age_hours": 24})
    no_stamps = _check(pd.DataFrame({"created_at": ["soon", None]}), contract)
    assert no_stamps.table_violations == [
        "source 'tickets': freshness column 'created_at' has no ISO 8601 timestamps"
    ]
    absent = _check(pd.DataFrame({"body": ["x"]}), contract)
    assert absent.table_violations == ["source 'tickets': freshness column 'created_at' is absent"]


def test_freshness_is_not_judged_on_an_empty_extract():
    """Expect an empty (e.g. incremental, nothing new) extract not to fail freshness; min_rows covers emptiness."""
    contract = _contract(freshness={"column": "created_at", "max_age_hours": 24})
    outcome = _check(pd.DataFrame({"created_at": pd.Series([], dtype=object)}), contract)
    assert outcome.ok and outcome.freshness["newest_age_hours"] is None


def test_min_rows():
    """Expect fewer rows than min_rows to fail with both counts, and exactly min_rows to pass."""
    contract = _contract(min_rows=3)
    short = _check(pd.DataFrame({"a": ["1", "2"]}), contract)
    assert short.table_violations == ["source 'tickets' has 2 rows, contract requires at least 3"]
    assert _check(pd.DataFrame({"a": ["1", "2", "3"]}), contract).ok


def test_missing_expected_columns_fail_with_or_without_a_contract():
    """Expect spec columns absent from the data to fail the run even when the source has no contract."""
    df = pd.DataFrame({"ticket_id": ["1"], "extra": ["x"]})
    outcome = _check(df, None, expected_columns=["ticket_id", "body", "subject"])
    assert outcome.table_violations == ["source 'tickets' is missing column(s) body, subject"]
    assert outcome.missing == ["body", "subject"] and outcome.unexpected == ["extra"]
    assert outcome.to_dict()["contract_declared"] is False


def test_contract_columns_absent_from_the_data_fail():
    """Expect a column the contract declares but the data lacks to be named in a table-level violation."""
    df = pd.DataFrame({"ticket_id": ["1"]})
    outcome = _check(df, _contract(columns={"ticket_id": {}, "priority": {"type": "int"}}))
    assert outcome.table_violations == [
        "source 'tickets': column(s) priority declared in its contract are absent"
    ]
    assert outcome.schema_diff["contract_columns_absent"] == ["priority"]


def test_extra_columns_fail_only_when_the_contract_forbids_them():
    """Expect extra frame columns and drifted REST/file fields to fail under allow_extra_columns: false only."""
    df = pd.DataFrame({"ticket_id": ["1"], "internal": ["x"]})
    drift = {"unexpected_fields": {"notes": 4, "gone": 0}, "missing_fields": {"body": 1}}
    strict = _check(df, _contract(allow_extra_columns=False), expected_columns=["ticket_id"], drift=drift)
    assert strict.table_violations == [
        "source 'tickets' has unexpected column(s) internal, notes; its contract does not allow extra columns"
    ]
    lenient = _check(df, _contract(), expected_columns=["ticket_id"], drift=drift)
    assert lenient.ok
    assert lenient.schema_diff["unexpected_columns"] == ["internal"]
    assert lenient.schema_diff["field_drift"] == drift


def test_schema_diff_counts_type_drift_per_column():
    """Expect per-column counts of values not parsing as the declared type, zero included, strings skipped."""
    df = pd.DataFrame({"n": ["1", "x", "y"], "flag": ["true", "no", "1"], "s": ["a", "b", "c"]})
    contract = _contract(columns={"n": {"type": "int"}, "flag": {"type": "bool"}, "s": {"type": "string"}})
    diff = _check(df, contract).schema_diff
    assert diff["type_drift"] == {
        "n": {"type": "int", "unparseable": 2},
        "flag": {"type": "bool", "unparseable": 0},
    }


# --------------------------------------------------------------------------------------- enforce


def test_enforce_lists_every_violation_of_every_source():
    """Expect one ContractViolation naming each broken source's every table-level violation."""
    a = evaluate_contract(
        "helpdesk_db", _contract(min_rows=5), pd.DataFrame({"id": ["1", "1"]}), ["id", "body"], None, NOW
    )
    b = evaluate_contract(
        "webform_api",
        _contract(columns={"id": {"unique": True}}),
        pd.DataFrame({"id": ["7", "7", "8"]}),
        ["id"],
        None,
        NOW,
    )
    fine = evaluate_contract("files", None, pd.DataFrame({"id": ["1"]}), ["id"], None, NOW)
    with pytest.raises(ContractViolation) as raised:
        enforce([a, fine, b])
    message = str(raised.value)
    assert message.startswith("data contract violated (3 violation(s) in 2 source(s)): ")
    assert "source 'helpdesk_db' is missing column(s) body" in message
    assert "source 'helpdesk_db' has 2 rows, contract requires at least 5" in message
    assert "source 'webform_api': column 'id' has 1 duplicated values in 3 rows" in message
    assert "'files'" not in message
    assert isinstance(raised.value, PermanentError)


def test_enforce_passes_when_only_rows_break_the_contract():
    """Expect row-level breaks alone (quarantined rows) not to fail the run."""
    outcome = _check(pd.DataFrame({"n": ["x"]}), _contract(columns={"n": {"type": "int"}}))
    assert outcome.row_violations and outcome.ok
    enforce([outcome])


def test_enforce_still_takes_column_check_results():
    """Expect the old check_contract results to keep working, alone or mixed with full outcomes."""
    old = check_contract("legacy", ["a", "b"], ["a", "c"], {"unexpected_fields": {"c": 1}})
    assert old.missing == ["b"] and old.unexpected == ["c"]
    assert old.to_dict()["field_drift"] == {"unexpected_fields": {"c": 1}}
    enforce([check_contract("fine", ["a"], ["a"])])
    new = _check(pd.DataFrame({"a": ["1"]}), _contract(min_rows=2))
    with pytest.raises(
        ContractViolation, match=r"source 'legacy' is missing column\(s\) b; source 'tickets'"
    ):
        enforce([old, new])


# -------------------------------------------------------------------------------------- records


def _leaky_frame() -> tuple[pd.DataFrame, DataContract]:
    df = pd.DataFrame(
        {
            "code": ["AB-1", "contact jane.doe@example.com"],
            "category": ["billing", "jane.doe@example.com"],
            "created_at": ["2026-09-03T00:00:00", "jane.doe@example.com"],
        }
    )
    contract = _contract(
        columns={
            "code": {"pattern": r"^[A-Z]{2}-\d+$", "max_length": 10},
            "category": {"allowed_values": ["billing"]},
            "created_at": {"type": "timestamp"},
        }
    )
    return df, contract


def test_record_carries_no_raw_values_without_a_mask():
    """Expect an email in failing values to appear nowhere in the JSON record when no mask is given."""
    df, contract = _leaky_frame()
    outcome = _check(df, contract)
    assert sorted(outcome.row_violations) == [1]
    text = json.dumps(outcome.to_dict(), allow_nan=False)
    assert "jane.doe" not in text
    assert "samples_masked" not in outcome.to_dict()


def test_record_carries_only_masked_samples_with_a_mask():
    """Expect the shapes of failing values, truncated, and never their content."""
    from llmops.orchestration.ingest.validate import pii_masker

    df, contract = _leaky_frame()
    record = _check(df, contract, mask=pii_masker()).to_dict()
    text = json.dumps(record, allow_nan=False)
    assert "jane.doe@example.com" not in text
    samples = record["samples_masked"]
    assert set(samples) == {
        "contract(code: does not match pattern)",
        "contract(code: longer than 10)",
        "contract(category: not in allowed values)",
        "contract(created_at: not a timestamp)",
    }
    assert all(len(s) <= 80 for values in samples.values() for s in values)
    assert samples["contract(code: does not match pattern)"][0] == "aaaaaaa aaaa.aaa@aaaaaaa.aaa"
    assert "jane" not in text and "contact" not in text


def test_record_keeps_the_keys_reports_read():
    """Expect the column-check keys reports use alongside the full schema diff, counts and violations."""
    drift = {"unexpected_fields": {"internal_notes": 1}, "missing_fields": {}}
    df = pd.DataFrame({"id": ["1", "x"], "body": [None, "b"]})
    contract = _contract(columns={"id": {"type": "int"}, "body": {"nullable": False}})
    record = _check(df, contract, expected_columns=["id", "body", "subject"], drift=drift).to_dict()
    assert record["source"] == "tickets" and record["ok"] is False
    assert record["missing_columns"] == ["subject"] and record["unexpected_columns"] == []
    assert record["field_drift"] == drift
    assert record["rows"] == 2 and record["rows_violating"] == 2
    assert record["rule_counts"] == {"type": {"id": 1}, "nullable": {"body": 1}}
    assert record["table_violations"] == ["source 'tickets' is missing column(s) subject"]
    assert set(record["schema_diff"]) == {
        "expected_columns",
        "observed_columns",
        "missing_columns",
        "unexpected_columns",
        "contract_columns_absent",
        "type_drift",
        "field_drift",
    }


def test_offset_now_is_compared_in_utc():
    """Expect `now` in another zone to give the same age as the same instant in UTC."""
    df = pd.DataFrame({"created_at": ["2026-09-03T00:00:00Z"]})
    contract = _contract(freshness={"column": "created_at", "max_age_hours": 100})
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    assert _check(df, contract, now=tokyo).freshness["newest_age_hours"] == 12.0
