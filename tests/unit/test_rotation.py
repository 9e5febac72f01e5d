"""KEK rotation over a real (local) lake: data untouched, keys re-wrapped, idempotent and resumable."""

from __future__ import annotations

import base64
import json
import os
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest

from llmops import snapshots, storage
from llmops.privacy import crypto, rotation
from llmops.privacy.crypto import DecryptionError, key_id

if TYPE_CHECKING:
    from pathlib import Path

OLD = bytes(range(32))
NEW = bytes(range(100, 132))
NEWER = bytes(range(200, 232))
STRANGER = bytes(range(1, 33))


def _table(n: int, tag: str) -> pa.Table:
    return pa.table({"id": [f"{tag}{i}" for i in range(n)], "text": [f"{tag} row {i}" for i in range(n)]})


def _build_lake(root: Path) -> dict[str, snapshots.SnapshotRef]:
    """Two one-part raw snapshots, a two-part quarantine snapshot, and a plaintext curated one
    (written before every zone was encrypted)."""
    lake = str(root)
    refs = {}
    for name, n in (("tickets", 40), ("users", 25)):
        refs[name], _ = snapshots.write_snapshot(
            lake_root=lake,
            zone="raw",
            pipeline="p",
            dataset=name,
            table=_table(n, name),
            metadata={},
            kek=OLD,
        )
    parts = [
        snapshots.stage_part(
            lake_root=lake,
            pipeline="p",
            dataset="rejects",
            run_id="r1",
            part=i,
            batches=_table(10 + i, f"q{i}").to_batches(),
            schema=_table(1, "x").schema,
            kek=OLD,
        )
        for i in range(2)
    ]
    refs["rejects"], _ = snapshots.commit_parts(
        lake_root=lake, zone="quarantine", pipeline="p", dataset="rejects", parts=parts, metadata={}
    )
    refs["curated"] = _plain_snapshot(lake, "curated", "clean", _table(5, "c"))
    return refs


def _plain_snapshot(lake: str, zone: str, dataset: str, table: pa.Table) -> snapshots.SnapshotRef:
    """A plaintext snapshot as curated ones were written before every zone was encrypted."""
    import hashlib
    import io

    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    ref = snapshots.snapshot_ref(lake, zone, "p", dataset, digest[:20])
    storage.write_bytes(storage.join(ref.uri, "part-00000.parquet"), data)
    entry = {"name": "part-00000.parquet", "rows": table.num_rows, "sha256": digest, "bytes": len(data)}
    entry |= {"stored_sha256": digest, "stored_bytes": len(data), "key_file": None}
    manifest = {"snapshot_id": ref.snapshot_id, "zone": zone, "pipeline": "p", "dataset": dataset}
    manifest |= {"files": [entry], "encryption": None, "content_sha256": snapshots.content_sha256([entry])}
    storage.write_json(storage.join(ref.uri, snapshots.MANIFEST), manifest)
    return ref


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _non_key_files(root: Path) -> dict[str, bytes]:
    return {
        k: v
        for k, v in _files(root).items()
        if not k.endswith(rotation.KEY_FILE_SUFFIX) and not k.endswith(rotation.ROTATION_RECORD)
    }


def _key_files(root: Path) -> list[str]:
    return storage.list_files(str(root), "**/*.key.json")


def _kek_ids(root: Path) -> set[str]:
    return {storage.read_json(u)["kek_id"] for u in _key_files(root)}


@pytest.fixture
def lake(tmp_path: Path) -> tuple[Path, dict[str, snapshots.SnapshotRef]]:
    root = tmp_path / "lake"
    return root, _build_lake(root)


def test_rotation_rewraps_every_key_and_leaves_data_and_manifests_alone(lake):
    """Expect all 4 parts re-wrapped, data and manifests byte-identical, new key reads, old key fails."""
    root, refs = lake
    before = _non_key_files(root)
    expected = {name: snapshots.read_snapshot(ref, OLD) for name, ref in refs.items()}

    summary = rotation.rotate_lake_keys(str(root), OLD, NEW)

    assert summary["errors"] == []
    assert (summary["snapshots"], summary["parts"], summary["rewrapped"], summary["skipped"]) == (3, 4, 4, 0)
    assert summary["records_written"] == 3
    assert (summary["from_kek_id"], summary["to_kek_id"]) == (key_id(OLD), key_id(NEW))
    assert _non_key_files(root) == before  # ciphertext and manifests untouched
    assert _kek_ids(root) == {key_id(NEW)}
    for name, ref in refs.items():
        assert snapshots.read_snapshot(ref, NEW).equals(expected[name])
    manifest = snapshots.read_manifest(refs["tickets"])
    assert manifest["encryption"]["kek_ids"] == [key_id(OLD)]  # immutable: the record says what changed
    with pytest.raises(DecryptionError, match=r"wrong key: kek_id mismatch .* given " + key_id(OLD)):
        snapshots.read_snapshot(refs["tickets"], OLD)

    record = storage.read_json(storage.join(refs["rejects"].uri, rotation.ROTATION_RECORD))
    assert record["from_kek_id"] == key_id(OLD) and record["to_kek_id"] == key_id(NEW)
    assert record["parts"] == ["part-00000.parquet.enc", "part-00001.parquet.enc"]
    assert record["complete"] is True and record["pending_parts"] == [] and record["history"] == []
    assert record["snapshot_id"] == refs["rejects"].snapshot_id and record["rotated_at"]
    assert not storage.exists(storage.join(refs["curated"].uri, rotation.ROTATION_RECORD))


def test_rewritten_key_file_is_private_and_holds_no_key_material(lake):
    root, refs = lake
    rotation.rotate_lake_keys(str(root), OLD, NEW)
    key_file = storage.local_path(storage.join(refs["users"].uri, "part-00000.parquet.enc.key.json"))
    assert (key_file.stat().st_mode & 0o077) == 0
    text = key_file.read_text()
    for secret in (OLD, NEW):
        assert base64.b64encode(secret).decode() not in text and secret.hex() not in text
    assert set(json.loads(text)) == {"kek_id", "algorithm", "wrapped_dek_b64"}


def test_second_run_is_a_no_op(lake):
    """Expect the second run to skip every part and leave every file, record included, byte-identical."""
    root, _ = lake
    rotation.rotate_lake_keys(str(root), OLD, NEW)
    after_first = _files(root)
    mtimes = {p: os.stat(root / p).st_mtime_ns for p in after_first}

    summary = rotation.rotate_lake_keys(str(root), OLD, NEW)

    assert (summary["rewrapped"], summary["skipped"], summary["records_written"]) == (0, 4, 0)
    assert summary["errors"] == []
    assert _files(root) == after_first
    assert {p: os.stat(root / p).st_mtime_ns for p in after_first} == mtimes


def test_dry_run_changes_nothing(lake):
    root, refs = lake
    before = _files(root)
    summary = rotation.rotate_lake_keys(str(root), OLD, NEW, dry_run=True)
    assert summary["dry_run"] is True and summary["rewrapped"] == 4 and summary["errors"] == []
    assert summary["records_written"] == 0
    assert _files(root) == before
    assert snapshots.read_snapshot(refs["tickets"], OLD).num_rows == 40


def test_wrong_old_key_names_each_part_and_rewrites_nothing(lake):
    root, refs = lake
    before = _files(root)
    summary = rotation.rotate_lake_keys(str(root), STRANGER, NEW)
    assert summary["rewrapped"] == 0 and len(summary["errors"]) == 4
    for error in summary["errors"]:
        assert error["path"].endswith(".parquet.enc.key.json")
        assert error["path"] in error["error"]
        assert f"wrapped under kek_id {key_id(OLD)}" in error["error"] and "wrong old key" in error["error"]
    assert _files(root) == before  # no record either: nothing was rotated
    assert snapshots.read_snapshot(refs["users"], OLD).num_rows == 25


def test_a_corrupted_key_file_is_reported_and_the_rest_rotates(lake):
    root, refs = lake
    bad = storage.join(refs["users"].uri, "part-00000.parquet.enc.key.json")
    record = storage.read_json(bad)
    blob = bytearray(base64.b64decode(record["wrapped_dek_b64"]))
    blob[-1] ^= 1
    record["wrapped_dek_b64"] = base64.b64encode(bytes(blob)).decode()
    storage.write_json(bad, record)
    corrupted = storage.read_bytes(bad)

    summary = rotation.rotate_lake_keys(str(root), OLD, NEW)

    assert summary["rewrapped"] == 3
    assert [e["path"] for e in summary["errors"]] == [bad]
    assert "cannot unwrap with the old key" in summary["errors"][0]["error"]
    assert "failed authentication" in summary["errors"][0]["error"]
    assert storage.read_bytes(bad) == corrupted  # left exactly as found
    assert snapshots.read_snapshot(refs["tickets"], NEW).num_rows == 40


def test_resumes_after_a_crash_mid_snapshot(lake):
    """Expect a run interrupted after one of two parts to be finished by the next run, record complete."""
    root, refs = lake
    first, second = (
        storage.join(refs["rejects"].uri, f"part-0000{i}.parquet.enc.key.json") for i in range(2)
    )
    assert rotation.rotate_key_file(first, OLD, NEW) == "rewrapped"  # ... and the process dies here
    assert storage.read_json(first)["kek_id"] == key_id(NEW)
    assert storage.read_json(second)["kek_id"] == key_id(OLD)
    with pytest.raises(DecryptionError):  # half-rotated: neither key alone reads the whole snapshot
        snapshots.read_snapshot(refs["rejects"], OLD)

    summary = rotation.rotate_lake_keys(str(root), OLD, NEW)

    assert (summary["rewrapped"], summary["skipped"], summary["errors"]) == (3, 1, [])
    assert snapshots.read_snapshot(refs["rejects"], NEW).num_rows == 21
    record = storage.read_json(storage.join(refs["rejects"].uri, rotation.ROTATION_RECORD))
    assert record["parts"] == ["part-00000.parquet.enc", "part-00001.parquet.enc"] and record["complete"]


def test_crash_after_the_last_part_but_before_the_record(lake):
    root, refs = lake
    for uri in _key_files(root):
        rotation.rotate_key_file(uri, OLD, NEW)
    summary = rotation.rotate_lake_keys(str(root), OLD, NEW)
    assert (summary["rewrapped"], summary["skipped"], summary["records_written"]) == (0, 4, 3)
    record = storage.read_json(storage.join(refs["tickets"].uri, rotation.ROTATION_RECORD))
    assert record["to_kek_id"] == key_id(NEW) and record["parts"] == ["part-00000.parquet.enc"]


def test_a_failed_part_leaves_an_incomplete_record_that_a_later_run_completes(lake):
    root, refs = lake
    second = storage.join(refs["rejects"].uri, "part-00001.parquet.enc.key.json")
    saved = storage.read_bytes(second)
    storage.delete(second)
    summary = rotation.rotate_lake_keys(str(root), OLD, NEW)
    assert [e["path"] for e in summary["errors"]] == [second]
    assert "listed in the manifest is missing" in summary["errors"][0]["error"]
    record_uri = storage.join(refs["rejects"].uri, rotation.ROTATION_RECORD)
    record = storage.read_json(record_uri)
    assert record["complete"] is False and record["pending_parts"] == ["part-00001.parquet.enc"]

    storage.write_bytes(second, saved)  # e.g. restored from backup
    summary = rotation.rotate_lake_keys(str(root), OLD, NEW)
    assert (summary["rewrapped"], summary["errors"]) == (1, [])
    record = storage.read_json(record_uri)
    assert record["complete"] is True and record["pending_parts"] == [] and record["history"] == []
    assert snapshots.read_snapshot(refs["rejects"], NEW).num_rows == 21


def test_a_snapshot_born_under_the_new_key_gets_no_record(lake):
    root, _ = lake
    rotation.rotate_lake_keys(str(root), OLD, NEW)
    fresh, _ = snapshots.write_snapshot(
        lake_root=str(root),
        zone="raw",
        pipeline="p",
        dataset="fresh",
        table=_table(3, "f"),
        metadata={},
        kek=NEW,
    )
    summary = rotation.rotate_lake_keys(str(root), OLD, NEW)  # the catch-up run after switching keys
    assert (summary["snapshots"], summary["rewrapped"], summary["skipped"]) == (4, 0, 5)
    assert summary["records_written"] == 0
    assert not storage.exists(storage.join(fresh.uri, rotation.ROTATION_RECORD))


def test_consecutive_rotations_keep_history(lake):
    root, refs = lake
    rotation.rotate_lake_keys(str(root), OLD, NEW)
    rotation.rotate_lake_keys(str(root), NEW, NEWER)
    record = storage.read_json(storage.join(refs["users"].uri, rotation.ROTATION_RECORD))
    assert (record["from_kek_id"], record["to_kek_id"]) == (key_id(NEW), key_id(NEWER))
    assert [(h["from_kek_id"], h["to_kek_id"]) for h in record["history"]] == [(key_id(OLD), key_id(NEW))]
    assert snapshots.read_snapshot(refs["users"], NEWER).num_rows == 25


def test_staged_parts_are_rotated_so_a_later_commit_stays_readable(tmp_path):
    lake = str(tmp_path)
    part = snapshots.stage_part(
        lake_root=lake,
        pipeline="p",
        dataset="late",
        run_id="r9",
        part=0,
        batches=_table(7, "s").to_batches(),
        schema=_table(1, "x").schema,
        kek=OLD,
    )
    summary = rotation.rotate_lake_keys(lake, OLD, NEW)
    assert (summary["snapshots"], summary["uncommitted_folders"], summary["rewrapped"]) == (0, 1, 1)
    ref, _ = snapshots.commit_parts(
        lake_root=lake, zone="raw", pipeline="p", dataset="late", parts=[part], metadata={}
    )
    assert snapshots.read_snapshot(ref, NEW).num_rows == 7


def test_kms_wrapped_parts_are_left_to_kms(lake):
    root, refs = lake
    kms_record = {
        "kek_id": "kms:arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "algorithm": "AES-256-GCM-STREAM-v1+AWS-KMS",
        "wrapped_dek_b64": base64.b64encode(b"\x01" * 150).decode(),
    }
    kms_file = storage.join(refs["tickets"].uri, "part-00000.parquet.enc.key.json")
    storage.write_json(kms_file, kms_record)
    summary = rotation.rotate_lake_keys(str(root), OLD, NEW)
    assert (summary["kms_managed"], summary["rewrapped"], summary["errors"]) == (1, 3, [])
    assert storage.read_json(kms_file) == kms_record


def test_same_old_and_new_key_is_refused(lake):
    root, _ = lake
    with pytest.raises(ValueError, match="same key"):
        rotation.rotate_lake_keys(str(root), OLD, OLD)
    with pytest.raises(crypto.KeyMaterialError, match="new KEK must be 32 bytes"):
        rotation.rotate_lake_keys(str(root), OLD, b"short")


def _summary(out: str) -> dict:
    """The JSON summary the CLI writes last (log lines may come before it on stdout)."""
    return json.loads(out[out.rindex("\n{\n") + 1 :] if not out.startswith("{\n") else out)


def _key_file(path: Path, key: bytes) -> Path:
    path.write_text(base64.b64encode(key).decode() + "\n")
    path.chmod(0o600)
    return path


def test_cli_rotates_from_the_current_kek(lake, tmp_path, monkeypatch, capsys):
    """Expect the CLI to take the old key from keys.get_kek() (key file here) and print the summary."""
    root, refs = lake
    monkeypatch.setenv("LLMOPS_KEK_FILE", str(_key_file(tmp_path / "current.key", OLD)))
    monkeypatch.setenv("LLMOPS_KEK_CONN_ID", "llmops_kek_absent_in_this_test")
    monkeypatch.setenv("LLMOPS_LAKE_ROOT", str(root))
    new_file = _key_file(tmp_path / "new.key", NEW)

    assert rotation.main(["--new-key-file", str(new_file), "--dry-run"]) == 0
    assert _summary(capsys.readouterr().out)["rewrapped"] == 4
    assert _kek_ids(root) == {key_id(OLD)}

    assert rotation.main(["--new-key-file", str(new_file)]) == 0
    out = capsys.readouterr().out
    assert _summary(out)["rewrapped"] == 4
    assert base64.b64encode(NEW).decode() not in out and base64.b64encode(OLD).decode() not in out
    assert snapshots.read_snapshot(refs["users"], NEW).num_rows == 25

    # A current KEK that wraps nothing in the lake: every part is an error, exit status 1.
    monkeypatch.setenv("LLMOPS_KEK_FILE", str(_key_file(tmp_path / "stranger.key", STRANGER)))
    assert rotation.main(["--new-key-file", str(_key_file(tmp_path / "newer.key", NEWER))]) == 1
    assert len(_summary(capsys.readouterr().out)["errors"]) == 4


def test_cli_refuses_a_missing_new_key_file(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        rotation.main(["--new-key-file", str(tmp_path / "typo.key"), "--lake-root", str(tmp_path)])
    assert not (tmp_path / "typo.key").exists()
