"""An erasure retried after a partial attempt still reaches the training sets.

Training sets are found by record key, and the keys come from the raw and curated rows that hold
the subject. An attempt that rewrote raw and curated and then failed leaves no such rows, so its
retry found no keys and ended in success with the subject still in the training data. The keys
found are now kept, encrypted, until the request completes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from small_pipeline import SUBJECT, SUBJECT_ROWS, inline_kind, inline_source, install, pipeline_spec

from llmops import snapshots
from llmops.privacy.keys import get_key_ring

PIPELINE = "erasure_retry"
ROWS = SUBJECT_ROWS


@pytest.fixture
def trained_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Raw, curated and training snapshots holding the subject's three tickets."""
    from small_pipeline import ingest

    from llmops.orchestration.finetune.data import prepare_training_data, start_finetune

    source = inline_source("pasted", ROWS, ("ticket_id", "customer", "body"))
    spec = pipeline_spec(PIPELINE, [source], dataset={"key": "ticket_id", "subject_column": "customer"})
    with inline_kind():
        install(tmp_path, spec, monkeypatch.setenv)
        curated = ingest(PIPELINE, "manual__ingest_1")["curated"]["curated_snapshot_id"]
        start_finetune(PIPELINE, curated, {}, "manual__ft_1")
        data = prepare_training_data(PIPELINE, curated, "manual__ft_1")
        yield str(tmp_path / "lake"), data["sft_snapshot_id"]


def _training_keys(lake: str) -> set[str]:
    """Record keys in every training snapshot now in the lake."""
    keys: set[str] = set()
    for ref, _ in snapshots.list_snapshots(lake, snapshots.TRAINING_ZONE, PIPELINE):
        keys |= set(snapshots.read_snapshot(ref, get_key_ring()).to_pandas()["key"])
    return keys


def test_a_retry_after_a_partial_attempt_erases_from_the_training_sets(trained_on, monkeypatch) -> None:
    from llmops.governance import erasure
    from llmops.specs import load_pipeline

    lake, _ = trained_on
    assert {"T-00", "T-01", "T-02"} <= _training_keys(lake)
    spec = load_pipeline(PIPELINE)

    def crash(self) -> None:
        raise RuntimeError("worker lost")

    with monkeypatch.context() as patch:
        patch.setattr(erasure._Erasure, "training_sets", crash)
        with pytest.raises(RuntimeError, match="worker lost"):
            erasure.erase_subject(spec, SUBJECT, "req-1", "manual__erasure_1")
    assert {"T-00", "T-01", "T-02"} <= _training_keys(lake), "the first attempt stopped before them"

    summary = erasure.erase_subject(spec, SUBJECT, "req-1", "manual__erasure_1")  # the retry
    assert summary["records_found"] == 3
    assert not {"T-00", "T-01", "T-02"} & _training_keys(lake)
    assert len(_training_keys(lake)) == 13
    assert not list((Path(lake) / "erasure").rglob("*.enc")), "kept keys are deleted at the end"


def test_the_kept_keys_are_encrypted(trained_on) -> None:
    from llmops.governance import erasure
    from llmops.privacy.keys import get_key_ring
    from llmops.storage import read_bytes

    lake, _ = trained_on
    erasure.keep_keys(lake, PIPELINE, "req-2", {"T-00", "T-01"}, get_key_ring())
    assert b"T-00" not in read_bytes(erasure._keys_uri(lake, PIPELINE, "req-2"))
    assert erasure.carried_keys(lake, PIPELINE, "req-2", get_key_ring()) == {"T-00", "T-01"}
