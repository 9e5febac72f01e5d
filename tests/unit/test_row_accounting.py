"""Validation loses no row silently: NULL or empty keys are quarantined with their reason (a dedupe
on the key would keep one NULL and drop the rest as "conflicts"), and every row read is accounted
for as accepted, quarantined or deduplicated, checked in code. Also: a fine-tuning run that names
a curated snapshot id that does not exist fails at once (a permanent error), not on retries.

Rows come from a source kind defined here, through the real plan/extract/commit/validate steps on
a local lake and a SQLite ledger."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

import pytest
import yaml

from llmops import snapshots
from llmops.specs.base import Governance, Identifier, StrictModel
from llmops.specs.sources import SourceKind, register_source_kind, unregister_source_kind

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    import pyarrow as pa

PIPELINE = "row_accounting"


class RowsSource(StrictModel):
    kind: Literal["rows_inline"]
    name: Identifier
    rows: list[dict[str, str | None]]
    columns: list[Identifier]
    governance: Governance
    sample: None = None
    contract: None = None

    @property
    def partition_count(self) -> int:
        return 1


class RowsBehaviour:
    def plan(self, spec: Any, source: RowsSource) -> list[dict[str, Any]]:
        return [{"source": source.name, "partition": 0, "partitions": 1}]

    def extract(
        self, source: RowsSource, item: dict[str, Any], key: str, schema: pa.Schema
    ) -> tuple[Iterable[pa.RecordBatch], dict[str, Any]]:
        import pyarrow as pa

        table = pa.Table.from_pylist([{c: row.get(c) for c in source.columns} for row in source.rows], schema)
        return table.to_batches(), {"kind": "rows_inline"}

    def location(
        self, source: RowsSource, meta: dict[str, Any] | None = None, url: Any = None
    ) -> tuple[str, str]:
        return "inline://spec", source.name


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
    from llmops.orchestration.ingest import extract

    register_source_kind(SourceKind("rows_inline", RowsSource, RowsBehaviour()))
    spec = {
        "name": PIPELINE,
        "description": "row accounting",
        "owner": "qa",
        "purpose": "testing",
        "schedule": None,
        "sources": [
            {
                "kind": "rows_inline",
                "name": "pasted",
                "rows": ROWS,
                "columns": ["ticket_id", "body"],
                "governance": {
                    "data_owner": "qa@example.com",
                    "purposes": ["testing"],
                    "lawful_basis": "contract",
                },
            }
        ],
        "dataset": {"key": "ticket_id"},
        "validation": {"suite": PIPELINE, "max_quarantine_fraction": 0.5},
        "privacy": {"free_text": {"columns": ["body"], "types": {"email": "mask"}}},
        "training": {
            "base_model": {"uri": "unused"},
            "prompt_template": "{body}",
            "completion_column": "body",
        },
        "gates": [{"metric": "token_f1", "min": 0.1}],
        "registry": {"model_name": PIPELINE},
    }
    pipelines, gx = tmp_path / "pipelines", tmp_path / "gx" / "expectations"
    pipelines.mkdir()
    gx.mkdir(parents=True)
    (pipelines / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(spec))
    (gx / f"{PIPELINE}.json").write_text(json.dumps({"name": PIPELINE, "expectations": []}))
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(pipelines))
    monkeypatch.setenv("LLMOPS_GX_DIR", str(tmp_path / "gx"))
    monkeypatch.setenv("LLMOPS_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    run_id = "manual__rows_1"
    parts = [extract.extract_partition(PIPELINE, item, run_id) for item in extract.plan(PIPELINE, run_id)]
    try:
        yield run_id, extract.commit_raw(PIPELINE, parts, run_id), str(tmp_path / "lake")
    finally:
        unregister_source_kind("rows_inline")


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
