"""Snapshots: content-addressed, immutable, verified on read, encrypted in every zone."""

from __future__ import annotations

import pyarrow as pa
import pytest

from llmops import snapshots, storage
from llmops.privacy.crypto import DecryptionError

KEK = bytes(range(32))
OTHER_KEK = bytes(range(1, 33))


def _table(n: int = 5) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"row {i}" for i in range(n)]})


def _write(lake: str, table: pa.Table, zone: str = "raw", **kw):
    return snapshots.write_snapshot(
        lake_root=lake, zone=zone, pipeline="p", dataset="d", table=table, metadata={"note": "x"}, **kw
    )


def test_same_data_same_snapshot(tmp_path):
    """Expect the same rows to give the same id, and a second write to reuse the committed snapshot."""
    lake = str(tmp_path)
    ref1, m1 = _write(lake, _table(), kek=KEK, run_id="a")
    ref2, m2 = _write(lake, _table(), kek=KEK, run_id="b")
    assert ref1 == ref2
    assert m2["created_by_run"] == "a"  # the first commit stands
    ref3, _ = _write(lake, _table(6), kek=KEK)
    assert ref3.snapshot_id != ref1.snapshot_id


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: _flip_byte(folder / "part-00000.parquet.enc"),
        lambda folder: (folder / "part-00000.parquet.enc").unlink(),
        lambda folder: (folder / "part-00000.parquet.enc.key.json").unlink(),
        lambda folder: (folder / "manifest.json").write_text("{broken"),
    ],
    ids=["flipped byte", "part missing", "key missing", "manifest unreadable"],
)
def test_a_damaged_snapshot_is_written_again_on_reuse(tmp_path, damage):
    """Re-ingesting the same content over a damaged folder repairs it instead of reusing it (the
    source was blocked until someone deleted the folder by hand)."""
    lake = str(tmp_path)
    ref, _ = _write(lake, _table(), kek=KEK, run_id="a")
    damage(tmp_path / "raw" / "p" / "d" / ref.snapshot_id)
    again, manifest = _write(lake, _table(), kek=KEK, run_id="b")
    assert again == ref and manifest["created_by_run"] == "b"
    assert snapshots.read_snapshot(again, KEK).equals(_table())


def _flip_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_identity_changes_the_id(tmp_path):
    a, _ = _write(str(tmp_path), _table(), zone="sft", kek=KEK, identity={"seed": 1})
    b, _ = _write(str(tmp_path), _table(), zone="sft", kek=KEK, identity={"seed": 2})
    assert a.snapshot_id != b.snapshot_id


def test_raw_zone_is_encrypted_and_needs_the_key(tmp_path):
    """Expect ciphertext on disk, a round trip with the key, and clear errors without or with a wrong one."""
    ref, manifest = _write(str(tmp_path), _table(), kek=KEK)
    assert manifest["encryption"]["kek_ids"] and manifest["files"][0]["name"] == "part-00000.parquet.enc"
    assert b"row 1" not in storage.read_bytes(storage.join(ref.uri, "part-00000.parquet.enc"))
    assert snapshots.read_snapshot(ref, KEK).equals(_table())
    with pytest.raises(snapshots.SnapshotError, match="is encrypted: a key is needed"):
        snapshots.read_snapshot(ref)
    with pytest.raises(DecryptionError):
        snapshots.read_snapshot(ref, OTHER_KEK)


def test_raw_zone_refuses_plaintext(tmp_path):
    with pytest.raises(snapshots.SnapshotError, match="must be encrypted"):
        _write(str(tmp_path), _table())


@pytest.mark.parametrize("zone", ["curated", "sft"])
def test_every_record_zone_is_encrypted(tmp_path, zone):
    """Expect curated and sft snapshots encrypted like raw ones, with the id of the plaintext."""
    ref, manifest = _write(str(tmp_path), _table(), zone=zone, kek=KEK)
    assert manifest["encryption"]["kek_ids"] and manifest["files"][0]["name"] == "part-00000.parquet.enc"
    assert b"row 1" not in storage.read_bytes(storage.join(ref.uri, "part-00000.parquet.enc"))
    assert snapshots.read_snapshot(ref, KEK).equals(_table())
    again, _ = _write(str(tmp_path / "again"), _table(), zone=zone, kek=OTHER_KEK)
    assert again.snapshot_id == ref.snapshot_id  # content-addressed: the data keys do not count
    with pytest.raises(snapshots.SnapshotError, match="must be encrypted"):
        _write(str(tmp_path), _table(), zone=zone)


def test_tampered_data_is_detected(tmp_path):
    """Expect a data file that no longer matches its manifest hash to be refused (here: another
    snapshot's part and key file, which decrypt fine)."""
    ref, _ = _write(str(tmp_path), _table(), zone="curated", kek=KEK)
    other, _ = _write(str(tmp_path / "other"), _table(7), zone="curated", kek=KEK)
    for name in ("part-00000.parquet.enc", "part-00000.parquet.enc.key.json"):
        storage.write_bytes(storage.join(ref.uri, name), storage.read_bytes(storage.join(other.uri, name)))
    with pytest.raises(
        snapshots.SnapshotError, match="part-00000.parquet.enc does not match the manifest's sha256"
    ):
        snapshots.read_snapshot(ref, KEK)


def test_folder_without_manifest_is_not_a_snapshot(tmp_path):
    """Expect an interrupted write (data but no manifest) to be invisible to readers."""
    ref, _ = _write(str(tmp_path), _table(), zone="curated", kek=KEK)
    storage.local_path(storage.join(ref.uri, "manifest.json")).unlink()
    with pytest.raises(snapshots.SnapshotError, match="manifest.json missing"):
        snapshots.read_snapshot(ref, KEK)


def test_latest_pointer(tmp_path):
    lake = str(tmp_path)
    with pytest.raises(snapshots.SnapshotError, match="run the p__ingest DAG first"):
        snapshots.get_latest(lake, "curated", "p", "d")
    ref, _ = _write(lake, _table(), zone="curated", kek=KEK)
    snapshots.set_latest(ref, lake)
    assert snapshots.get_latest(lake, "curated", "p", "d") == ref


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield pa.record_batch(
            {
                "id": [f"r{i:06d}" for i in range(start, min(n, start + size))],
                "text": ["x" * 20] * (min(n, start + size) - start),
            }
        )


SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string())])


def test_staged_parts_are_deterministic_whatever_the_batching(tmp_path):
    """Expect the same rows to give the same part hash however the source cut its batches."""
    kw = {
        "lake_root": str(tmp_path),
        "pipeline": "p",
        "dataset": "d",
        "part": 0,
        "schema": SCHEMA,
        "kek": KEK,
    }
    a = snapshots.stage_part(run_id="a", batches=_batches(2500, 7), row_group_rows=1000, **kw)
    b = snapshots.stage_part(run_id="b", batches=_batches(2500, 1000), row_group_rows=1000, **kw)
    assert a["sha256"] == b["sha256"] and a["rows"] == 2500
    assert a["stored_sha256"] != b["stored_sha256"]  # fresh data key and nonce per file


def test_multi_part_commit_and_retry(tmp_path):
    """Expect parts to commit into one snapshot, and a re-commit after a partial move to finish the job."""
    lake = str(tmp_path)
    parts = [
        snapshots.stage_part(
            lake_root=lake,
            pipeline="p",
            dataset="d",
            run_id="r",
            part=i,
            batches=_batches(300, 50),
            schema=SCHEMA,
            kek=KEK,
        )
        for i in range(3)
    ]
    # A commit killed after moving the first part: the data is in place but there is no manifest.
    first = parts[0]
    target = snapshots.snapshot_ref(lake, "raw", "p", "d", snapshots.snapshot_id_for(parts, None))
    snapshots._move(first["staging_uri"], storage.join(target.uri, first["name"]))
    with pytest.raises(snapshots.SnapshotError, match="manifest.json missing"):
        snapshots.read_manifest(target)
    ref, manifest = snapshots.commit_parts(
        lake_root=lake, zone="raw", pipeline="p", dataset="d", parts=parts, metadata={}
    )
    assert ref == target
    assert manifest["row_count"] == 900 and len(manifest["files"]) == 3
    assert snapshots.read_snapshot(ref, KEK).num_rows == 900
    assert not list((tmp_path / "_staging").rglob("*.enc"))
