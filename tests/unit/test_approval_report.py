"""The model version report's approval section: who approved, who triggered the run, and whether
separation of duties held (nobody approved their own run; enough distinct approvers answered)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmops.reports.deployment import approval_section
from llmops.specs.schema import Approval


def _decision(approvers: list[str], triggered_by: str | None, outcome: str) -> SimpleNamespace:
    people = [{"id": a, "name": a.title()} for a in approvers]
    return SimpleNamespace(
        subject="model/m/2",
        event_type="model.approved" if outcome == "approved" else "model.rejected",
        payload={
            "outcome": outcome,
            "approved": outcome == "approved",
            "approver": people[0] if people else None,
            "approvers": people,
            "triggered_by": triggered_by,
            "responded_at": "2026-12-01T09:00:00+00:00",
        },
        recorded_at="2026-12-01T09:00:01+00:00",
        seq=7,
        record_hash="h" * 64,
    )


@pytest.mark.parametrize(
    ("approvers", "triggered_by", "outcome", "minimum", "held"),
    [
        (["alice"], "bob", "approved", 1, True),
        (["alice"], "alice", "approver_triggered_the_run", 1, False),
        (["alice", "alice"], "bob", "approvers_not_distinct", 2, False),
        (["alice", "carol"], "bob", "approved", 2, True),
    ],
)
def test_the_report_says_whether_separation_of_duties_held(approvers, triggered_by, outcome, minimum, held):
    spec = SimpleNamespace(
        registry=SimpleNamespace(
            approval=Approval(required=True, approvers=["alice", "carol"], min_approvers=minimum)
        )
    )
    section = approval_section(
        spec, [_decision(approvers, triggered_by, outcome)], "model/m/2", None, None, True
    )
    assert section["decision"] == outcome and section["triggered_by"] == triggered_by
    assert [a["id"] for a in section["approvers"]] == approvers
    assert section["separation_held"] is held
