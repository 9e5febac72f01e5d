"""Single record-level files in the lake, encrypted at rest like snapshot parts.

A snapshot holds more than Parquet parts: a training snapshot's split files (``train.jsonl``,
``eval.jsonl``) are what the jobs read, and a run's leakage-probe prompts are cut from training
records. Each is written as ``<name>.enc`` (the chunked AES-256-GCM format of
:mod:`llmops.privacy.crypto`, under its own data key) beside ``<name>.enc.key.json`` (that data key
wrapped by the KEK or KMS), so key rotation, retention and erasure treat it as they treat a part.

Hashes stay those of the plaintext: the ledger records what a job must read, and a job checks the
bytes it decrypted, not ciphertext that differs at every write.
"""

from __future__ import annotations

import hashlib
from typing import Any

from llmops import storage

ENCRYPTED_SUFFIX = ".enc"
KEY_SUFFIX = ".key.json"


def encrypted_name(name: str) -> str:
    """The stored name of a file that is written encrypted (``train.jsonl`` -> ``train.jsonl.enc``)."""
    return name + ENCRYPTED_SUFFIX


def key_uri(uri: str) -> str:
    """Where an encrypted file's wrapped data key lives."""
    return uri + KEY_SUFFIX


def write_encrypted(uri: str, data: bytes, kek: Any) -> str:
    """Encrypt `data` under a fresh data key into `uri` (and its key file); return the plaintext's
    sha256. The key file is written first: a reader never finds ciphertext without its key, and a
    write killed in between leaves a pair that fails to decrypt, which :func:`plaintext_sha256`
    reports as absent, so a retry writes both again."""
    from llmops.privacy.crypto import encrypt_bytes

    if kek is None:
        raise ValueError(f"{uri}: record-level files are encrypted at rest; no key was given")
    blob, wrapped = encrypt_bytes(data, kek)
    storage.write_json(key_uri(uri), wrapped.to_dict())
    storage.write_bytes(uri, blob)
    return hashlib.sha256(data).hexdigest()


def read_encrypted(uri: str, kek: Any) -> bytes:
    """The plaintext of an encrypted lake file (in memory), authenticated chunk by chunk."""
    from llmops.privacy.crypto import WrappedKey, decrypt_bytes

    wrapped = WrappedKey.from_dict(storage.read_json(key_uri(uri)))
    return decrypt_bytes(storage.read_bytes(uri), wrapped, kek)


def plaintext_sha256(uri: str, kek: Any) -> str | None:
    """The sha256 of what an encrypted file holds; None when it or its key is missing or it does
    not decrypt (an interrupted or damaged write: to be written again)."""
    from llmops.privacy.crypto import CryptoError

    if not (storage.exists(uri) and storage.exists(key_uri(uri))):
        return None
    try:
        return hashlib.sha256(read_encrypted(uri, kek)).hexdigest()
    except (CryptoError, ValueError, KeyError):
        return None
