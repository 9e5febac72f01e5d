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
* on disk, against a plain copy of the same file that is fsynced once, through one reused 4 MiB
  buffer (the paths' own I/O without the crypto): ``encrypt_file`` / ``decrypt_file`` (atomic temp
  file + rename, fsynced) and ``EncryptingWriter`` into an fsynced file. Target: >= 0.9x the copy.
  ``shutil.copyfileobj`` (a fresh 4 MiB bytes object per block), the copy the previous version of
  this bench used, is shown for context; so are SHA-256 alone (the writer's ceiling) and 4 MiB
  writes into a new BytesIO (the floor of ``encrypt_bytes`` / ``decrypt_bytes``, whose result is new
  memory: on hosts where page faults are dear, that, not AES, bounds them).
* small files: 200 files of 20 kB through ``encrypt_bytes``, ``decrypt_bytes`` and the writer, in
  microseconds per file (split files, probe prompts, small parts).

Runs are interleaved: each repetition times every path once (and, with ``--baseline-src``, the
same path of an older checkout's ``crypto.py`` right after), so load from other processes hits the
baselines, the old code and the new code alike. Before each disk run its destination is deleted and
``os.sync()`` flushes what the previous run left dirty (outside the timing): otherwise a run pays for
its predecessor's writeback, or for the discard of the file it replaces. The input file is written
just before, so reads come from the page cache.

Run (``git worktree add /tmp/old <commit>`` or ``git archive`` gives a baseline source tree)::

    .venv/bin/python bench/encryption.py [--size-mb 1024] [--repeat 3] [--dir /tmp] [--baseline-src /tmp/old]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import os
import shutil
import statistics
import sys
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


def _load_baseline(src: str) -> Any:
    """``llmops/privacy/crypto.py`` of another source tree, as a separate module."""
    path = Path(src) / "include" / "llmops" / "privacy" / "crypto.py"
    spec = importlib.util.spec_from_file_location("baseline_crypto", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"no crypto module at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_crypto"] = module
    spec.loader.exec_module(module)
    return module


def _raw(size: int) -> dict[str, Callable[[], object]]:
    """Raw AES-GCM of 1 MiB chunks in memory (16 distinct chunks), and SHA-256 alone."""
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    chunks = [os.urandom(RAW_CHUNK) for _ in range(16)]
    nonces = [os.urandom(12) for _ in chunks]
    aad, n, block = b"llmops-bench", size // RAW_CHUNK, os.urandom(min(64 * MIB, size))
    sealed = [aead.encrypt(nonces[i], chunks[i], aad) for i in range(len(chunks))]

    def enc() -> None:
        for i in range(n):
            aead.encrypt(nonces[i % 16], chunks[i % 16], aad)

    def dec() -> None:
        for i in range(n):
            aead.decrypt(nonces[i % 16], sealed[i % 16], aad)

    def sha() -> None:
        for _ in range(size // len(block)):
            hashlib.sha256(block).digest()

    return {"raw_encrypt": enc, "raw_decrypt": dec, "sha256": sha}


def push_into_writer(c: Any, src: Any, dst: Any, kek: bytes) -> Any:
    """What snapshots.stage_part does around Parquet: push 1 MiB writes into EncryptingWriter."""
    buf = bytearray(WRITER_PUSH)
    view = memoryview(buf)
    writer = c.EncryptingWriter(dst, kek)
    while n := src.readinto(buf):
        writer.write(view[:n])
    wrapped = writer.finish()
    _ = writer.plaintext_sha256
    return wrapped


def writer_file(c: Any, src: Path, dst: Path, kek: bytes) -> Any:
    with open(src, "rb", buffering=0) as fin, open(dst, "wb") as fout:
        wrapped = push_into_writer(c, fin, fout, kek)
        fout.flush()
        os.fsync(fout.fileno())
    return wrapped


def plain_copy(src: Path, dst: Path) -> None:
    """The disk floor: the crypto paths' I/O without the crypto (one reused 4 MiB buffer, fsync once)."""
    buf = bytearray(crypto.DEFAULT_CHUNK_SIZE)
    view = memoryview(buf)
    with open(src, "rb", buffering=0) as fin, open(dst, "wb") as fout:
        while n := fin.readinto(buf):
            fout.write(view[:n])
        fout.flush()
        os.fsync(fout.fileno())


def copyfileobj_copy(src: Path, dst: Path) -> None:
    """``shutil.copyfileobj`` with 4 MiB blocks, fsync once: the copy the previous bench compared
    with. Each block is a fresh 4 MiB bytes object, so on hosts with costly page faults it is slower
    than the floor above."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, crypto.DEFAULT_CHUNK_SIZE)
        fout.flush()
        os.fsync(fout.fileno())


def fresh_output(data: bytes) -> bytes:
    """The floor of a bytes -> bytes path: write ``data`` in 4 MiB pieces into a new BytesIO and
    take its value (what encrypt_bytes and decrypt_bytes must do anyway: the result is new memory)."""
    out, view = io.BytesIO(), memoryview(data)
    for i in range(0, len(data), crypto.DEFAULT_CHUNK_SIZE):
        out.write(view[i : i + crypto.DEFAULT_CHUNK_SIZE])
    return out.getvalue()


SMALL_FILE, SMALL_FILES = 20_000, 200
SMALL_PATHS = ["encrypt_bytes_small", "decrypt_bytes_small", "writer_small"]
MEMORY_PATHS = ["encrypt_stream_mem", "decrypt_stream_mem", "encrypt_bytes", "decrypt_bytes", "writer_mem"]
DISK_PATHS = ["encrypt_file", "decrypt_file", "writer_file"]


def _paths(c: Any, folder: Path, tag: str, data: bytes, kek: bytes) -> dict[str, tuple[Path | None, Any]]:
    """The project's paths through crypto module ``c``: name -> (file to delete first, callable)."""
    plain, sealed, back, other = (
        folder / n for n in ("plain.bin", f"{tag}.enc", f"{tag}.back", f"{tag}.w.enc")
    )
    ciphertext, wrapped = c.encrypt_bytes(data, kek)
    keys: dict[str, Any] = {}
    small = [data[i * SMALL_FILE : (i + 1) * SMALL_FILE] for i in range(SMALL_FILES)]
    small_sealed = [c.encrypt_bytes(part, kek) for part in small]
    return {
        "encrypt_bytes_small": (None, lambda: [c.encrypt_bytes(part, kek) for part in small]),
        "decrypt_bytes_small": (None, lambda: [c.decrypt_bytes(ct, wk, kek) for ct, wk in small_sealed]),
        "writer_small": (
            None,
            lambda: [push_into_writer(c, io.BytesIO(part), _Null(), kek) for part in small],
        ),
        "encrypt_stream_mem": (None, lambda: c.encrypt_stream(io.BytesIO(data), _Null(), kek)),
        "decrypt_stream_mem": (None, lambda: c.decrypt_stream(io.BytesIO(ciphertext), _Null(), wrapped, kek)),
        "encrypt_bytes": (None, lambda: c.encrypt_bytes(data, kek)),
        "decrypt_bytes": (None, lambda: c.decrypt_bytes(ciphertext, wrapped, kek)),
        "writer_mem": (None, lambda: push_into_writer(c, io.BytesIO(data), _Null(), kek)),
        "encrypt_file": (sealed, lambda: keys.__setitem__("file", c.encrypt_file(plain, sealed, kek))),
        "decrypt_file": (back, lambda: c.decrypt_file(sealed, back, keys["file"], kek)),
        "writer_file": (other, lambda: keys.__setitem__("writer", writer_file(c, plain, other, kek))),
        "check": (None, lambda: _check(c, plain, back, other, keys, kek)),
    }


def _check(c: Any, plain: Path, back: Path, other: Path, keys: dict[str, Any], kek: bytes) -> None:
    source = _sha256_file(plain)
    if _sha256_file(back) != source:
        raise SystemExit("round trip mismatch: decrypt_file did not restore the input")
    c.decrypt_file(other, back, keys["writer"], kek)
    if _sha256_file(back) != source:
        raise SystemExit("round trip mismatch: EncryptingWriter output did not decrypt to the input")


def measure(folder: Path, size: int, repeat: int, baseline: Any) -> dict[str, dict[str, float]]:
    """Median seconds per path, for "new" (and "old" with a baseline), runs interleaved."""
    kek = os.urandom(32)
    plain = folder / "plain.bin"
    _make_input(plain, size)
    data = plain.read_bytes()
    impls = {"new": _paths(crypto, folder, "new", data, kek)}
    if baseline is not None:
        impls["old"] = _paths(baseline, folder, "old", data, kek)
    context = {
        **_raw(size),
        "plain_copy": lambda: plain_copy(plain, folder / "copy.bin"),
        "copyfileobj": lambda: copyfileobj_copy(plain, folder / "copy.bin"),
        "fresh_output": lambda: fresh_output(data),
    }
    order = [("ctx", name) for name in ("raw_encrypt", "raw_decrypt", "sha256", "fresh_output")]
    for name in MEMORY_PATHS + SMALL_PATHS:
        order += [(impl, name) for impl in impls]
    for name in DISK_PATHS:
        order += [("ctx", "plain_copy"), ("ctx", "copyfileobj")] if name == "encrypt_file" else []
        order += [(impl, name) for impl in impls]
    times: dict[str, dict[str, list[float]]] = {"ctx": {}, **{impl: {} for impl in impls}}
    for rep in range(repeat):
        swap = {"old": "new", "new": "old"} if rep % 2 and baseline is not None else {}
        for impl, name in order:  # odd repetitions run the new code before the old: no position bias
            impl = swap.get(impl, impl)
            if impl == "ctx":
                target = folder / "copy.bin" if name in ("plain_copy", "copyfileobj") else None
                fn = context[name]
            else:
                target, fn = impls[impl][name]
            if target is not None:
                target.unlink(missing_ok=True)
                os.sync()
                for source in folder.glob("*.enc"):  # inputs back in the page cache: the host's
                    _sha256_file(source)  # memory reclaim may have dropped them meanwhile
                _sha256_file(plain)
            started = time.perf_counter()
            fn()
            times[impl].setdefault(name, []).append(time.perf_counter() - started)
    for paths in impls.values():
        paths["check"][1]()
    return {impl: {k: statistics.median(v) for k, v in by.items()} for impl, by in times.items()}


BASE = {
    "encrypt_stream_mem": "raw_encrypt",
    "decrypt_stream_mem": "raw_decrypt",
    "encrypt_bytes": "raw_encrypt",
    "decrypt_bytes": "raw_decrypt",
    "writer_mem": "raw_encrypt",
    "encrypt_file": "plain_copy",
    "decrypt_file": "plain_copy",
    "writer_file": "plain_copy",
}
LABELS = {
    "encrypt_stream_mem": "crypto.encrypt_stream  memory -> null",
    "decrypt_stream_mem": "crypto.decrypt_stream  memory -> null",
    "encrypt_bytes": "crypto.encrypt_bytes   bytes -> bytes",
    "decrypt_bytes": "crypto.decrypt_bytes   bytes -> bytes",
    "writer_mem": "EncryptingWriter       memory -> null, +SHA-256",
    "writer": "EncryptingWriter       memory -> null, +SHA-256",
    "encrypt_file": "crypto.encrypt_file    atomic, fsync",
    "decrypt_file": "crypto.decrypt_file    atomic, fsync",
    "writer_file": "EncryptingWriter       file, fsync, +SHA-256",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="data size in MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is shown")
    parser.add_argument("--dir", default=None, help="where the temporary files go (default: system temp)")
    parser.add_argument(
        "--baseline-src", default=None, help="an older source tree whose crypto.py to compare"
    )
    args = parser.parse_args()

    size = args.size_mb * MIB
    baseline = _load_baseline(args.baseline_src) if args.baseline_src else None
    print(f"crypto measured: {crypto.__file__}" + (f"; baseline: {baseline.__file__}" if baseline else ""))
    print(f"input: {args.size_mb} MiB ({size / GB:.3f} GB) of random bytes; median of {args.repeat} runs")
    with tempfile.TemporaryDirectory(prefix="llmops-bench-enc-", dir=args.dir) as tmp:
        s = measure(Path(tmp), size, args.repeat, baseline)
    ctx, impls = s["ctx"], [i for i in ("old", "new") if i in s]

    def gbps(seconds: float) -> str:
        return f"{size / GB / seconds:7.2f}"

    print(f"\n{'baseline':50s} {'GB/s':>7s}")
    for key, label in (
        ("raw_encrypt", "raw AES-GCM encrypt, 1 MiB chunks in memory"),
        ("raw_decrypt", "raw AES-GCM decrypt, 1 MiB chunks in memory"),
        ("plain_copy", "plain copy, reused buffer, fsync once (disk floor)"),
        ("copyfileobj", "context: shutil.copyfileobj copy, fsync once"),
        ("sha256", "context: SHA-256 alone (the writer's ceiling)"),
        ("fresh_output", "context: 4 MiB writes into a new BytesIO (bytes floor)"),
    ):
        print(f"{label:50s} {gbps(ctx[key])}")
    header = "".join(f" | {impl + ' GB/s':>9s} {'ratio':>6s}" for impl in impls)
    print(f"\n{'path (ratio: x raw in memory, x plain copy on disk)':50s}{header}")
    for key in MEMORY_PATHS + DISK_PATHS:
        cells = "".join(f" | {gbps(s[i][key]):>9s} {ctx[BASE[key]] / s[i][key]:5.2f}x" for i in impls)
        print(f"{LABELS[key]:50s}{cells}")
    print(
        f"\n{f'small files: {SMALL_FILES} x {SMALL_FILE} bytes, per file':50s}"
        + "".join(f" | {impl + ' us':>16s}" for impl in impls)
    )
    for key in SMALL_PATHS:
        cells = "".join(f" | {s[i][key] / SMALL_FILES * 1e6:16.0f}" for i in impls)
        print(f"{LABELS[key.removesuffix('_small')]:50s}{cells}")
    print()
    for key in MEMORY_PATHS + DISK_PATHS:
        target = MEMORY_TARGET if key in MEMORY_PATHS else DISK_TARGET
        value = ctx[BASE[key]] / s["new"][key]
        print(
            f"{key}: {value:.2f}x {BASE[key]} -> {'meets' if value >= target else 'BELOW'} the {target}x target"
        )


if __name__ == "__main__":
    main()
