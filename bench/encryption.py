"""Snapshot encryption throughput: llmops' paths against raw AES-GCM and an fsynced plain copy.

Why: every raw and quarantine snapshot part, split file and job output goes through
``llmops.privacy.crypto``; this shows, in one run, what the chunked format, the plaintext SHA-256 of
``EncryptingWriter`` and the file I/O cost on top of the cipher and of the disk.

Two groups, each path the median of ``--repeat`` runs, GB = 1e9 bytes, ratios printed:

* in memory, against raw AES-GCM (``AESGCM.encrypt`` / ``decrypt`` of 1 MiB chunks already in
  memory): ``encrypt_stream`` / ``decrypt_stream`` memory -> null sink, ``encrypt_bytes`` /
  ``decrypt_bytes`` (what lake reads and split files use), ``EncryptingWriter`` fed 1 MiB writes
  (the snapshot staging path, which also hashes the plaintext: SHA-256 alone is printed as its
  ceiling). Target: >= 0.5x raw.
* on disk, against a plain copy of the same file that is fsynced once (``shutil.copyfileobj``, 4 MiB
  blocks): ``encrypt_file`` / ``decrypt_file`` (atomic temp file + rename, fsynced) and
  ``EncryptingWriter`` into an fsynced file. Target: >= 0.9x the plain copy.

Disk runs are interleaved path by path, and before each one its destination is deleted and
``os.sync()`` flushes what the previous run left dirty (outside the timing): otherwise a run pays for
its predecessor's writeback, or for the discard of the file it replaces, and the order of the rows
decides the numbers. The input file is written just before, so reads come from the page cache.

Run (``PYTHONPATH=<older checkout>/include`` in front measures that checkout's crypto instead; the
first line says which file was measured)::

    .venv/bin/python bench/encryption.py [--size-mb 1024] [--repeat 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from llmops.privacy import crypto

if TYPE_CHECKING:
    from collections.abc import Callable

MIB = 1024 * 1024
GB = 1e9
RAW_CHUNK = MIB
WRITER_PUSH = MIB
MEMORY_TARGET = 0.5
DISK_TARGET = 0.9


def _median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class _Null(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        return len(memoryview(data))


def _make_input(path: Path, size: int) -> str:
    """Random (incompressible) bytes; returns their SHA-256 to verify round trips."""
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            data = os.urandom(min(64 * MIB, left))
            fh.write(data)
            digest.update(data)
            left -= len(data)
        fh.flush()
        os.fsync(fh.fileno())
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def raw_aesgcm(size: int, repeat: int) -> tuple[float, float]:
    """Seconds to encrypt and to decrypt ``size`` bytes as 1 MiB chunks in memory (16 distinct chunks)."""
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    chunks = [os.urandom(RAW_CHUNK) for _ in range(16)]
    nonces = [os.urandom(12) for _ in chunks]
    aad = b"llmops-bench"
    n = size // RAW_CHUNK
    sealed = [aead.encrypt(nonces[i], chunks[i], aad) for i in range(len(chunks))]

    def enc() -> None:
        for i in range(n):
            aead.encrypt(nonces[i % 16], chunks[i % 16], aad)

    def dec() -> None:
        for i in range(n):
            aead.decrypt(nonces[i % 16], sealed[i % 16], aad)

    return _median_seconds(enc, repeat), _median_seconds(dec, repeat)


def push_into_writer(src: Any, dst: Any, kek: bytes) -> crypto.WrappedKey:
    """What snapshots.stage_part does around Parquet: push 1 MiB writes into EncryptingWriter."""
    buf = bytearray(WRITER_PUSH)
    view = memoryview(buf)
    writer = crypto.EncryptingWriter(dst, kek)
    while n := src.readinto(buf):
        writer.write(view[:n])
    wrapped = writer.finish()
    _ = writer.plaintext_sha256
    return wrapped


def writer_file(src: Path, dst: Path, kek: bytes) -> crypto.WrappedKey:
    with open(src, "rb", buffering=0) as fin, open(dst, "wb") as fout:
        wrapped = push_into_writer(fin, fout, kek)
        fout.flush()
        os.fsync(fout.fileno())
    return wrapped


def plain_copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, crypto.DEFAULT_CHUNK_SIZE)
        fout.flush()
        os.fsync(fout.fileno())


def _memory(size: int, repeat: int, data: bytes, kek: bytes) -> dict[str, float]:
    seconds: dict[str, float] = {}
    source_sha = hashlib.sha256(data).hexdigest()
    ciphertext, wrapped = crypto.encrypt_bytes(data, kek)
    if hashlib.sha256(crypto.decrypt_bytes(ciphertext, wrapped, kek)).hexdigest() != source_sha:
        raise SystemExit("round trip mismatch: decrypt_bytes did not restore the input")
    seconds["raw_encrypt"], seconds["raw_decrypt"] = raw_aesgcm(size, repeat)
    seconds["encrypt_stream_mem"] = _median_seconds(
        lambda: crypto.encrypt_stream(io.BytesIO(data), _Null(), kek), repeat
    )
    seconds["decrypt_stream_mem"] = _median_seconds(
        lambda: crypto.decrypt_stream(io.BytesIO(ciphertext), _Null(), wrapped, kek), repeat
    )
    seconds["encrypt_bytes"] = _median_seconds(lambda: crypto.encrypt_bytes(data, kek), repeat)
    seconds["decrypt_bytes"] = _median_seconds(lambda: crypto.decrypt_bytes(ciphertext, wrapped, kek), repeat)
    seconds["writer_mem"] = _median_seconds(lambda: push_into_writer(io.BytesIO(data), _Null(), kek), repeat)
    block = os.urandom(64 * MIB)
    seconds["sha256"] = _median_seconds(
        lambda: [hashlib.sha256(block).digest() for _ in range(size // len(block))], repeat
    )
    return seconds


def _disk(folder: Path, size: int, repeat: int, kek: bytes) -> dict[str, float]:
    plain, sealed, back, other = (folder / n for n in ("plain.bin", "sealed.enc", "back.bin", "other.enc"))
    source_sha = _make_input(plain, size)
    crypto.encrypt_file(plain, sealed, kek)  # warm-up; keys of the timed runs replace it
    keys: dict[str, crypto.WrappedKey] = {}

    def keep(name: str, fn: Callable[[], crypto.WrappedKey]) -> Callable[[], None]:
        return lambda: keys.__setitem__(name, fn())

    paths: dict[str, tuple[Path, Callable[[], object]]] = {
        "plain_copy": (back, lambda: plain_copy(plain, back)),
        "encrypt_file": (sealed, keep("file", lambda: crypto.encrypt_file(plain, sealed, kek))),
        "decrypt_file": (back, lambda: crypto.decrypt_file(sealed, back, keys["file"], kek)),
        "writer_file": (other, keep("writer", lambda: writer_file(plain, other, kek))),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeat):
        for name, (target, fn) in paths.items():
            if name != "decrypt_file":  # decrypt_file reads what encrypt_file just wrote
                target.unlink(missing_ok=True)
            else:
                back.unlink(missing_ok=True)
            os.sync()
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    if _sha256_file(back) != source_sha:
        raise SystemExit("round trip mismatch: decrypt_file did not restore the input")
    crypto.decrypt_file(other, back, keys["writer"], kek)
    if _sha256_file(back) != source_sha:
        raise SystemExit("round trip mismatch: EncryptingWriter output did not decrypt to the input")
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="data size in MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is shown")
    parser.add_argument("--dir", default=None, help="where the temporary files go (default: system temp)")
    args = parser.parse_args()

    size = args.size_mb * MIB
    kek = os.urandom(32)
    print(f"crypto measured: {crypto.__file__}")
    print(f"input: {args.size_mb} MiB ({size / GB:.3f} GB) of random bytes; median of {args.repeat} runs")
    with tempfile.TemporaryDirectory(prefix="llmops-bench-enc-", dir=args.dir) as tmp:
        s = _disk(Path(tmp), size, args.repeat, kek)
        s.update(_memory(size, args.repeat, (Path(tmp) / "plain.bin").read_bytes(), kek))

    def row(label: str, key: str, base: str | None) -> None:
        ratio = f"{s[base] / s[key]:6.2f}x" if base else ""
        print(f"{label:58s} {size / GB / s[key]:7.2f} {ratio:>8s}")

    print(f"\n{'in memory':58s} {'GB/s':>7s} {'x raw':>8s}")
    row("raw AES-GCM encrypt, 1 MiB chunks (baseline)", "raw_encrypt", None)
    row("raw AES-GCM decrypt, 1 MiB chunks (baseline)", "raw_decrypt", None)
    row("crypto.encrypt_stream  memory -> null", "encrypt_stream_mem", "raw_encrypt")
    row("crypto.decrypt_stream  memory -> null", "decrypt_stream_mem", "raw_decrypt")
    row("crypto.encrypt_bytes", "encrypt_bytes", "raw_encrypt")
    row("crypto.decrypt_bytes", "decrypt_bytes", "raw_decrypt")
    row("EncryptingWriter       memory -> null, +plaintext SHA-256", "writer_mem", "raw_encrypt")
    row("context: SHA-256 alone (the writer's ceiling)", "sha256", "raw_encrypt")
    print(f"\n{'on disk (input in page cache, output fsynced)':58s} {'GB/s':>7s} {'x copy':>8s}")
    row("plain copy, fsync (baseline)", "plain_copy", None)
    row("crypto.encrypt_file    atomic, fsync", "encrypt_file", "plain_copy")
    row("crypto.decrypt_file    atomic, fsync", "decrypt_file", "plain_copy")
    row("EncryptingWriter       fsync, +plaintext SHA-256", "writer_file", "plain_copy")
    print()
    checks = [
        ("encrypt_stream_mem", "raw_encrypt", MEMORY_TARGET, "raw"),
        ("decrypt_stream_mem", "raw_decrypt", MEMORY_TARGET, "raw"),
        ("encrypt_bytes", "raw_encrypt", MEMORY_TARGET, "raw"),
        ("decrypt_bytes", "raw_decrypt", MEMORY_TARGET, "raw"),
        ("writer_mem", "raw_encrypt", MEMORY_TARGET, "raw"),
        ("encrypt_file", "plain_copy", DISK_TARGET, "plain copy"),
        ("decrypt_file", "plain_copy", DISK_TARGET, "plain copy"),
        ("writer_file", "plain_copy", DISK_TARGET, "plain copy"),
    ]
    for key, base, target, what in checks:
        value = s[base] / s[key]
        print(f"{key}: {value:.2f}x {what} -> {'meets' if value >= target else 'BELOW'} the {target}x target")


if __name__ == "__main__":
    main()
