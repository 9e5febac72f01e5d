"""Envelope encryption: round trips, tamper detection, key rotation and key files."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import stat
from typing import TYPE_CHECKING

import pytest

from llmops.privacy import crypto
from llmops.privacy.crypto import (
    HEADER_BYTES,
    TAG_BYTES,
    DecryptionError,
    KeyMaterialError,
    WrappedKey,
    decrypt_bytes,
    decrypt_file,
    decrypt_stream,
    encrypt_bytes,
    encrypt_file,
    encrypt_stream,
    key_from_b64,
    key_id,
    load_or_create_key_file,
    rewrap,
)

if TYPE_CHECKING:
    from pathlib import Path

KEK = bytes(range(32))
OTHER_KEK = bytes(range(1, 33))
CHUNK = 64


def _chunks(ciphertext: bytes, chunk_size: int = CHUNK) -> tuple[bytes, list[bytes]]:
    block = chunk_size + TAG_BYTES
    body = ciphertext[HEADER_BYTES:]
    return ciphertext[:HEADER_BYTES], [body[i : i + block] for i in range(0, len(body), block)]


# ----------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK, 5 * CHUNK + 10, 1000])
def test_round_trip(size: int) -> None:
    data = os.urandom(size)
    ciphertext, wrapped = encrypt_bytes(data, KEK, chunk_size=CHUNK)
    assert decrypt_bytes(ciphertext, wrapped, KEK) == data
    n_chunks = max(1, -(-size // CHUNK))
    assert len(ciphertext) == HEADER_BYTES + size + n_chunks * TAG_BYTES
    assert ciphertext.startswith(b"LLMENC\x01")


def test_round_trip_default_chunk_size() -> None:
    data = b"parquet bytes " * 1000
    ciphertext, wrapped = encrypt_bytes(data, KEK)
    assert data not in ciphertext
    assert decrypt_bytes(ciphertext, wrapped, KEK) == data


def test_every_file_gets_a_fresh_data_key_and_nonce() -> None:
    a, wa = encrypt_bytes(b"same", KEK)
    b, wb = encrypt_bytes(b"same", KEK)
    assert a != b
    assert wa.wrapped_dek_b64 != wb.wrapped_dek_b64
    assert wa.kek_id == wb.kek_id == key_id(KEK) == hashlib.sha256(KEK).hexdigest()[:16]


class _Trickle(io.RawIOBase):
    """A source that returns at most 7 bytes per read and records the largest request."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.max_request = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.max_request = max(self.max_request, n)
        return self._data.read(min(n, 7) if n >= 0 else 7)


def test_streams_handle_short_reads_and_stay_chunk_bounded() -> None:
    data = os.urandom(10 * CHUNK + 3)
    src = _Trickle(data)
    out = io.BytesIO()
    wrapped = encrypt_stream(src, out, KEK, chunk_size=CHUNK)
    assert src.max_request <= CHUNK
    back = io.BytesIO()
    decrypt_stream(_Trickle(out.getvalue()), back, wrapped, KEK)
    assert back.getvalue() == data


@pytest.mark.parametrize("chunk_size", [0, -1, crypto.MAX_CHUNK_SIZE + 1])
def test_chunk_size_is_validated(chunk_size: int) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        encrypt_bytes(b"x", KEK, chunk_size=chunk_size)


@pytest.mark.parametrize("kek", [b"short", b"x" * 31, b"x" * 33])
def test_kek_length_is_validated(kek: bytes) -> None:
    with pytest.raises(KeyMaterialError, match="32 bytes"):
        encrypt_bytes(b"x", kek)


# ----------------------------------------------------------------------------- tamper detection


@pytest.fixture
def sealed() -> tuple[bytes, bytes, WrappedKey]:
    data = os.urandom(5 * CHUNK + 10)  # chunks 0..5, chunk 5 is the short final one
    ciphertext, wrapped = encrypt_bytes(data, KEK, chunk_size=CHUNK)
    return data, ciphertext, wrapped


def test_flipped_byte_names_the_chunk(sealed: tuple[bytes, bytes, WrappedKey]) -> None:
    _, ciphertext, wrapped = sealed
    for index in (0, 3, 5):
        damaged = bytearray(ciphertext)
        damaged[HEADER_BYTES + index * (CHUNK + TAG_BYTES) + 5] ^= 0x01
        with pytest.raises(DecryptionError, match=f"chunk {index} failed authentication"):
            decrypt_bytes(bytes(damaged), wrapped, KEK)


def test_flipped_tag_byte_is_detected(sealed: tuple[bytes, bytes, WrappedKey]) -> None:
    _, ciphertext, wrapped = sealed
    damaged = bytearray(ciphertext)
    damaged[-1] ^= 0x80
    with pytest.raises(DecryptionError, match="chunk 5 failed authentication"):
        decrypt_bytes(bytes(damaged), wrapped, KEK)


def test_header_tampering_is_detected(sealed: tuple[bytes, bytes, WrappedKey]) -> None:
    _, ciphertext, wrapped = sealed
    bad_magic = b"XX" + ciphertext[2:]
    with pytest.raises(DecryptionError, match="bad magic"):
        decrypt_bytes(bad_magic, wrapped, KEK)
    bad_version = ciphertext[:6] + b"\x02" + ciphertext[7:]
    with pytest.raises(DecryptionError, match="unsupported encrypted-file format version 2"):
        decrypt_bytes(bad_version, wrapped, KEK)
    bad_prefix = bytearray(ciphertext)
    bad_prefix[HEADER_BYTES - 1] ^= 0x01  # last byte of the nonce prefix
    with pytest.raises(DecryptionError, match="chunk 0 failed authentication"):
        decrypt_bytes(bytes(bad_prefix), wrapped, KEK)


def test_truncating_the_final_chunk_is_detected(sealed: tuple[bytes, bytes, WrappedKey]) -> None:
    _, ciphertext, wrapped = sealed
    header, chunks = _chunks(ciphertext)
    without_final = header + b"".join(chunks[:-1])
    with pytest.raises(
        DecryptionError, match=r"file truncated: final chunk missing \(stream ends after chunk 4\)"
    ):
        decrypt_bytes(without_final, wrapped, KEK)
    with pytest.raises(DecryptionError, match="chunk 5 failed authentication"):
        decrypt_bytes(ciphertext[:-3], wrapped, KEK)
    with pytest.raises(DecryptionError, match="no chunks after the header"):
        decrypt_bytes(header, wrapped, KEK)
    with pytest.raises(DecryptionError, match="header incomplete"):
        decrypt_bytes(header[:10], wrapped, KEK)
    with pytest.raises(DecryptionError, match="shorter than its authentication tag"):
        decrypt_bytes(header + b"".join(chunks[:-1]) + chunks[-1][:5], wrapped, KEK)


def test_reordered_chunks_are_detected(sealed: tuple[bytes, bytes, WrappedKey]) -> None:
    _, ciphertext, wrapped = sealed
    header, chunks = _chunks(ciphertext)
    chunks[1], chunks[2] = chunks[2], chunks[1]
    with pytest.raises(DecryptionError, match="chunk 1 failed authentication"):
        decrypt_bytes(header + b"".join(chunks), wrapped, KEK)


def test_chunks_from_another_file_are_detected(sealed: tuple[bytes, bytes, WrappedKey]) -> None:
    _, ciphertext, wrapped = sealed
    other, _ = encrypt_bytes(os.urandom(5 * CHUNK + 10), KEK, chunk_size=CHUNK)
    header, chunks = _chunks(ciphertext)
    _, foreign = _chunks(other)
    chunks[2] = foreign[2]
    with pytest.raises(DecryptionError, match="chunk 2 failed authentication"):
        decrypt_bytes(header + b"".join(chunks), wrapped, KEK)


def test_data_after_the_final_chunk_is_detected() -> None:
    ciphertext, wrapped = encrypt_bytes(os.urandom(3 * CHUNK), KEK, chunk_size=CHUNK)
    _, chunks = _chunks(ciphertext)
    with pytest.raises(DecryptionError, match=r"unexpected data after the final chunk \(chunk 2\)"):
        decrypt_bytes(ciphertext + chunks[0], wrapped, KEK)


def test_wrong_kek_is_named(sealed: tuple[bytes, bytes, WrappedKey]) -> None:
    _, ciphertext, wrapped = sealed
    with pytest.raises(DecryptionError, match="wrong key: kek_id mismatch"):
        decrypt_bytes(ciphertext, wrapped, OTHER_KEK)


def test_wrapped_key_of_another_file_is_detected(sealed: tuple[bytes, bytes, WrappedKey]) -> None:
    _, ciphertext, _ = sealed
    _, other_wrapped = encrypt_bytes(b"other file", KEK)
    with pytest.raises(DecryptionError, match="chunk 0 failed authentication.*wrong data key"):
        decrypt_bytes(ciphertext, other_wrapped, KEK)


def test_tampered_wrapped_key_is_detected(sealed: tuple[bytes, bytes, WrappedKey]) -> None:
    _, ciphertext, wrapped = sealed
    raw = bytearray(base64.b64decode(wrapped.wrapped_dek_b64))
    raw[20] ^= 0x01
    bad = WrappedKey(wrapped.kek_id, wrapped.algorithm, base64.b64encode(bytes(raw)).decode())
    with pytest.raises(DecryptionError, match="wrapped data key failed authentication"):
        decrypt_bytes(ciphertext, bad, KEK)
    with pytest.raises(DecryptionError, match="unsupported algorithm"):
        decrypt_bytes(ciphertext, WrappedKey(wrapped.kek_id, "ROT13", wrapped.wrapped_dek_b64), KEK)
    with pytest.raises(DecryptionError, match="not valid base64"):
        decrypt_bytes(ciphertext, WrappedKey(wrapped.kek_id, wrapped.algorithm, "!!!"), KEK)


# ----------------------------------------------------------------------------- wrapped keys


def test_wrapped_key_serialisation() -> None:
    _, wrapped = encrypt_bytes(b"x", KEK)
    as_dict = wrapped.to_dict()
    assert set(as_dict) == {"kek_id", "algorithm", "wrapped_dek_b64"}
    assert WrappedKey.from_dict(json.loads(json.dumps(as_dict))) == wrapped
    assert len(base64.b64decode(wrapped.wrapped_dek_b64)) == 12 + 32 + 16  # nonce, sealed DEK, tag
    with pytest.raises(ValueError, match="exactly the fields"):
        WrappedKey.from_dict({**as_dict, "dek": "oops"})
    with pytest.raises(ValueError, match="must be strings"):
        WrappedKey.from_dict({**as_dict, "kek_id": 1})
    with pytest.raises(AttributeError):
        wrapped.kek_id = "other"  # type: ignore[misc]


def test_rewrap_rotates_the_kek_without_touching_data() -> None:
    data = os.urandom(3 * CHUNK)
    ciphertext, wrapped = encrypt_bytes(data, KEK, chunk_size=CHUNK)
    rotated = rewrap(wrapped, KEK, OTHER_KEK)
    assert rotated.kek_id == key_id(OTHER_KEK) != wrapped.kek_id
    assert decrypt_bytes(ciphertext, rotated, OTHER_KEK) == data
    with pytest.raises(DecryptionError, match="kek_id mismatch"):
        decrypt_bytes(ciphertext, rotated, KEK)
    with pytest.raises(DecryptionError, match="kek_id mismatch"):
        rewrap(wrapped, OTHER_KEK, KEK)


def test_logs_hold_no_key_material(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level(logging.DEBUG, logger="llmops"):
        key = load_or_create_key_file(tmp_path / "kek.key")
        _, wrapped = encrypt_bytes(b"secret", key)
        rewrap(wrapped, key, OTHER_KEK)
    assert caplog.records
    for secret in (key, OTHER_KEK):
        assert base64.b64encode(secret).decode() not in caplog.text
        assert secret.hex() not in caplog.text


# ----------------------------------------------------------------------------------- files


def test_file_round_trip(tmp_path: Path) -> None:
    plain, enc, back = tmp_path / "data.parquet", tmp_path / "data.parquet.enc", tmp_path / "back.parquet"
    plain.write_bytes(os.urandom(7 * CHUNK + 1))
    wrapped = encrypt_file(plain, enc, KEK, chunk_size=CHUNK)
    decrypt_file(enc, back, wrapped, KEK)
    assert back.read_bytes() == plain.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.parquet", "data.parquet", "data.parquet.enc"]


def test_failed_decrypt_leaves_no_partial_output(tmp_path: Path) -> None:
    plain, enc, out = tmp_path / "in.bin", tmp_path / "in.bin.enc", tmp_path / "out.bin"
    plain.write_bytes(os.urandom(6 * CHUNK))
    wrapped = encrypt_file(plain, enc, KEK, chunk_size=CHUNK)
    damaged = bytearray(enc.read_bytes())
    damaged[-1] ^= 0x01  # the last chunk fails, after five good ones were already written out
    enc.write_bytes(bytes(damaged))

    with pytest.raises(DecryptionError, match="chunk 5 failed authentication"):
        decrypt_file(enc, out, wrapped, KEK)
    assert not out.exists()

    out.write_bytes(b"previous version")
    with pytest.raises(DecryptionError):
        decrypt_file(enc, out, wrapped, KEK)
    assert out.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin", "in.bin.enc", "out.bin"]


def test_failed_encrypt_leaves_no_partial_output(tmp_path: Path) -> None:
    plain, enc = tmp_path / "in.bin", tmp_path / "in.bin.enc"
    plain.write_bytes(b"x" * 100)
    with pytest.raises(KeyMaterialError):
        encrypt_file(plain, enc, b"bad key")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin"]


# -------------------------------------------------------------------------------- key material


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "kek.key"
    key = load_or_create_key_file(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(path.read_text().strip()) == key
    before = path.stat()
    assert load_or_create_key_file(path) == key
    after = path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_key_file_with_loose_permissions_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    load_or_create_key_file(path)
    path.chmod(0o640)
    with pytest.raises(KeyMaterialError, match=r"group/others \(mode 0640\).*chmod 600"):
        load_or_create_key_file(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (base64.b64encode(b"s" * 16), "must decode to 32 bytes, got 16"),
        (b"not base64 at all!!", "not valid base64"),
        (b"", "is empty"),
        ("ключ".encode(), "not base64 text"),
    ],
)
def test_bad_key_file_is_never_overwritten_or_echoed(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "kek.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeyMaterialError, match=message) as excinfo:
        load_or_create_key_file(path)
    assert str(path) in str(excinfo.value)
    if content:
        assert content.decode(errors="ignore") not in str(excinfo.value)
    assert path.read_bytes() == content


def test_key_from_b64() -> None:
    key = os.urandom(32)
    assert key_from_b64(base64.b64encode(key).decode()) == key
    assert key_from_b64(base64.urlsafe_b64encode(key)) == key
    assert key_from_b64("\n  " + base64.b64encode(key).decode() + "\n") == key
    assert key_from_b64(base64.b64encode(b"p" * 48).decode(), length=None) == b"p" * 48
    secret = base64.b64encode(b"q" * 20).decode()
    with pytest.raises(
        KeyMaterialError, match="connection 'x' password must decode to 32 bytes, got 20"
    ) as excinfo:
        key_from_b64(secret, what="connection 'x' password")
    assert secret not in str(excinfo.value)
    with pytest.raises(KeyMaterialError, match="KEK is not valid base64") as excinfo:
        key_from_b64("sk-live-notbase64$$", what="KEK")
    assert "sk-live" not in str(excinfo.value)
    assert excinfo.value.__suppress_context__  # the decoder's own error is not chained in
    assert isinstance(excinfo.value, ValueError)
