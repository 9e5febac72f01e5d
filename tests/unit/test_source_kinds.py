"""The source kind registry: a kind defined outside the package (tests/small_pipeline.py; no core
file edited) is accepted by specs and goes through the real ingest steps (plan, extract, commit,
validate, curate) into an encrypted raw snapshot, the ledger and a curated snapshot with its PII
masked."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from small_pipeline import (
    INLINE,
    InlineBehaviour,
    InlineSource,
    inline_kind,
    inline_source,
    install,
    pipeline_spec,
)

from llmops import snapshots
from llmops.specs import SpecError, parse_spec
from llmops.specs.sources import SourceKind, register_source_kind

if TYPE_CHECKING:
    from pathlib import Path

PIPELINE = "inline_check"
ROWS = [
    {"ticket_id": f"T-{i:02d}", "body": f"parcel {i} late, mail me at p{i}@example.com"} for i in range(12)
]
SPEC = pipeline_spec(PIPELINE, [inline_source("pasted", ROWS)])
NOT_NULL_KEY = {
    "type": "expect_column_values_to_not_be_null",
    "kwargs": {"column": "ticket_id"},
    "meta": {"severity": "blocking"},
}


@pytest.fixture
def registered():
    with inline_kind() as kind:
        yield kind


def test_without_the_registration_the_kind_is_refused() -> None:
    """Expect a spec naming an unregistered kind to fail with the known kinds listed."""
    with pytest.raises(
        SpecError, match="'inline' .*does not match any of the expected tags: 'sql', 'rest', 'files'"
    ):
        parse_spec(SPEC)


def test_a_kind_model_must_name_its_kind() -> None:
    """Expect a kind whose model's `kind` is not Literal[<its name>] to be refused."""
    with pytest.raises(ValueError, match="needs `kind: Literal\\['csv_inline'\\]`"):
        register_source_kind(SourceKind("csv_inline", InlineSource, InlineBehaviour()))


def test_a_registered_kind_runs_through_the_ingest_steps(
    registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expect plan/extract/commit/validate/curate to ingest the kind's rows like any other source:
    an encrypted raw snapshot recorded in the ledger with the kind, its lineage location from the
    kind, and a curated snapshot with the e-mail addresses masked."""
    from llmops.ledger import get_ledger
    from llmops.ledger.events import RawSnapshotCreated
    from llmops.lineage.steps import source_location
    from llmops.orchestration.ingest import curate, extract, validate
    from llmops.privacy.keys import get_key_ring

    assert registered is INLINE
    install(tmp_path, SPEC, monkeypatch.setenv, [NOT_NULL_KEY])
    run_id = "manual__inline_1"

    items = extract.plan(PIPELINE, run_id)
    assert items == [{"source": "pasted", "partition": 0, "partitions": 1}]
    parts = [extract.extract_partition(PIPELINE, item, run_id) for item in items]
    committed = extract.commit_raw(PIPELINE, parts, run_id)
    assert [c["row_count"] for c in committed] == [12]
    validated = validate.validate(PIPELINE, committed, run_id)
    result = curate.curate(PIPELINE, validated, run_id)

    (raw_event,) = get_ledger().records(pipeline=PIPELINE, event_type=RawSnapshotCreated.name)
    assert raw_event.payload["kind"] == "inline"
    assert raw_event.payload["encryption"]  # raw zone: encrypted whatever the kind
    lake = str(tmp_path / "lake")
    raw_manifest = snapshots.read_manifest(
        snapshots.snapshot_ref(lake, "raw", PIPELINE, "pasted", committed[0]["snapshot_id"])
    )
    assert raw_manifest["source"]["rows_declared"] == 12
    curated = snapshots.read_snapshot(
        snapshots.snapshot_ref(
            lake, "curated", PIPELINE, snapshots.CURATED_DATASET, result["curated_snapshot_id"]
        ),
        get_key_ring(),
    ).to_pandas()
    assert len(curated) == 12
    assert not curated["body"].str.contains("@example.com").any()
    assert curated["body"].str.contains(r"\[EMAIL\]").all()

    from llmops.specs.pinned import run_spec

    spec = run_spec(PIPELINE, run_id)
    assert source_location(spec.sources[0]) == ("inline://spec", "pasted")
