"""Every lake zone that holds records is encrypted at rest: a marker planted in a source row goes
through the real ingest and training-data steps (tests/small_pipeline.py) and is then nowhere in
the bytes under the curated and sft zones, yet reads back through the project's API with the key."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from small_pipeline import ingest, inline_kind, inline_source, install, pipeline_spec

from llmops import encrypted_files, snapshots
from llmops.lake import SPLIT_FILES

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

PIPELINE = "zone_check"
MARKER = "quokkazebramarker"
ROWS = [
    {"ticket_id": f"T-{i:02d}", "body": f"parcel {i} late {MARKER} please mail me at p{i}@example.com"}
    for i in range(40)
]
SPEC = pipeline_spec(PIPELINE, [inline_source("pasted", ROWS)])


def _every_byte(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, dict, dict]]:
    from llmops.orchestration.finetune.data import prepare_training_data

    install(tmp_path, SPEC, monkeypatch.setenv)
    with inline_kind():
        out = ingest(PIPELINE, "manual__zones_1")
        data = prepare_training_data(PIPELINE, out["curated"]["curated_snapshot_id"], "manual__zones_1")
        yield tmp_path / "lake", out, data


def test_no_plaintext_record_in_the_curated_and_sft_zones(built: tuple[Path, dict, dict]) -> None:
    """Expect the marker absent from every file under curated/ and sft/ (parts, split files, key
    files, manifests), while those zones do hold the snapshots and the split files."""
    lake, _, _ = built
    for zone in ("curated", "sft"):
        files = _every_byte(lake / zone)
        assert any(name.endswith(".parquet.enc") for name in files), zone
        leaking = [name for name, data in files.items() if MARKER.encode() in data]
        assert leaking == [], f"{zone}: plaintext marker in {leaking}"
        assert not any(name.endswith((".parquet", ".jsonl")) for name in files), zone
    sft_files = _every_byte(lake / "sft")
    for name in SPLIT_FILES:
        assert any(n.endswith(f"/{name}.enc") for n in sft_files)
        assert any(n.endswith(f"/{name}.enc.key.json") for n in sft_files)


def test_the_project_api_reads_the_marker_back_with_the_key(built: tuple[Path, dict, dict]) -> None:
    """Expect the curated and sft snapshots and both split files to hold the marker when read with
    the key ring, and the split files' plaintext to hash to what the ledger recorded."""
    from llmops.governance.integrity import recorded_split_sha256
    from llmops.privacy.keys import get_key_ring
    from llmops.specs.pinned import run_spec

    lake, out, data = built
    ring = get_key_ring()
    c_ref = snapshots.snapshot_ref(
        str(lake), "curated", PIPELINE, snapshots.CURATED_DATASET, out["curated"]["curated_snapshot_id"]
    )
    assert snapshots.read_snapshot(c_ref, ring).to_pandas()["body"].str.contains(MARKER).all()
    with pytest.raises(snapshots.SnapshotError, match="encrypted: a key is needed"):
        snapshots.read_snapshot(c_ref)
    s_ref = snapshots.snapshot_ref(str(lake), "sft", PIPELINE, data["dataset"], data["sft_snapshot_id"])
    assert snapshots.read_manifest(s_ref)["encryption"]["kek_ids"] == [ring.kek_id]
    assert any(MARKER in v for v in snapshots.read_snapshot(s_ref, ring).column("completion").to_pylist())

    uris = snapshots.split_file_uris(str(lake), PIPELINE, data["dataset"], data["sft_snapshot_id"])
    assert [uri.rsplit("/", 1)[1] for uri in uris] == [f"{name}.enc" for name in SPLIT_FILES]
    recorded = recorded_split_sha256(run_spec(PIPELINE, "manual__zones_1"), s_ref)
    for name, uri in zip(SPLIT_FILES, uris, strict=True):
        plain = snapshots.read_split_file(uri, ring)
        rows = [json.loads(line) for line in plain.splitlines()]
        assert rows and all(MARKER in row["completion"] for row in rows)
        assert encrypted_files.plaintext_sha256(uri, ring) == recorded[name]


def test_a_retried_build_finds_its_own_snapshot_and_split_files(built: tuple[Path, dict, dict]) -> None:
    """Expect the snapshot id derived from the plaintext: the same build again gives the same ids,
    and keeps the split files it finds intact (their ciphertext unchanged)."""
    from llmops.orchestration.finetune.data import prepare_training_data

    lake, out, data = built
    train_uri, _, _ = snapshots.split_file_uris(str(lake), PIPELINE, data["dataset"], data["sft_snapshot_id"])
    before = (lake / train_uri.split("/lake/", 1)[1]).read_bytes()
    again = prepare_training_data(PIPELINE, out["curated"]["curated_snapshot_id"], "manual__zones_1")
    assert again["sft_snapshot_id"] == data["sft_snapshot_id"]
    assert (lake / train_uri.split("/lake/", 1)[1]).read_bytes() == before


def test_a_damaged_split_file_is_written_again(tmp_path: Path) -> None:
    """Expect write_split_files to rewrite a split file that no longer decrypts, and to leave one
    that does alone."""
    from llmops.privacy.crypto import key_id

    kek = bytes(range(32))
    rows = [
        {"prompt": "p", "completion": "c", "split": "train"},
        {"prompt": "q", "completion": "d", "split": "validation"},
        {"prompt": "r", "completion": "e", "split": "test"},
    ]
    folder = str(tmp_path)
    first = snapshots.write_split_files(folder, rows, ["prompt", "completion"], kek)
    assert set(first) == set(SPLIT_FILES)
    train = tmp_path / "train.jsonl.enc"
    kept = (tmp_path / "test.jsonl.enc").read_bytes()
    train.write_bytes(train.read_bytes()[:-1])
    assert snapshots.write_split_files(folder, rows, ["prompt", "completion"], kek) == first
    assert encrypted_files.plaintext_sha256(str(train), kek) == first["train.jsonl"]
    assert (tmp_path / "test.jsonl.enc").read_bytes() == kept
    assert json.loads((tmp_path / "train.jsonl.enc.key.json").read_text())["kek_id"] == key_id(kek)


def test_record_level_zones_refuse_a_write_without_a_key(tmp_path: Path) -> None:
    """Expect curated and sft snapshots to need a key, like raw and quarantine."""
    import pyarrow as pa

    table = pa.table({"k": ["a"]})
    for zone in ("curated", "sft"):
        with pytest.raises(snapshots.SnapshotError, match="must be encrypted: no key given"):
            snapshots.write_snapshot(
                lake_root=str(tmp_path), zone=zone, pipeline="p", dataset="d", table=table, metadata={}
            )
