"""Default deny: every text column the privacy policy does not name is scanned, or refused by name."""

from __future__ import annotations

import pandas as pd
import pytest

from llmops.privacy.pii import Pseudonymiser, UnscannableColumn, apply_privacy_policy
from llmops.specs.schema import PrivacySpec

KEY = b"k" * 32


def _policy(**overrides: object) -> PrivacySpec:
    raw: dict[str, object] = {
        "columns": {"category": {"action": "allow", "justification": "ticket category, not personal"}},
        "free_text": {"columns": ["body"], "types": {"email": "pseudonymise", "phone": "mask"}},
    }
    raw.update(overrides)
    return PrivacySpec.model_validate(raw)


def _frame(**extra: list[object]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ticket_id": ["T1", "T2"],
            "category": ["billing", "anna@example.com"],
            "body": ["mail anna@example.com", "nothing here"],
            "internal_note": ["escalate to Anna Schmidt, +49 30 1234567", "ok"],
            "_source": ["tickets", "tickets"],
            **extra,
        }
    )


def test_a_column_the_policy_does_not_name_is_scanned_for_every_type() -> None:
    p = Pseudonymiser(KEY)
    out, report = apply_privacy_policy(
        _frame(), _policy(), p, key_columns=["ticket_id"], system_columns=["_source"]
    )
    # Free-text actions apply where the policy gives one; every other type is masked.
    assert out["internal_note"].tolist() == ["escalate to [PERSON_NAME], [PHONE]", "ok"]
    assert report.scanned_by_default == ["ticket_id", "internal_note"]
    assert report.counts_by_column["internal_note"] == 2
    assert report.to_dict()["scanned_by_default"] == ["ticket_id", "internal_note"]


def test_allowed_columns_and_system_columns_are_left_alone() -> None:
    out, report = apply_privacy_policy(
        _frame(), _policy(), Pseudonymiser(KEY), key_columns=["ticket_id"], system_columns=["_source"]
    )
    # "allow" with a justification is the explicit not-personal list: kept as is, reason reported.
    assert out["category"].tolist() == ["billing", "anna@example.com"]
    assert report.allowed_columns == {"category": "ticket category, not personal"}
    assert "_source" not in report.scanned_by_default and out["_source"].tolist() == ["tickets"] * 2


def test_a_record_key_holding_personal_data_is_refused_by_name() -> None:
    df = _frame()
    df["ticket_id"] = ["anna@example.com", "bob@example.org"]
    with pytest.raises(UnscannableColumn, match=r"column 'ticket_id' .* record key \(email: 2\)"):
        apply_privacy_policy(df, _policy(), Pseudonymiser(KEY), key_columns=["ticket_id"])


def test_a_named_key_column_is_the_policy_s_business() -> None:
    df = _frame()
    df["ticket_id"] = ["anna@example.com", "bob@example.org"]
    policy = _policy(
        columns={
            "ticket_id": {"action": "pseudonymise"},
            "category": {"action": "allow", "justification": "not personal"},
        }
    )
    out, report = apply_privacy_policy(df, policy, Pseudonymiser(KEY), key_columns=["ticket_id"])
    assert out["ticket_id"].str.startswith("<email:").all()
    assert "ticket_id" not in report.scanned_by_default


def test_nested_values_with_personal_data_are_refused_by_name() -> None:
    df = _frame(payload=[{"contact": "anna@example.com"}, None])
    with pytest.raises(UnscannableColumn, match=r"column 'payload' .* not text \(email: 1\)"):
        apply_privacy_policy(df, _policy(), Pseudonymiser(KEY))


def test_nested_values_without_personal_data_keep_their_type() -> None:
    df = _frame(payload=[{"items": 2}, ["a", "b"]])
    df.loc[1, "internal_note"] = "call +49 30 1234567"
    out, _ = apply_privacy_policy(df, _policy(), Pseudonymiser(KEY))
    assert out["payload"].tolist() == [{"items": 2}, ["a", "b"]]


def test_numbers_and_timestamps_are_not_text_columns() -> None:
    df = _frame(amount=[10, 20], created=pd.to_datetime(["2026-01-01", "2026-01-02"]))
    _, report = apply_privacy_policy(df, _policy(), Pseudonymiser(KEY))
    assert "amount" not in report.scanned_by_default and "created" not in report.scanned_by_default


def test_without_a_pseudonymiser_unnamed_columns_are_masked() -> None:
    policy = _policy(free_text={"columns": ["body"], "types": {"phone": "mask"}})
    df = _frame()
    df.loc[1, "internal_note"] = "write to bob@example.org"
    out, _ = apply_privacy_policy(df, policy)
    assert out["internal_note"][1] == "write to [EMAIL]"
