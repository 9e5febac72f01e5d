"""Purpose limitation is enforced from the governance tags the data carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.governance.purpose import PurposeNotAllowed, check_purpose
from llmops.specs import load_spec

SPEC = load_spec(Path(__file__).resolve().parents[2] / "include" / "pipelines" / "support_bot.yaml")
OK = {"data_owner": "o", "purposes": ["customer_support_automation"], "lawful_basis": "contract"}


def test_tags_that_cover_the_purpose_pass():
    check_purpose(SPEC, "abc", {"governance": {"helpdesk_db": OK, "webform_api": OK}})


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (
            {"helpdesk_db": OK, "webform_api": {**OK, "purposes": ["marketing"]}},
            "source 'webform_api': purpose 'customer_support_automation' is not among its purposes (marketing)",
        ),
        (
            {"helpdesk_db": {**OK, "lawful_basis": "consent", "consent_scope": ["newsletter"]}},
            "source 'helpdesk_db': purpose 'customer_support_automation' is outside the consent scope (newsletter)",
        ),
        ({}, "it carries no governance tags"),
    ],
)
def test_snapshot_whose_tags_do_not_cover_the_purpose_is_refused(tags, expected):
    """Expect a clear refusal naming the snapshot, the source and the missing purpose or consent."""
    with pytest.raises(PurposeNotAllowed) as info:
        check_purpose(SPEC, "abc123", {"governance": tags})
    assert "curated snapshot abc123 cannot feed 'support_bot'" in str(info.value)
    assert expected in str(info.value)
