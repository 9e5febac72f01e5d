"""Envelope encryption for snapshot files: AES-256-GCM, chunked and streaming.

Why envelope encryption: every file gets its own random 256-bit data key (DEK), and only the small
wrapped DEK depends on the long-lived key-encryption key (KEK). Rotating the KEK therefore means
re-wrapping 60 bytes per file (:func:`rewrap`), not re-encrypting the lake, and one leaked DEK
exposes one file.

Why chunks: a single AES-GCM call is limited to under 2 GiB and needs the whole message in memory.
The stream is cut into chunks (4 MiB by default), each sealed separately, so files of any size are
encrypted and decrypted in constant memory.

File format (version 1)::

    header  = magic "LLMENC" | version u8 = 1 | reserved u8 = 0 | chunk_size u32 BE | nonce_prefix 8B
    chunk_i = AES-256-GCM(DEK, nonce = nonce_prefix | i as u32 BE,
                          aad = header | i as u64 BE | final flag u8) -> ciphertext | 16-byte tag

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes; the last one (possibly empty)
carries the final flag. Binding the header, the index and the final flag into each chunk's
authentication makes tampering, reordering, dropping the tail, appending data, and splicing chunks
from another file (different header and DEK) all fail authentication, with an error that names
what failed. Integrity therefore rests on the GCM tags alone: no hash of the ciphertext is taken
or needed, and a file's bytes are read, sealed or opened once. The plaintext SHA-256 that
:class:`EncryptingWriter` reports is a content address (snapshot ids), not a protection.

Speed: every path reuses buffers allocated once per file (``readinto`` into them, ``encrypt_into``
/ ``decrypt_into`` out of them), the in-memory ones seal and open slices of the caller's bytes in
place with buffers sized by the data (a small file does not fault in chunk-sized buffers), the
writer hashes each chunk in the buffer it seals, and a file is fsynced once (``bench/encryption.py``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import logging
import os
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

KEY_BYTES = 32
TAG_BYTES = 16
NONCE_BYTES = 12
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
MAX_CHUNK_SIZE = 256 * 1024 * 1024  # refuse headers that would make us allocate absurd buffers
MAGIC = b"LLMENC"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">6sBBI8s")
HEADER_BYTES = _HEADER.size
_MAX_CHUNKS = 2**32  # the per-file counter in the nonce is 32 bits

#: Data: chunked AES-256-GCM stream, format v1. DEK wrap: AES-256-GCM with a random nonce.
ALGORITHM = "AES-256-GCM-STREAM-v1+AES-256-GCM-KW"
_WRAP_CONTEXT = b"llmops/dek-wrap/v1"


class CryptoError(Exception):
    """Base class for encryption errors."""


class DecryptionError(CryptoError):
    """Ciphertext, wrapped key or key choice failed verification; the message says which part."""


class KeyMaterialError(CryptoError, ValueError):
    """A key (file, connection password, argument) is malformed or unsafely stored.

    Messages describe the problem and where the key came from, never the key itself.
    """


def key_id(kek: bytes) -> str:
    """Public identifier of a KEK: the first 16 hex characters of its SHA-256."""
    return hashlib.sha256(kek).hexdigest()[:16]


def _check_key(key: bytes, what: str) -> bytes:
    if not isinstance(key, bytes | bytearray):
        raise KeyMaterialError(f"{what} must be bytes")
    if len(key) != KEY_BYTES:
        raise KeyMaterialError(f"{what} must be {KEY_BYTES} bytes (AES-256), got {len(key)}")
    return bytes(key)


@dataclass(frozen=True)
class WrappedKey:
    """A file's data key encrypted under a KEK, plus what is needed to pick the right KEK.

    Stored next to the ciphertext (JSON); holds no plaintext key material.
    """

    kek_id: str
    algorithm: str
    wrapped_dek_b64: str

    def to_dict(self) -> dict[str, str]:
        return {"kek_id": self.kek_id, "algorithm": self.algorithm, "wrapped_dek_b64": self.wrapped_dek_b64}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WrappedKey:
        expected = {"kek_id", "algorithm", "wrapped_dek_b64"}
        if not isinstance(data, dict) or set(data) != expected:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"wrapped key must have exactly the fields {sorted(expected)}, got {got}")
        if not all(isinstance(data[k], str) for k in expected):
            raise ValueError("wrapped key fields must be strings")
        return cls(
            kek_id=data["kek_id"], algorithm=data["algorithm"], wrapped_dek_b64=data["wrapped_dek_b64"]
        )


def _wrap_aad(kek_id_: str) -> bytes:
    return b"|".join((_WRAP_CONTEXT, ALGORITHM.encode(), kek_id_.encode()))


def _wrap(dek: bytes, kek: bytes) -> WrappedKey:
    """AES-GCM rather than RFC 3394 key wrap: the same audited primitive as the data path, and it
    authenticates context (format, algorithm, KEK id) as AAD. Random 96-bit nonces are safe far
    beyond the number of files one KEK will ever wrap (NIST: 2**32 invocations)."""
    kid = key_id(kek)
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(kek).encrypt(nonce, dek, _wrap_aad(kid))
    return WrappedKey(
        kek_id=kid, algorithm=ALGORITHM, wrapped_dek_b64=base64.b64encode(nonce + sealed).decode()
    )


def _unwrap(wrapped: WrappedKey, kek: bytes) -> bytes:
    kek = _check_key(kek, "KEK")
    if wrapped.algorithm != ALGORITHM:
        raise DecryptionError(f"unsupported algorithm {wrapped.algorithm!r} (this build reads {ALGORITHM!r})")
    kid = key_id(kek)
    if wrapped.kek_id != kid:
        raise DecryptionError(
            f"wrong key: kek_id mismatch (data key wrapped under {wrapped.kek_id}, given {kid})"
        )
    try:
        blob = base64.b64decode(wrapped.wrapped_dek_b64, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError("wrapped data key is not valid base64") from None
    if len(blob) != NONCE_BYTES + KEY_BYTES + TAG_BYTES:
        raise DecryptionError(f"wrapped data key has the wrong length ({len(blob)} bytes)")
    try:
        return AESGCM(kek).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _wrap_aad(kid))
    except InvalidTag:
        raise DecryptionError(
            "wrapped data key failed authentication (corrupted or not made with this KEK)"
        ) from None


def check_key(key: bytes, what: str = "key") -> bytes:
    """A 32-byte AES-256 key, or KeyMaterialError naming `what` (never the key)."""
    return _check_key(key, what)


def wrap_dek(dek: bytes, kek: bytes) -> WrappedKey:
    """Wrap a data key under a local KEK (what every encrypted part's key file holds)."""
    return _wrap(_check_key(dek, "data key"), _check_key(kek, "KEK"))


def unwrap_dek(wrapped: WrappedKey, kek: bytes) -> bytes:
    return _unwrap(wrapped, kek)


def rewrap(wrapped: WrappedKey, old_kek: bytes, new_kek: bytes) -> WrappedKey:
    """Re-encrypt a file's data key under a new KEK (key rotation); the file itself is untouched."""
    new_kek = _check_key(new_kek, "new KEK")
    dek = _unwrap(wrapped, old_kek)
    result = _wrap(dek, new_kek)
    log.info("rewrapped data key from kek_id %s to %s", wrapped.kek_id, result.kek_id)
    return result


def _readinto_exact(src: BinaryIO, buffer: bytearray) -> int:
    """Fill ``buffer`` from ``src``, looping over short reads; fewer bytes only at end of stream."""
    view = memoryview(buffer)
    filled = 0
    readinto = getattr(src, "readinto", None)
    while filled < len(buffer):
        n = None
        if readinto is not None:
            try:
                n = readinto(view[filled:])
            except (NotImplementedError, io.UnsupportedOperation):
                readinto = None  # a reader that only implements read()
        if readinto is None:
            data = src.read(len(buffer) - filled)
            n = len(data) if data else 0
            view[filled : filled + n] = data or b""
        if not n:
            break
        filled += n
    return filled


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">QB", index, 1 if final else 0)


def _check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE} bytes, got {chunk_size}")


def _seal_key(dek: bytes, kek: Any) -> WrappedKey:
    """Wrap a data key with a local KEK (bytes) or a key wrapper object (e.g. AWS KMS)."""
    if hasattr(kek, "wrap"):
        return kek.wrap(dek)
    return _wrap(dek, _check_key(kek, "KEK"))


def _open_key(wrapped: WrappedKey, kek: Any) -> bytes:
    if hasattr(kek, "unwrap"):
        return kek.unwrap(wrapped)
    return _unwrap(wrapped, kek)


class _Sealer:
    """Seals chunks in order into one reused output buffer (no allocation per chunk: page faults
    dominate the cost of fresh multi-MiB buffers), sized by the first chunk, the largest."""

    def __init__(self, chunk_size: int) -> None:
        self.dek = AESGCM.generate_key(bit_length=256)
        self.aead = AESGCM(self.dek)
        self.prefix = os.urandom(NONCE_BYTES - 4)
        self.header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, chunk_size, self.prefix)
        self.index, self._out = 0, bytearray()

    def seal(self, chunk: memoryview, final: bool) -> memoryview:
        if self.index >= _MAX_CHUNKS:
            raise CryptoError("input too large for one encrypted file: chunk counter exhausted")
        if len(self._out) < len(chunk) + TAG_BYTES:
            self._out = bytearray(len(chunk) + TAG_BYTES)
        out = memoryview(self._out)[: len(chunk) + TAG_BYTES]
        self.aead.encrypt_into(
            _nonce(self.prefix, self.index), chunk, _aad(self.header, self.index, final), out
        )
        self.index += 1
        return out


def encrypt_stream(
    src: BinaryIO, dst: BinaryIO, kek: Any, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> WrappedKey:
    """Encrypt ``src`` into ``dst`` under a fresh data key; return that key wrapped by ``kek``.

    ``kek`` is a 32-byte local key or a key wrapper (``wrap``/``unwrap``, e.g. AWS KMS). Memory use
    is three chunk buffers whatever the input size, reused from chunk to chunk.
    """
    if not hasattr(kek, "wrap"):
        kek = _check_key(kek, "KEK")
    _check_chunk_size(chunk_size)
    sealer = _Sealer(chunk_size)
    dst.write(sealer.header)
    current, upcoming = bytearray(chunk_size), bytearray(chunk_size)
    have = _readinto_exact(src, current)
    while True:
        more = _readinto_exact(src, upcoming) if have == chunk_size else 0
        final = more == 0
        dst.write(sealer.seal(memoryview(current)[:have], final))
        if final:
            break
        current, upcoming, have = upcoming, current, more
    wrapped = _seal_key(sealer.dek, kek)
    log.debug(
        "encrypted %d chunk(s) of up to %d bytes under kek_id %s", sealer.index, chunk_size, wrapped.kek_id
    )
    return wrapped


class EncryptingWriter(io.RawIOBase):
    """A write-only file object that encrypts what is written to it into ``dst``, chunk by chunk.

    For producers that push bytes (a Parquet writer) rather than offer a stream to pull from; the
    output is byte-for-byte the format of :func:`encrypt_stream`, so :func:`decrypt_stream` reads
    it. A chunk is sealed only once more data follows it, so the final flag lands on the right
    chunk. ``finish()`` seals the last chunk and returns the wrapped data key.

    It also hashes the plaintext, ``sha256(everything written)`` whatever the write sizes: the
    content address snapshot ids are built from (integrity comes from the GCM tags, see the module
    docstring), so it is kept, and it is the writer's ceiling (SHA-256 is several times slower than
    AES-GCM). Each chunk is copied once into one reused buffer, then hashed and sealed from there
    while it is still in cache: one pass. Hashing on a second thread was tried and measured slower
    on a loaded two-core host (``bench/encryption.py``), so it is not done.
    """

    def __init__(self, dst: BinaryIO, kek: Any, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__()
        self._kek = kek if hasattr(kek, "wrap") else _check_key(kek, "KEK")
        _check_chunk_size(chunk_size)
        self._dst, self._chunk_size, self._sealer = dst, chunk_size, _Sealer(chunk_size)
        self._chunk = bytearray(chunk_size)
        self._fill = self._plain_bytes = 0
        self._sha256 = hashlib.sha256()  # of the sealed chunks; the one being filled is added on demand
        self._digest: str | None = None
        self._wrapped: WrappedKey | None = None
        dst.write(self._sealer.header)

    def writable(self) -> bool:
        return True

    def _seal(self, final: bool) -> None:
        chunk = memoryview(self._chunk)[: self._fill]
        self._sha256.update(chunk)
        self._dst.write(self._sealer.seal(chunk, final))
        self._fill = 0

    def write(self, data: Any) -> int:  # type: ignore[override]
        if self._wrapped is not None:
            raise ValueError("write after finish()")
        view = memoryview(data).cast("B")
        size, pos = len(view), 0
        while pos < size:
            if self._fill == self._chunk_size:  # full, and more data follows: not the last chunk
                self._seal(final=False)
            take = min(self._chunk_size - self._fill, size - pos)
            self._chunk[self._fill : self._fill + take] = view[pos : pos + take]
            self._fill += take
            pos += take
        self._plain_bytes += size
        return size

    def finish(self) -> WrappedKey:
        """Seal the final chunk; return the wrapped data key. The writer cannot be used afterwards."""
        if self._wrapped is None:
            self._seal(final=True)
            self._digest = self._sha256.hexdigest()
            self._wrapped = _seal_key(self._sealer.dek, self._kek)
        return self._wrapped

    @property
    def plaintext_sha256(self) -> str:
        """SHA-256 (hex) of everything written so far; after ``finish()``, of the whole file."""
        if self._digest is not None:
            return self._digest
        partial = self._sha256.copy()
        partial.update(memoryview(self._chunk)[: self._fill])
        return partial.hexdigest()

    @property
    def plaintext_bytes(self) -> int:
        return self._plain_bytes

    def close(self) -> None:
        # Parquet writers close their sink when done; sealing there keeps the file complete.
        if not self.closed:
            self.finish()
        super().close()


def _parse_header(header: bytes) -> tuple[int, bytes]:
    if len(header) < HEADER_BYTES:
        if header and not MAGIC.startswith(header[: len(MAGIC)]):
            raise DecryptionError("not an llmops encrypted file (bad magic bytes)")
        raise DecryptionError(f"file truncated: header incomplete ({len(header)} of {HEADER_BYTES} bytes)")
    magic, version, reserved, chunk_size, prefix = _HEADER.unpack(header)
    if magic != MAGIC:
        raise DecryptionError("not an llmops encrypted file (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise DecryptionError(
            f"unsupported encrypted-file format version {version} (this build reads {FORMAT_VERSION})"
        )
    if reserved != 0:
        raise DecryptionError("corrupt header: reserved byte is not zero")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise DecryptionError(f"corrupt header: chunk size {chunk_size} out of range")
    return chunk_size, prefix


def _open_chunk(
    aead: AESGCM, prefix: bytes, header: bytes, index: int, sealed: memoryview, final: bool, out: memoryview
) -> None:
    """Authenticate and decrypt one sealed chunk into ``out``; on failure, check whether the final
    flag was the issue, to name what failed (truncation, appended data, tampering)."""
    if len(sealed) < TAG_BYTES:
        raise DecryptionError(f"file truncated: chunk {index} is shorter than its authentication tag")
    nonce = _nonce(prefix, index)
    with contextlib.suppress(InvalidTag):
        aead.decrypt_into(nonce, sealed, _aad(header, index, final), out)
        return
    try:
        aead.decrypt(nonce, bytes(sealed), _aad(header, index, not final))
    except InvalidTag:
        hint = " (wrong data key for this file, or a corrupted header)" if index == 0 else ""
        what = f"chunk {index} failed authentication: tampered, reordered or truncated"
        raise DecryptionError(what + hint) from None
    if final:
        raise DecryptionError(f"file truncated: final chunk missing (stream ends after chunk {index})")
    raise DecryptionError(f"unexpected data after the final chunk (chunk {index})")


def decrypt_stream(src: BinaryIO, dst: BinaryIO, wrapped: WrappedKey, kek: Any) -> None:
    """Decrypt a stream made by :func:`encrypt_stream`, verifying every chunk.

    Each chunk is authenticated before its plaintext is written, but truncation is only detectable
    at the end: if this raises, ``dst`` may hold a verified prefix and must be discarded
    (:func:`decrypt_file` does that for you). Three buffers, allocated once, reused per chunk.
    """
    dek = _open_key(wrapped, kek)
    header = bytearray(HEADER_BYTES)
    header = bytes(header[: _readinto_exact(src, header)])
    chunk_size, prefix = _parse_header(header)
    aead, block, index = AESGCM(dek), chunk_size + TAG_BYTES, 0
    current, upcoming, plaintext = bytearray(block), bytearray(block), memoryview(bytearray(chunk_size))
    have = _readinto_exact(src, current)
    if not have:
        raise DecryptionError("file truncated: no chunks after the header (final chunk missing)")
    while True:
        more = _readinto_exact(src, upcoming) if have == block else 0
        final = more == 0
        out = plaintext[: max(0, have - TAG_BYTES)]
        _open_chunk(aead, prefix, header, index, memoryview(current)[:have], final, out)
        dst.write(out)
        if final:
            return
        if index + 1 >= _MAX_CHUNKS:
            raise DecryptionError("corrupt file: more chunks than the format allows")
        current, upcoming, have = upcoming, current, more
        index += 1


def encrypt_bytes(data: bytes, kek: Any, chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[bytes, WrappedKey]:
    """In-memory :func:`encrypt_stream` (same bytes): (ciphertext, wrapped data key). Chunks are
    sealed straight from slices of ``data``, with no copy into a chunk buffer."""
    if not hasattr(kek, "wrap"):
        kek = _check_key(kek, "KEK")
    _check_chunk_size(chunk_size)
    src = memoryview(data).cast("B")
    chunks = max(1, -(-len(src) // chunk_size))
    if chunks > _MAX_CHUNKS:
        raise CryptoError("input too large for one encrypted file: chunk counter exhausted")
    sealer, out = _Sealer(chunk_size), io.BytesIO()
    out.write(sealer.header)
    for i in range(chunks):
        out.write(sealer.seal(src[i * chunk_size : (i + 1) * chunk_size], i == chunks - 1))
    return out.getvalue(), _seal_key(sealer.dek, kek)


def decrypt_bytes(ciphertext: bytes, wrapped: WrappedKey, kek: Any) -> bytes:
    """In-memory :func:`decrypt_stream`: the same checks and errors; chunks are opened straight from
    slices of ``ciphertext`` (boundaries from its length) into one reused plaintext buffer."""
    dek, src = _open_key(wrapped, kek), memoryview(ciphertext).cast("B")
    header, body = bytes(src[:HEADER_BYTES]), src[HEADER_BYTES:]
    chunk_size, prefix = _parse_header(header)
    if not body:
        raise DecryptionError("file truncated: no chunks after the header (final chunk missing)")
    block, aead = chunk_size + TAG_BYTES, AESGCM(dek)
    chunks = -(-len(body) // block)
    if chunks > _MAX_CHUNKS:
        raise DecryptionError("corrupt file: more chunks than the format allows")
    out, plaintext = io.BytesIO(), memoryview(bytearray(min(chunk_size, len(body))))
    for i in range(chunks):
        sealed = body[i * block : (i + 1) * block]
        plain = plaintext[: max(0, len(sealed) - TAG_BYTES)]
        _open_chunk(aead, prefix, header, i, sealed, i == chunks - 1, plain)
        out.write(plain)
    return out.getvalue()


@contextlib.contextmanager
def _atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A temp file in the target's directory that replaces ``path`` only if the block succeeds,
    so readers never see a partial file and a failure leaves nothing behind. Created 0600."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the platform allows it
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def encrypt_file(
    path_in: str | os.PathLike[str],
    path_out: str | os.PathLike[str],
    kek: Any,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> WrappedKey:
    """Encrypt a file to ``path_out`` atomically; return the wrapped data key to store alongside."""
    with open(path_in, "rb", buffering=0) as src, _atomic_output(Path(path_out)) as dst:
        return encrypt_stream(src, dst, kek, chunk_size)


def decrypt_file(
    path_in: str | os.PathLike[str], path_out: str | os.PathLike[str], wrapped: WrappedKey, kek: Any
) -> None:
    """Decrypt a file to ``path_out`` atomically: on any failure ``path_out`` is left untouched."""
    with open(path_in, "rb", buffering=0) as src, _atomic_output(Path(path_out)) as dst:
        decrypt_stream(src, dst, wrapped, kek)


# --------------------------------------------------------------------------------------------------
# Key material
# --------------------------------------------------------------------------------------------------


def key_from_b64(text: str | bytes, what: str = "key", length: int | None = KEY_BYTES) -> bytes:
    """Decode a base64 (standard or URL-safe) key; errors name ``what``, never the key's content."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise KeyMaterialError(f"{what} is not base64 text") from None
    if not isinstance(text, str):
        raise KeyMaterialError(f"{what} must be a base64 string")
    compact = "".join(text.split())
    if not compact:
        raise KeyMaterialError(f"{what} is empty")
    try:
        altchars = b"-_" if ("-" in compact or "_" in compact) else None
        key = base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise KeyMaterialError(f"{what} is not valid base64") from None
    if length is not None and len(key) != length:
        raise KeyMaterialError(f"{what} must decode to {length} bytes, got {len(key)}")
    return key


def _read_key_file(path: Path) -> bytes:
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise KeyMaterialError(f"key file {path} is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise KeyMaterialError(
            f"key file {path} is readable or writable by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"restrict it with: chmod 600 {path}"
        )
    return key_from_b64(path.read_bytes(), what=f"key file {path}")


def load_or_create_key_file(path: str | os.PathLike[str]) -> bytes:
    """Read a base64 32-byte key from ``path``, creating it (mode 0600, O_EXCL) if it does not exist.

    Never overwrites: an existing file that is malformed or group/world-accessible is an error, so a
    misconfiguration cannot silently replace a key (which would make existing data unreadable).
    """
    key_path = Path(path)
    try:
        return _read_key_file(key_path)
    except FileNotFoundError:
        pass
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = os.urandom(KEY_BYTES)
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return _read_key_file(key_path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64encode(key) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            key_path.unlink()
        raise
    log.info("created key file %s (kek_id %s)", key_path, key_id(key))
    return key
