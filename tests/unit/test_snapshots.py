"""Snapshots: content-addressed, immutable, verified on read, encrypted where raw data lives."""

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


def test_identity_changes_the_id(tmp_path):
    a, _ = _write(str(tmp_path), _table(), zone="sft", identity={"seed": 1})
    b, _ = _write(str(tmp_path), _table(), zone="sft", identity={"seed": 2})
    assert a.snapshot_id != b.snapshot_id


def test_raw_zone_is_encrypted_and_needs_the_key(tmp_path):
    """Expect ciphertext on disk, a round trip with the key, and clear errors without or with a wrong one."""
    ref, manifest = _write(str(tmp_path), _table(), kek=KEK)
    assert manifest["encryption"]["kek_id"] and manifest["files"][0]["name"] == "data.parquet.enc"
    assert b"row 1" not in storage.read_bytes(storage.join(ref.uri, "data.parquet.enc"))
    assert snapshots.read_snapshot(ref, KEK).equals(_table())
    with pytest.raises(snapshots.SnapshotError, match="is encrypted: a key is needed"):
        snapshots.read_snapshot(ref)
    with pytest.raises(DecryptionError):
        snapshots.read_snapshot(ref, OTHER_KEK)


def test_raw_zone_refuses_plaintext(tmp_path):
    with pytest.raises(snapshots.SnapshotError, match="must be encrypted"):
        _write(str(tmp_path), _table())


def test_curated_zone_is_plain_parquet(tmp_path):
    ref, manifest = _write(str(tmp_path), _table(), zone="curated")
    assert manifest["encryption"] is None
    assert snapshots.read_snapshot(ref).equals(_table())


def test_tampered_data_is_detected(tmp_path):
    """Expect a data file that no longer matches its manifest hash to be refused."""
    ref, _ = _write(str(tmp_path), _table(), zone="curated")
    other, _ = _write(str(tmp_path / "other"), _table(7), zone="curated")
    storage.write_bytes(
        storage.join(ref.uri, "data.parquet"), storage.read_bytes(storage.join(other.uri, "data.parquet"))
    )
    with pytest.raises(snapshots.SnapshotError, match="does not match the manifest's sha256"):
        snapshots.read_snapshot(ref)


def test_folder_without_manifest_is_not_a_snapshot(tmp_path):
    """Expect an interrupted write (data but no manifest) to be invisible to readers."""
    ref, _ = _write(str(tmp_path), _table(), zone="curated")
    storage.local_path(storage.join(ref.uri, "manifest.json")).unlink()
    with pytest.raises(snapshots.SnapshotError, match="manifest.json missing"):
        snapshots.read_snapshot(ref)


def test_latest_pointer(tmp_path):
    lake = str(tmp_path)
    with pytest.raises(snapshots.SnapshotError, match="run the p__ingest DAG first"):
        snapshots.get_latest(lake, "curated", "p", "d")
    ref, _ = _write(lake, _table(), zone="curated")
    snapshots.set_latest(ref, lake)
    assert snapshots.get_latest(lake, "curated", "p", "d") == ref
