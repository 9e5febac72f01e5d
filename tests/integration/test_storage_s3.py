"""The lake API on a real S3 endpoint (moto server on 127.0.0.1) and on a local folder: one code path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
from botocore.exceptions import EndpointConnectionError

from llmops import snapshots, storage

KEK = bytes(range(32))


@pytest.fixture(params=["s3", "local"])
def lake(request: pytest.FixtureRequest, tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A lake root: a prefix in a fresh S3 bucket (through an Airflow connection) or a local folder."""
    if request.param == "local":
        return str(tmp_path / "lake")
    bucket, conn_id = request.getfixturevalue("s3_bucket")
    monkeypatch.setenv("LLMOPS_LAKE_CONN_ID", conn_id)
    return f"s3://{bucket}/lake"


def _table(n: int = 5) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"row {i}" for i in range(n)]})


def test_bytes_and_json_round_trip(lake):
    """Expect writes to read back, overwrite whole, and exists to tell files from absent keys."""
    uri = storage.join(lake, "a", "b", "blob.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"\x00first")
    assert storage.exists(uri) and storage.read_bytes(uri) == b"\x00first"
    storage.write_bytes(uri, b"second")
    assert storage.read_bytes(uri) == b"second"
    doc = storage.join(lake, "doc.json")
    storage.write_json(doc, {"b": [1, 2], "a": "x"})
    assert storage.read_json(doc) == {"a": "x", "b": [1, 2]}
    assert storage.read_bytes(doc).decode().startswith('{\n  "a"')  # sorted, indented
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(lake, "nope.bin"))


def test_list_dirs(lake):
    for name in ("z/1.txt", "a/2.txt", "a/deep/3.txt", "m/4.txt", "top.txt"):
        storage.write_bytes(storage.join(lake, "root", name), b"x")
    assert storage.list_dirs(storage.join(lake, "root")) == ["a", "m", "z"]
    assert storage.list_dirs(storage.join(lake, "root", "a")) == ["deep"]
    assert storage.list_dirs(storage.join(lake, "absent")) == []


def test_list_files_patterns(lake):
    """Expect sorted full URIs; '*' within one level, '**/' descending; hidden names skipped."""
    root = storage.join(lake, "landing")
    for name in ("b.csv", "a.csv", "notes.txt", "sub/c.csv", ".a.csv.123.tmp", ".hidden/d.csv"):
        storage.write_bytes(storage.join(root, name), name.encode())
    assert storage.list_files(root) == [f"{root}/{n}" for n in ("a.csv", "b.csv", "notes.txt")]
    assert storage.list_files(root + "/", "*.csv") == [f"{root}/a.csv", f"{root}/b.csv"]
    assert storage.list_files(root, "**/*.csv") == [f"{root}/{n}" for n in ("a.csv", "b.csv", "sub/c.csv")]
    assert storage.list_files(root, "sub/*") == [f"{root}/sub/c.csv"]
    assert storage.list_files(storage.join(lake, "absent")) == []
    with pytest.raises(ValueError, match="stay inside"):
        storage.list_files(root, "../*")


def test_delete_file_and_prefix(lake):
    """Expect a prefix delete to take everything under it but not a sibling sharing its name's start."""
    for name in ("a/1.txt", "a/deep/2.txt", "ab.txt", "keep/3.txt"):
        storage.write_bytes(storage.join(lake, name), b"x")
    storage.delete(storage.join(lake, "keep", "3.txt"))
    assert not storage.exists(storage.join(lake, "keep", "3.txt"))
    storage.delete(storage.join(lake, "a"))
    assert storage.list_files(lake, "**") == [storage.join(lake, "ab.txt")]
    storage.delete(storage.join(lake, "never-written"))  # nothing there: not an error
    storage.delete(lake)
    assert storage.list_files(lake, "**") == []


def test_copy_file_and_prefix(lake):
    src = storage.join(lake, "src")
    storage.write_bytes(storage.join(src, "one.bin"), b"1")
    storage.write_bytes(storage.join(src, "nested", "two.bin"), b"22")
    storage.copy(storage.join(src, "one.bin"), storage.join(lake, "single", "copy.bin"))
    assert storage.read_bytes(storage.join(lake, "single", "copy.bin")) == b"1"
    storage.copy(src, storage.join(lake, "dst"))
    assert storage.list_files(storage.join(lake, "dst"), "**") == [
        storage.join(lake, "dst", "nested", "two.bin"),
        storage.join(lake, "dst", "one.bin"),
    ]
    assert storage.read_bytes(storage.join(lake, "dst", "nested", "two.bin")) == b"22"
    assert storage.exists(storage.join(src, "one.bin"))  # a copy, not a move
    with pytest.raises(FileNotFoundError):
        storage.copy(storage.join(lake, "absent"), storage.join(lake, "x"))


@pytest.mark.parametrize("zone", ["curated", "raw"])
def test_snapshot_round_trip(lake, zone):
    """Expect write/read/LATEST to work unchanged with the lake on S3, encrypted in every zone."""
    kek = KEK
    ref, manifest = snapshots.write_snapshot(
        lake_root=lake, zone=zone, pipeline="p", dataset="d", table=_table(), metadata={"n": 1}, kek=kek
    )
    assert ref.uri.startswith(lake) and manifest["row_count"] == 5
    again, _ = snapshots.write_snapshot(
        lake_root=lake, zone=zone, pipeline="p", dataset="d", table=_table(), metadata={"n": 1}, kek=kek
    )
    assert again == ref  # content-addressed: found, not rewritten
    assert snapshots.read_snapshot(ref, kek).equals(_table())
    snapshots.set_latest(ref, lake)
    assert snapshots.get_latest(lake, zone, "p", "d") == ref
    stored = [u for u in storage.list_files(ref.uri, "**") if not u.endswith(".json")]
    assert stored
    assert all(b"row 1" not in storage.read_bytes(u) for u in stored)
    with pytest.raises(snapshots.SnapshotError, match="encrypted"):
        snapshots.read_snapshot(ref)


def test_lake_objects_really_are_in_the_bucket(s3_bucket, s3_client, monkeypatch):
    """Expect the objects in S3 itself (seen by a separate client), nothing local, no bucket deletion."""
    bucket, conn_id = s3_bucket
    monkeypatch.setenv("LLMOPS_LAKE_CONN_ID", conn_id)
    lake = f"s3://{bucket}"
    assert not storage.is_local(lake)
    with pytest.raises(ValueError, match="not on the local filesystem"):
        storage.local_path(lake)
    storage.write_json(storage.join(lake, "x", "doc.json"), {"ok": True})
    body = s3_client.get_object(Bucket=bucket, Key="x/doc.json")["Body"].read()
    assert json.loads(body) == {"ok": True}
    storage.delete(lake)  # the bucket root: emptied, the bucket kept
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    s3_client.head_bucket(Bucket=bucket)


def test_connection_id_selects_the_endpoint(s3_bucket, monkeypatch):
    """Expect the connection (not the environment) to pick the endpoint, and the cache per connection."""
    bucket, conn_id = s3_bucket
    monkeypatch.setenv(
        "AIRFLOW_CONN_LLMOPS_S3_NOWHERE",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "k",
                "password": "s",
                "extra": {
                    "endpoint_url": "http://127.0.0.1:9",
                    "region_name": "us-east-1",
                    "config_kwargs": {"retries": {"max_attempts": 1}},  # fail fast
                },
            }
        ),
    )
    uri = f"s3://{bucket}/f.txt"
    storage.write_bytes(uri, b"here", conn_id=conn_id)
    assert storage.filesystem(uri, conn_id=conn_id)[0] is storage.filesystem(uri, conn_id=conn_id)[0]
    monkeypatch.setenv("LLMOPS_LAKE_CONN_ID", conn_id)
    assert storage.read_bytes(uri) == b"here"
    monkeypatch.setenv("LLMOPS_LAKE_CONN_ID", "llmops_s3_nowhere")
    assert storage.filesystem(uri)[0] is not storage.filesystem(uri, conn_id=conn_id)[0]
    with pytest.raises(EndpointConnectionError, match="127.0.0.1:9"):
        storage.read_bytes(uri)


def test_without_airflow_the_aws_environment_is_used(s3_bucket, s3_server):
    """Expect the training subprocess's path: no Airflow import, credentials from the AWS env vars."""
    bucket, _ = s3_bucket
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["airflow"] = None  # as if Airflow were not installed
        from llmops import storage
        assert "airflow" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
        storage.write_bytes("s3://{bucket}/plain/x.bin", b"no airflow")
        print(storage.read_bytes("s3://{bucket}/plain/x.bin").decode())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW_CONN_"))}
    env.update(
        AWS_ACCESS_KEY_ID="env-key-id",
        AWS_SECRET_ACCESS_KEY="env-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=s3_server,
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "no airflow"


def test_importing_storage_does_not_import_airflow():
    script = "import sys, llmops.storage, llmops.snapshots; print('airflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
