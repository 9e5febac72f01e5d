"""Data-key wrapping with AWS KMS, against moto's KMS on 127.0.0.1, through an Airflow AWS connection."""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from llmops.privacy import crypto, keys
from llmops.privacy.crypto import DecryptionError, KeyMaterialError, WrappedKey

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

LOCAL_KEK = bytes(range(32))
# The moto server of tests/integration/conftest.py (s3_server) accepts any credentials; these match it.
S3_TEST_KEY_ID = "llmops-test-key-id"
S3_TEST_SECRET = "llmops-test-secret"
S3_REGION = "us-east-1"


@pytest.fixture
def kms_conn(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An Airflow AWS connection to the moto server (which serves KMS too); yields its id."""
    conn_id = f"llmops_kms_{uuid.uuid4().hex[:8]}"
    for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)  # real credentials must not reach the test endpoint
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps(
            {
                "conn_type": "aws",
                "login": S3_TEST_KEY_ID,
                "password": S3_TEST_SECRET,
                "extra": {"endpoint_url": s3_server, "region_name": S3_REGION},
            }
        ),
    )
    yield conn_id


@pytest.fixture
def kms_client(s3_server: str) -> Any:
    """A plain boto3 KMS client on the test endpoint: to set keys up and look behind the code's back."""
    import boto3

    return boto3.client(
        "kms",
        endpoint_url=s3_server,
        aws_access_key_id=S3_TEST_KEY_ID,
        aws_secret_access_key=S3_TEST_SECRET,
        region_name=S3_REGION,
    )


def _new_key(kms_client: Any, **kwargs: Any) -> tuple[str, str]:
    """A fresh KMS key with an alias; returns (arn, alias name)."""
    meta = kms_client.create_key(Description="llmops test", **kwargs)["KeyMetadata"]
    alias = f"alias/llmops-test-{uuid.uuid4().hex[:10]}"
    kms_client.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    return meta["Arn"], alias


@pytest.fixture
def kms_key(kms_client: Any) -> tuple[str, str]:
    return _new_key(kms_client)


def test_wrap_and_unwrap_a_data_key(kms_conn, kms_key, caplog):
    """Expect a round trip, the record naming the key ARN (not the alias), and no key material in it or the logs."""
    caplog.set_level(logging.DEBUG)
    arn, alias = kms_key
    wrapper = keys.KmsKeyWrapper(alias, kms_conn)
    dek = os.urandom(32)

    wrapped = wrapper.wrap(dek)

    assert wrapped.kek_id == f"kms:{arn}" and wrapped.algorithm == keys.KMS_ALGORITHM
    record = json.dumps(wrapped.to_dict())
    assert WrappedKey.from_dict(json.loads(record)) == wrapped  # the sidecar format of crypto, unchanged
    assert wrapper.unwrap(wrapped) == dek
    assert keys.kms_unwrap_dek(wrapped, kms_conn) == dek
    assert keys.kms_unwrap_dek(keys.kms_wrap_dek(dek, arn, kms_conn), kms_conn) == dek
    assert wrapper.kek_id == f"kms:{arn}"
    for text in (record, caplog.text, repr(wrapper)):
        assert base64.b64encode(dek).decode() not in text and dek.hex() not in text


def test_each_wrap_is_fresh(kms_conn, kms_key):
    wrapper = keys.KmsKeyWrapper(kms_key[0], kms_conn)
    dek = os.urandom(32)
    assert wrapper.wrap(dek).wrapped_dek_b64 != wrapper.wrap(dek).wrapped_dek_b64


def test_encryption_context_binds_the_wrapped_key_to_llmops(kms_conn, kms_key, kms_client):
    """Expect KMS to refuse our blob without llmops' context, and our unwrap to refuse a context-less blob."""
    arn, _ = kms_key
    wrapper = keys.KmsKeyWrapper(arn, kms_conn)
    dek = os.urandom(32)
    blob = base64.b64decode(wrapper.wrap(dek).wrapped_dek_b64)
    with pytest.raises(kms_client.exceptions.InvalidCiphertextException):
        kms_client.decrypt(CiphertextBlob=blob)
    with pytest.raises(kms_client.exceptions.InvalidCiphertextException):
        kms_client.decrypt(CiphertextBlob=blob, EncryptionContext={"llmops:purpose": "something-else"})
    assert (
        kms_client.decrypt(CiphertextBlob=blob, EncryptionContext=keys.KMS_ENCRYPTION_CONTEXT)["Plaintext"]
        == dek
    )

    foreign = kms_client.encrypt(KeyId=arn, Plaintext=dek)["CiphertextBlob"]  # same key, no context
    forged = WrappedKey(f"kms:{arn}", keys.KMS_ALGORITHM, base64.b64encode(foreign).decode())
    with pytest.raises(DecryptionError, match="failed authentication"):
        wrapper.unwrap(forged)


def test_wrong_kms_key_is_a_clear_error(kms_conn, kms_client):
    arn_a, _ = _new_key(kms_client)
    arn_b, alias_b = _new_key(kms_client)
    wrapped = keys.KmsKeyWrapper(arn_a, kms_conn).wrap(os.urandom(32))
    with pytest.raises(
        DecryptionError, match=rf"wrong key: data key wrapped under kms:{arn_a}, .* kms:{arn_b}"
    ):
        keys.KmsKeyWrapper(arn_b, kms_conn).unwrap(wrapped)
    with pytest.raises(DecryptionError, match="KMS Decrypt with key 'alias/.*' failed"):  # KMS enforces it
        keys.KmsKeyWrapper(alias_b, kms_conn).unwrap(wrapped)


def test_tampered_or_foreign_records_are_refused(kms_conn, kms_key):
    arn, _ = kms_key
    wrapper = keys.KmsKeyWrapper(arn, kms_conn)
    wrapped = wrapper.wrap(os.urandom(32))
    blob = bytearray(base64.b64decode(wrapped.wrapped_dek_b64))
    blob[-5] ^= 1
    tampered = WrappedKey(wrapped.kek_id, wrapped.algorithm, base64.b64encode(bytes(blob)).decode())
    with pytest.raises(DecryptionError, match="failed authentication"):
        wrapper.unwrap(tampered)
    local = crypto.encrypt_bytes(b"x", LOCAL_KEK)[1]
    with pytest.raises(DecryptionError, match="not wrapped by KMS"):
        wrapper.unwrap(local)
    with pytest.raises(DecryptionError, match="wrapped by AWS KMS .* a local KEK cannot unwrap it"):
        keys.LocalKeyWrapper(LOCAL_KEK).unwrap(wrapped)
    with pytest.raises(DecryptionError, match="not valid base64"):
        wrapper.unwrap(WrappedKey(wrapped.kek_id, wrapped.algorithm, "!!"))


def test_unusable_kms_keys_are_reported(kms_conn, kms_client):
    arn, _ = _new_key(kms_client)
    kms_client.disable_key(KeyId=arn.split("/")[-1])  # moto takes the bare id here
    with pytest.raises(KeyMaterialError, match="is not usable: state Disabled"):
        keys.KmsKeyWrapper(arn, kms_conn).describe()
    missing = "alias/llmops-test-does-not-exist"
    with pytest.raises(KeyMaterialError, match="KMS key not found"):
        keys.KmsKeyWrapper(missing, kms_conn).wrap(os.urandom(32))
    signing, _ = _new_key(kms_client, KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")
    with pytest.raises(KeyMaterialError, match="cannot wrap data keys"):
        _ = keys.KmsKeyWrapper(signing.split("/")[-1], kms_conn).kek_id  # a bare key id: described
    assert keys.KmsKeyWrapper(kms_client.create_key()["KeyMetadata"]["KeyId"], kms_conn).describe()["Arn"]
    with pytest.raises(KeyMaterialError, match="KMS key id is empty"):
        keys.KmsKeyWrapper("  ", kms_conn)
    with pytest.raises(KeyMaterialError, match="data key must be 32 bytes"):
        keys.KmsKeyWrapper(arn, kms_conn).wrap(b"short")


def test_kms_wrapped_data_key_decrypts_real_ciphertext(kms_conn, kms_key):
    """Expect the data key that went through KMS to be the one that decrypts the file.

    crypto.py wraps under a local KEK only, so the file is sealed with a one-off local KEK whose
    wrapped key is moved under KMS: what snapshots.stage_part would do once wired to a KeyWrapper.
    """
    plaintext = os.urandom(300_000)
    one_off = os.urandom(32)
    ciphertext, local_wrapped = crypto.encrypt_bytes(plaintext, one_off, chunk_size=65_536)
    kms_wrapped = keys.KmsKeyWrapper(kms_key[1], kms_conn).wrap(
        keys.LocalKeyWrapper(one_off).unwrap(local_wrapped)
    )

    dek = keys.kms_unwrap_dek(WrappedKey.from_dict(kms_wrapped.to_dict()), kms_conn)
    reader_kek = os.urandom(32)
    assert (
        crypto.decrypt_bytes(ciphertext, keys.LocalKeyWrapper(reader_kek).wrap(dek), reader_kek) == plaintext
    )


def test_local_wrapper_matches_crypto(tmp_path):
    wrapper = keys.LocalKeyWrapper(LOCAL_KEK)
    assert wrapper.kek_id == crypto.key_id(LOCAL_KEK) and "kek=" not in repr(wrapper)
    ciphertext, wrapped = crypto.encrypt_bytes(b"hello", LOCAL_KEK)
    dek = wrapper.unwrap(wrapped)
    assert crypto.decrypt_bytes(ciphertext, wrapper.wrap(dek), LOCAL_KEK) == b"hello"
    with pytest.raises(DecryptionError, match="wrong key"):
        keys.LocalKeyWrapper(bytes(range(1, 33))).unwrap(wrapped)
    as_protocol: keys.KeyWrapper = wrapper  # both satisfy the protocol (checked statically)
    assert as_protocol.kek_id == wrapper.kek_id


@pytest.fixture
def key_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings with no KEK connection and a key file path that does not exist yet."""
    key_file = tmp_path / "keys" / "kek.key"
    monkeypatch.setenv("LLMOPS_KEK_FILE", str(key_file))
    monkeypatch.setenv("LLMOPS_KEK_CONN_ID", f"llmops_kek_absent_{uuid.uuid4().hex[:6]}")
    for var in (keys.KMS_KEY_ID_ENV, keys.KMS_CONN_ID_ENV, "LLMOPS_REQUIRE_KEY_CONNECTIONS"):
        monkeypatch.delenv(var, raising=False)
    return key_file


def test_provider_selection_by_environment(key_env, kms_conn, kms_key, monkeypatch):
    """Expect the local KEK by default (get_kek unchanged) and KMS once LLMOPS_KMS_KEY_ID is set."""
    local = keys.get_key_wrapper()
    assert isinstance(local, keys.LocalKeyWrapper) and local.kek_id == crypto.key_id(keys.get_kek())
    assert key_env.exists()

    monkeypatch.setenv(keys.KMS_KEY_ID_ENV, kms_key[1])
    assert keys.kms_settings() == (kms_key[1], "aws_default")
    monkeypatch.setenv(keys.KMS_CONN_ID_ENV, kms_conn)
    wrapper = keys.get_key_wrapper()
    assert isinstance(wrapper, keys.KmsKeyWrapper) and wrapper.kek_id == f"kms:{kms_key[0]}"
    dek = os.urandom(32)
    assert wrapper.unwrap(wrapper.wrap(dek)) == dek
    assert keys.get_kek() == crypto.load_or_create_key_file(key_env)  # still there for local parts

    monkeypatch.setenv("LLMOPS_KEK_CONN_ID", "llmops_kek_conn_test")
    monkeypatch.setenv(
        "AIRFLOW_CONN_LLMOPS_KEK_CONN_TEST",
        json.dumps({"conn_type": "generic", "password": base64.b64encode(LOCAL_KEK).decode()}),
    )
    assert keys.get_kek() == LOCAL_KEK


def test_key_ring_reads_a_mixed_lake_without_creating_a_key_file(key_env, kms_conn, kms_key, monkeypatch):
    monkeypatch.setenv(keys.KMS_KEY_ID_ENV, kms_key[1])
    monkeypatch.setenv(keys.KMS_CONN_ID_ENV, kms_conn)
    ring = keys.get_key_ring()
    dek = os.urandom(32)
    kms_record = ring.wrap(dek)
    assert kms_record.kek_id == f"kms:{kms_key[0]}" and ring.kek_id == kms_record.kek_id
    assert ring.unwrap(kms_record) == dek
    assert not key_env.exists()  # KMS-only so far: no local key was needed or made

    local_kek = keys.get_kek()  # a part written before the move to KMS
    local_record = keys.LocalKeyWrapper(local_kek).wrap(dek)
    assert ring.unwrap(local_record) == dek
    assert keys.KeyRing(keys.LocalKeyWrapper(local_kek), kms_conn_id=kms_conn).unwrap(kms_record) == dek


def test_key_rotation_on_an_s3_lake(s3_bucket, s3_client, monkeypatch):
    """Expect rotation to work unchanged with the lake on S3: data objects untouched, new key reads."""
    import pyarrow as pa

    from llmops import snapshots, storage
    from llmops.privacy import rotation

    bucket, conn_id = s3_bucket
    monkeypatch.setenv("LLMOPS_LAKE_CONN_ID", conn_id)
    lake = f"s3://{bucket}/lake"
    table = pa.table({"id": ["a", "b"], "text": ["x", "y"]})
    ref, _ = snapshots.write_snapshot(
        lake_root=lake, zone="raw", pipeline="p", dataset="d", table=table, metadata={}, kek=LOCAL_KEK
    )
    new = bytes(range(50, 82))

    def etags() -> dict[str, str]:
        listing = s3_client.list_objects_v2(Bucket=bucket, Prefix="lake/")["Contents"]
        return {o["Key"]: o["ETag"] for o in listing if not o["Key"].endswith(".key.json")}

    before = etags()
    summary = rotation.rotate_lake_keys(lake, LOCAL_KEK, new)
    assert (summary["rewrapped"], summary["records_written"], summary["errors"]) == (1, 1, [])
    after = etags()
    assert {k: v for k, v in after.items() if not k.endswith(rotation.ROTATION_RECORD)} == before
    assert snapshots.read_snapshot(ref, new).equals(table)
    assert rotation.rotate_lake_keys(lake, LOCAL_KEK, new)["skipped"] == 1
    assert storage.read_json(storage.join(ref.uri, rotation.ROTATION_RECORD))["to_kek_id"] == crypto.key_id(
        new
    )


def test_snapshots_written_under_kms_are_read_through_the_key_ring(
    kms_conn, kms_key, key_env, tmp_path, monkeypatch
):
    """Expect raw snapshots staged with KMS-wrapped data keys, readable through the key ring only."""
    import pyarrow as pa

    from llmops import snapshots

    arn, _ = kms_key
    monkeypatch.setenv("LLMOPS_KMS_KEY_ID", arn)
    monkeypatch.setenv("LLMOPS_KMS_CONN_ID", kms_conn)
    lake = str(tmp_path / "lake")
    table = pa.table({"id": ["1", "2"], "email": ["a@example.com", "b@example.com"]})
    ref, manifest = snapshots.write_snapshot(
        lake_root=lake,
        zone="raw",
        pipeline="p",
        dataset="d",
        table=table,
        metadata={},
        kek=keys.get_key_ring(),
    )
    assert manifest["encryption"] == {"algorithm": keys.KMS_ALGORITHM, "kek_ids": [f"kms:{arn}"]}
    assert snapshots.read_snapshot(ref, keys.get_key_ring()).equals(table)
    with pytest.raises(Exception, match="kek_id mismatch|KMS"):
        snapshots.read_snapshot(ref, os.urandom(32))
    assert not key_env.exists()  # a KMS-only deployment never creates a local key file
