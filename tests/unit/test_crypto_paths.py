"""The encryption fast paths: every reader takes every writer's files, old files still read, the
content hashes snapshot ids are made of are those of the code before, and tampering is caught by
every decrypt path (in memory, stream, file), not only the one the older tests exercise."""

from __future__ import annotations

import hashlib
import io
import os
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest

from llmops import snapshots
from llmops.privacy import crypto
from llmops.privacy.crypto import (
    HEADER_BYTES,
    TAG_BYTES,
    DecryptionError,
    EncryptingWriter,
    WrappedKey,
    decrypt_bytes,
    decrypt_file,
    decrypt_stream,
    encrypt_bytes,
    encrypt_file,
    encrypt_stream,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

KEK = bytes(range(32))
CHUNK = 64

# Written by the implementation before the single-pass rewrite (commit 2a0a839), chunk_size 64:
# 300 bytes (i * 7 + 3) % 256 -> header + 4 full chunks + a final chunk of 44 bytes.
OLD_PLAINTEXT = bytes((i * 7 + 3) % 256 for i in range(300))
OLD_CIPHERTEXT = bytes.fromhex(
    "4c4c4d454e43010000000040e478a25dbb343effcaf2ad59114508ef6a2cf88a495711ec7d2906f67413bade4aa599aa"
    "ddba1c915044203f99c381e7d82840b72d49c9489e04aefb54cfc19654e682459ce69622147e33bb270a76465cae0269"
    "ee9b0fe253393cb907aac2d1a0714e9f71745d324763a0c5aa981657493a518b9d95086637a412234bd35132ebd45da8"
    "8bba5b392ef75a20d52e12e8980aa3dce215cac4a2ded970f2a2a9924f64e61ab8dd69038e7d7e1931f7c2e2e12be5b6"
    "5d835533455646fa47d0f01a25042556beba478e6dab5437f0d09e88cff6f819628e59235ded213ebacaed902654ff56"
    "7a01dd499d436e6015f36196c83d250ab77340269d65e2c0073762239fb28dc0a9e42a9158b116a61ae99ebc2119a078"
    "708521dfab59187ee95220c03b585d445864bdd68a81629bad4397356622eebbb6e38d20a90b09328f5038477833acfa"
    "88a7f078d27bf5637f2b25cba486babd8e7b769a158a8dbcc1fcd3a7491f30ed2ca4741f6678610dac56d428fc0917d5"
    "8dc0cc4d222221bf4994d8b57e3256f7"
)
OLD_WRAPPED = WrappedKey(
    kek_id="630dcd2966c43366",
    algorithm="AES-256-GCM-STREAM-v1+AES-256-GCM-KW",
    wrapped_dek_b64="0UkVsoJ1Dd9Cr6bCSpvpD/HigZwlKh+CYUHqmLvqLeiMGvBy9qQ69YG+NyorMHCNe0CsOOPWbrV3sHtF",
)

# EncryptingWriter.plaintext_sha256 as the implementation before the rewrite returned it, for
# _pinned_bytes(size) pushed in the given write sizes (these hashes are what snapshot ids hash).
OLD_WRITER_HASHES = [
    (0, 64, [], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (1000, 64, [1, 63, 64, 65, 7, 800], "6900a721be027c3e01702f24d3ba1c769c7f43fd7166ed6e6152a0869925dce0"),
    (5000, 128, [128] * 39 + [8], "b4bb139133a23f5f1b227224de2f808c52be6d7cc4ad505777418604923827e2"),
    (
        3 * 1024 * 1024 + 17,
        crypto.DEFAULT_CHUNK_SIZE,
        [1 << 20] * 3 + [17],
        "6ac31e5fc1c1aaf7223349172745d784b4ae6056de1a816bf5c11296645b52ac",
    ),
]


def _pinned_bytes(n: int) -> bytes:
    out, h = bytearray(), hashlib.sha256(b"llmops-pin")
    while len(out) < n:
        h = hashlib.sha256(h.digest())
        out += h.digest()
    return bytes(out[:n])


def _write_all(data: bytes, pushes: list[int], chunk_size: int) -> tuple[bytes, WrappedKey, EncryptingWriter]:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, KEK, chunk_size=chunk_size)
    pos = 0
    for size in pushes:
        writer.write(data[pos : pos + size])
        pos += size
    assert pos == len(data)
    wrapped = writer.finish()
    return sink.getvalue(), wrapped, writer


# ------------------------------------------------------------------ every writer, every reader


def _irregular_pushes(size: int, chunk: int) -> list[int]:
    """Write sizes that straddle chunk boundaries: 7, 100, 3 chunks + 5, one chunk, 1, ..."""
    pattern, pushes, left = [7, 100, 3 * chunk + 5, chunk, 1], [], size
    while left:
        pushes.append(min(left, pattern[len(pushes) % len(pattern)]))
        left -= pushes[-1]
    return pushes


def _encrypt_with(kind: str, data: bytes, chunk: int, tmp_path: Path) -> tuple[bytes, WrappedKey]:
    if kind == "bytes":
        return encrypt_bytes(data, KEK, chunk_size=chunk)
    if kind == "stream":
        out = io.BytesIO()
        wrapped = encrypt_stream(io.BytesIO(data), out, KEK, chunk)
        return out.getvalue(), wrapped
    if kind == "writer":
        ciphertext, wrapped, _ = _write_all(data, _irregular_pushes(len(data), chunk), chunk)
        return ciphertext, wrapped
    src, dst = tmp_path / f"{kind}.in", tmp_path / f"{kind}.enc"
    src.write_bytes(data)
    wrapped = encrypt_file(src, dst, KEK, chunk_size=chunk)
    return dst.read_bytes(), wrapped


def _decrypt_with(kind: str, ciphertext: bytes, wrapped: WrappedKey, tmp_path: Path) -> bytes:
    if kind == "bytes":
        return decrypt_bytes(ciphertext, wrapped, KEK)
    if kind == "stream":
        out = io.BytesIO()
        decrypt_stream(io.BytesIO(ciphertext), out, wrapped, KEK)
        return out.getvalue()
    src, dst = tmp_path / "sealed.enc", tmp_path / "opened.bin"
    src.write_bytes(ciphertext)
    dst.unlink(missing_ok=True)
    try:
        decrypt_file(src, dst, wrapped, KEK)
    except DecryptionError:
        assert not dst.exists(), "a failed decrypt_file must leave no output"
        raise
    return dst.read_bytes()


WRITERS = ["bytes", "stream", "writer", "file"]
READERS = ["bytes", "stream", "file"]


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("size", [0, 1, CHUNK, 3 * CHUNK, 7 + 100 + 3 * CHUNK + 5 + 20 * CHUNK])
def test_every_reader_opens_every_writers_output(writer: str, size: int, tmp_path: Path) -> None:
    data = os.urandom(size)
    ciphertext, wrapped = _encrypt_with(writer, data, CHUNK, tmp_path)
    chunks = max(1, -(-size // CHUNK))
    assert len(ciphertext) == HEADER_BYTES + size + chunks * TAG_BYTES  # the v1 layout, unchanged
    assert ciphertext[:8] == b"LLMENC\x01\x00"
    for reader in READERS:
        assert _decrypt_with(reader, ciphertext, wrapped, tmp_path) == data


@pytest.mark.parametrize("reader", READERS)
def test_files_written_before_the_rewrite_still_decrypt(reader: str, tmp_path: Path) -> None:
    assert _decrypt_with(reader, OLD_CIPHERTEXT, OLD_WRAPPED, tmp_path) == OLD_PLAINTEXT
    damaged = bytearray(OLD_CIPHERTEXT)
    damaged[HEADER_BYTES + 2 * (CHUNK + TAG_BYTES) + 1] ^= 0x40
    with pytest.raises(DecryptionError, match="chunk 2 failed authentication"):
        _decrypt_with(reader, bytes(damaged), OLD_WRAPPED, tmp_path)


def test_multi_mib_chunks_round_trip_through_every_path(tmp_path: Path) -> None:
    data = os.urandom(2 * crypto.DEFAULT_CHUNK_SIZE + 12345)
    for writer in WRITERS:
        ciphertext, wrapped = _encrypt_with(writer, data, crypto.DEFAULT_CHUNK_SIZE, tmp_path)
        for reader in READERS:
            assert _decrypt_with(reader, ciphertext, wrapped, tmp_path) == data


# ------------------------------------------------------------------ the content hashes


@pytest.mark.parametrize(("size", "chunk", "pushes", "expected"), OLD_WRITER_HASHES)
def test_writer_hashes_are_those_of_the_previous_implementation(
    size: int, chunk: int, pushes: list[int], expected: str
) -> None:
    data = _pinned_bytes(size)
    ciphertext, wrapped, writer = _write_all(data, pushes, chunk)
    assert writer.plaintext_sha256 == expected == hashlib.sha256(data).hexdigest()
    assert writer.plaintext_bytes == size
    assert decrypt_bytes(ciphertext, wrapped, KEK) == data


def test_writer_hash_mid_stream_covers_what_was_written() -> None:
    data = os.urandom(10 * CHUNK + 9)
    writer = EncryptingWriter(io.BytesIO(), KEK, chunk_size=CHUNK)
    for cut in (5, 3 * CHUNK, 3 * CHUNK + 1, 7 * CHUNK + 60, len(data)):
        writer.write(data[writer.plaintext_bytes : cut])
        assert writer.plaintext_sha256 == hashlib.sha256(data[:cut]).hexdigest()
    writer.close()
    assert writer.plaintext_sha256 == hashlib.sha256(data).hexdigest()


def test_writer_refuses_writes_after_finish() -> None:
    writer = EncryptingWriter(io.BytesIO(), KEK, chunk_size=CHUNK)
    writer.write(os.urandom(5 * CHUNK))
    writer.finish()
    with pytest.raises(ValueError, match="write after finish"):
        writer.write(b"more")


# stage_part of _batches(10_000) with a key, by the implementation before the rewrite (same values
# with the new one; they depend on pyarrow's Parquet writer, hence the version).
PINNED_PYARROW = "25.0.1"
PINNED_PART = ("8217325fc1c67a16abb916bb37147a449854c26ea12760844f361e1af005c75b", 10078870)
PINNED_SNAPSHOT_ID = "7247ce0cedda8ebc67b4"


def _batches(rows: int) -> Any:
    """Incompressible rows (1000 pinned pseudo-random bytes each), so a part spans several chunks."""
    blob = _pinned_bytes(rows * 1000)
    for start in range(0, rows, 1000):
        ids = range(start, min(rows, start + 1000))
        yield pa.record_batch(
            {"id": [f"r{i:07d}" for i in ids], "payload": [blob[i * 1000 : (i + 1) * 1000] for i in ids]}
        )


def test_staged_parts_keep_their_plaintext_hash_and_snapshot_id(tmp_path: Path) -> None:
    """A part of several chunks hashes as the plaintext path does, so snapshot ids do not depend on
    encryption or on how it is implemented."""
    schema = pa.schema([("id", pa.string()), ("payload", pa.binary())])
    kw: dict[str, Any] = {"lake_root": str(tmp_path), "pipeline": "p", "dataset": "d", "part": 0}
    sealed = snapshots.stage_part(run_id="enc", batches=_batches(10_000), schema=schema, kek=KEK, **kw)
    plain = snapshots.stage_part(run_id="plain", batches=_batches(10_000), schema=schema, kek=None, **kw)
    assert sealed["bytes"] == plain["bytes"] > 2 * crypto.DEFAULT_CHUNK_SIZE
    assert sealed["sha256"] == plain["sha256"]
    assert snapshots.snapshot_id_for([sealed], None) == snapshots.snapshot_id_for([plain], None)
    blob = snapshots.read_part_bytes(sealed["staging_uri"], sealed["staging_uri"] + ".key.json", KEK)
    assert hashlib.sha256(blob).hexdigest() == sealed["sha256"]
    if pa.__version__ == PINNED_PYARROW:  # Parquet bytes are pyarrow's: pinned for the version that made them
        assert (sealed["sha256"], sealed["bytes"]) == PINNED_PART
        assert snapshots.snapshot_id_for([sealed], None) == PINNED_SNAPSHOT_ID


# ------------------------------------------------------------------ tampering, on every reader


def _sealed_pair(tmp_path: Path) -> tuple[bytes, WrappedKey, bytes]:
    ciphertext, wrapped = encrypt_bytes(os.urandom(5 * CHUNK + 10), KEK, chunk_size=CHUNK)
    other, _ = _encrypt_with("writer", os.urandom(5 * CHUNK + 10), CHUNK, tmp_path)
    return ciphertext, wrapped, other


def _split(ciphertext: bytes) -> tuple[bytes, list[bytes]]:
    block, body = CHUNK + TAG_BYTES, ciphertext[HEADER_BYTES:]
    return ciphertext[:HEADER_BYTES], [body[i : i + block] for i in range(0, len(body), block)]


def _flip(ciphertext: bytes, at: int) -> bytes:
    damaged = bytearray(ciphertext)
    damaged[at] ^= 0x01
    return bytes(damaged)


TAMPERING: dict[str, tuple[Callable[[bytes, bytes], bytes], str]] = {
    "flip a byte of chunk 0": (lambda c, o: _flip(c, HEADER_BYTES + 3), "chunk 0 failed authentication"),
    "flip a byte of chunk 3": (
        lambda c, o: _flip(c, HEADER_BYTES + 3 * (CHUNK + TAG_BYTES) + 17),
        "chunk 3 failed authentication",
    ),
    "flip a tag byte of the final chunk": (
        lambda c, o: _flip(c, len(c) - 1),
        "chunk 5 failed authentication",
    ),
    "flip the nonce prefix": (lambda c, o: _flip(c, HEADER_BYTES - 1), "chunk 0 failed authentication"),
    "change the chunk size": (lambda c, o: _flip(c, 11), "chunk 0 failed authentication"),
    "drop the final chunk": (
        lambda c, o: _split(c)[0] + b"".join(_split(c)[1][:-1]),
        r"final chunk missing \(stream ends after chunk 4\)",
    ),
    "cut into the final chunk": (lambda c, o: c[:-3], "chunk 5 failed authentication"),
    "cut below a tag": (lambda c, o: c[: -(10 + TAG_BYTES) + 5], "shorter than its authentication tag"),
    "keep only the header": (lambda c, o: c[:HEADER_BYTES], "no chunks after the header"),
    "cut into the header": (lambda c, o: c[:10], "header incomplete"),
    "swap chunks 1 and 2": (
        lambda c, o: (
            _split(c)[0] + b"".join([_split(c)[1][0], _split(c)[1][2], _split(c)[1][1], *_split(c)[1][3:]])
        ),
        "chunk 1 failed authentication",
    ),
    "chunk 2 from another file": (
        lambda c, o: _split(c)[0] + b"".join([*_split(c)[1][:2], _split(o)[1][2], *_split(c)[1][3:]]),
        "chunk 2 failed authentication",
    ),
    "another file's header": (
        lambda c, o: o[:HEADER_BYTES] + c[HEADER_BYTES:],
        "chunk 0 failed authentication",
    ),
    "append data": (lambda c, o: c + _split(c)[1][0], "chunk 5 failed authentication"),
    "another format version": (
        lambda c, o: c[:6] + b"\x02" + c[7:],
        "unsupported encrypted-file format version 2",
    ),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("tamper", sorted(TAMPERING))
def test_tampering_is_detected_by_every_reader(reader: str, tamper: str, tmp_path: Path) -> None:
    ciphertext, wrapped, other = _sealed_pair(tmp_path)
    change, message = TAMPERING[tamper]
    damaged = change(ciphertext, other)
    assert damaged != ciphertext
    with pytest.raises(DecryptionError, match=message):
        _decrypt_with(reader, damaged, wrapped, tmp_path)


@pytest.mark.parametrize("reader", READERS)
def test_a_writers_output_is_tamper_evident_too(reader: str, tmp_path: Path) -> None:
    data = os.urandom(4 * CHUNK)
    ciphertext, wrapped = _encrypt_with("writer", data, CHUNK, tmp_path)
    other, _ = _encrypt_with("writer", data, CHUNK, tmp_path)  # same plaintext, other key and nonce
    header, chunks = _split(ciphertext)
    chunks[1] = _split(other)[1][1]
    with pytest.raises(DecryptionError, match="chunk 1 failed authentication"):
        _decrypt_with(reader, header + b"".join(chunks), wrapped, tmp_path)
    with pytest.raises(DecryptionError, match="final chunk missing"):
        _decrypt_with(reader, header + b"".join(_split(ciphertext)[1][:-1]), wrapped, tmp_path)


@pytest.mark.parametrize("reader", READERS)
def test_a_whole_chunk_after_the_final_one_is_named(reader: str, tmp_path: Path) -> None:
    ciphertext, wrapped = encrypt_bytes(os.urandom(3 * CHUNK), KEK, chunk_size=CHUNK)
    with pytest.raises(DecryptionError, match=r"unexpected data after the final chunk \(chunk 2\)"):
        _decrypt_with(reader, ciphertext + _split(ciphertext)[1][0], wrapped, tmp_path)
