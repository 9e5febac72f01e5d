"""A job's record-level inputs, decrypted into a private scratch folder that lives only while they
are read.

Split files and probe prompts are stored encrypted (``<name>.enc`` beside ``<name>.enc.key.json``,
see :mod:`llmops.encrypted_files`). A job fetches the ciphertext as it fetches any input (object
storage lands in the cache, still encrypted), then decrypts into a folder of its own: under
``/dev/shm`` when that exists and has room (memory-backed: the plaintext never reaches a disk),
else a fresh 0700 temporary folder. The folder is removed when the block ends, on success and on
failure alike; nothing decrypted is written anywhere else. Each file's plaintext is checked against
the hash the ledger recorded before the job reads it.

A file without the encryption header (a snapshot from before split files were encrypted, a golden
set from the spec) is used where it is, as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmops.jobs.runtime import JobInputError, check_data_file
from llmops.jobs.scratch import is_encrypted, job_key_ring, private_scratch
from llmops.jobs.staging import fetch_file

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobInput:
    """One input file of a job: where the config says it is, its config field, its recorded hash."""

    location: str
    field: str
    sha256: str | None = None


def _decrypt(source: Path, item: JobInput, target: Path, kek: object) -> None:
    from llmops.privacy.crypto import CryptoError, WrappedKey, decrypt_file

    key_path = fetch_file(item.location + ".key.json", f"{item.field} (key file)")
    try:
        wrapped = WrappedKey.from_dict(json.loads(key_path.read_text()))
        decrypt_file(source, target, wrapped, kek)
    except FileNotFoundError:
        raise JobInputError(
            f"{item.field}: {item.location} is encrypted but its key file is missing"
        ) from None
    except (CryptoError, ValueError) as exc:
        raise JobInputError(f"{item.field}: cannot decrypt {item.location}: {exc}") from None


@contextlib.contextmanager
def decrypted_inputs(items: Sequence[JobInput]) -> Iterator[list[Path]]:
    """Local plaintext paths of `items`, in order, each checked against its recorded hash; the
    decrypted ones live in a private scratch folder that is gone when the block ends."""
    fetched = [fetch_file(item.location, item.field) for item in items]
    encrypted = [is_encrypted(path) for path in fetched]
    needed = sum(path.stat().st_size for path, enc in zip(fetched, encrypted, strict=True) if enc)
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(private_scratch(needed)) if any(encrypted) else None
        if scratch is not None:
            logger.info("decrypting %d input(s) into %s (removed once read)", sum(encrypted), scratch)
        kek = job_key_ring() if scratch is not None else None
        paths = []
        for i, (item, path, enc) in enumerate(zip(items, fetched, encrypted, strict=True)):
            if enc:
                assert scratch is not None
                plain = scratch / f"{i:02d}-{Path(item.location).name.removesuffix('.enc')}"
                _decrypt(path, item, plain, kek)
                path = plain
            check_data_file(path, item.sha256, item.field)
            paths.append(path)
        yield paths
