"""Validation loses no row silently: NULL or empty keys are quarantined with their reason (a dedupe
on the key would keep one NULL and drop the rest as "conflicts"), and every row read is accounted
for as accepted, quarantined or deduplicated, checked in code. Also: a fine-tuning run that names
a curated snapshot id that does not exist fails at once (a permanent error), not on retries.

Rows come from the inline source kind of tests/small_pipeline.py, through the real plan/extract/commit/validate steps on
a local lake and a SQLite ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from small_pipeline import inline_kind, inline_source, install, pipeline_spec

from llmops import snapshots

if TYPE_CHECKING:
    from pathlib import Path

PIPELINE = "row_accounting"


ROWS = [
    {"ticket_id": None, "body": "no key at all"},
    {"ticket_id": None, "body": "no key either"},
    {"ticket_id": "   ", "body": "a blank key"},
    {"ticket_id": "T-1", "body": "first"},
    {"ticket_id": "T-1", "body": "first"},  # exact duplicate
    {"ticket_id": "T-1", "body": "first, edited"},  # key conflict
    {"ticket_id": "T-2", "body": "second"},
    {"ticket_id": "T-3", "body": "third"},
    {"ticket_id": "T-4", "body": "fourth"},
    {"ticket_id": "T-5", "body": "fifth"},
    {"ticket_id": "T-6", "body": "sixth"},
    {"ticket_id": "T-7", "body": "seventh"},
]


@pytest.fixture
def steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from small_pipeline import ingest

    with inline_kind():
        install(tmp_path, pipeline_spec(PIPELINE, [inline_source("pasted", ROWS)]), monkeypatch.setenv)
        run_id = "manual__rows_1"
        yield run_id, ingest(PIPELINE, run_id, until="commit")["committed"], str(tmp_path / "lake")


def test_null_and_blank_keys_are_quarantined_and_every_row_is_counted(steps) -> None:
    """Expect the two NULL keys and the blank one in quarantine with their reason (before: one NULL
    accepted, the other dropped as a key conflict), and 12 in = 7 accepted + 3 quarantined + 2
    deduplicated in the validation record."""
    from llmops.ledger import get_ledger
    from llmops.ledger.events import DatasetValidated
    from llmops.orchestration.ingest import validate
    from llmops.privacy.keys import get_key_ring

    run_id, committed, lake = steps
    result = validate.validate(PIPELINE, committed, run_id)
    quarantine = snapshots.read_snapshot(
        snapshots.snapshot_ref(lake, "quarantine", PIPELINE, "rows", result["quarantine_snapshot_id"]),
        get_key_ring(),
    ).to_pylist()
    assert sorted((r["body"], r[snapshots.QUARANTINE_REASON]) for r in quarantine) == [
        ("a blank key", "key(ticket_id: empty)"),
        ("no key at all", "key(ticket_id: null)"),
        ("no key either", "key(ticket_id: null)"),
    ]
    (record,) = get_ledger().records(pipeline=PIPELINE, event_type=DatasetValidated.name)
    p = record.payload
    assert (p["rows_in"], p["rows_accepted"], p["rows_quarantined"]) == (12, 7, 3)
    assert (
        p["normalisation"]["exact_duplicates_removed"] == 1
        and p["normalisation"]["key_conflicts_removed"] == 1
    )
    assert p["normalisation"]["rows_deduplicated"] == 2 and p["counts_reconcile"] is True
    assert p["quarantine_reasons"] == {"key(ticket_id: null)": 2, "key(ticket_id: empty)": 1}


def test_a_row_that_vanishes_fails_the_reconciliation(steps, monkeypatch: pytest.MonkeyPatch) -> None:
    """Expect a row lost inside validation (here: normalisation made to drop one uncounted) to fail
    the run as RowsUnaccounted, a permanent error, with the counts recorded as not reconciling."""
    from llmops.errors import PermanentError
    from llmops.ledger import get_ledger
    from llmops.ledger.events import DatasetValidated
    from llmops.orchestration.ingest import validate

    real = validate._normalise

    def lossy(df: Any, spec: Any) -> Any:
        out, counts, bad_keys = real(df, spec)
        return out.iloc[:-1], counts, bad_keys  # the last row vanishes, no count says so

    monkeypatch.setattr(validate, "_normalise", lossy)
    run_id, committed, _ = steps
    with pytest.raises(
        validate.RowsUnaccounted, match=r"12 in != 6 accepted \+ 3 quarantined \+ 2 deduplicated"
    ):
        validate.validate(PIPELINE, committed, run_id)
    assert issubclass(validate.RowsUnaccounted, PermanentError)
    (record,) = get_ledger().records(pipeline=PIPELINE, event_type=DatasetValidated.name)
    assert record.payload["counts_reconcile"] is False


def test_reconcile_refuses_counts_that_do_not_add_up() -> None:
    """Expect the check itself to pass only when in = accepted + quarantined + deduplicated."""
    from llmops.orchestration.ingest.validate import RowsUnaccounted, reconcile

    reconcile(10, 6, 3, 1)
    with pytest.raises(RowsUnaccounted):
        reconcile(10, 6, 3, 0)
    with pytest.raises(RowsUnaccounted):
        reconcile(10, 6, 3, 2)


def test_a_named_snapshot_that_does_not_exist_fails_the_run_once(steps) -> None:
    """Expect a well-formed curated_snapshot_id with no snapshot behind it, or a malformed one, to
    stop the finetune start as a permanent error naming the id (fail_fast: no retry); before, the
    run started and its data step failed on every retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from llmops.orchestration.dag_support import fail_fast
    from llmops.orchestration.finetune.data import SnapshotNotFound, start_finetune

    run_id, _, _ = steps
    with pytest.raises(
        AirflowFailException, match="curated snapshot '0123456789abcdef0123' .* does not exist"
    ):
        with fail_fast():
            start_finetune(PIPELINE, "0123456789abcdef0123", {}, "manual__ft_1")
    with pytest.raises(SnapshotNotFound, match="'../raw' is not a snapshot id"):
        start_finetune(PIPELINE, "../raw", {}, "manual__ft_2")
