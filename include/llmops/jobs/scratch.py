"""Private scratch folders for a job's plaintext: decrypted inputs, outputs before they are
published encrypted. Under ``/dev/shm`` when it exists and has room (memory-backed: the plaintext
never reaches a disk), else a fresh 0700 temporary folder; removed when the block ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from llmops.jobs.runtime import JobInputError

if TYPE_CHECKING:
    from collections.abc import Iterator

logger = logging.getLogger(__name__)

SHM = Path("/dev/shm")
#: Room left free in /dev/shm besides the inputs (DataLoader workers and NCCL use it too).
SHM_HEADROOM_BYTES = 256 * 1024 * 1024
SCRATCH_PREFIX = "llmops-inputs-"


def is_encrypted(path: Path) -> bool:
    """Whether a file starts with llmops' encrypted-file header (a missing file is left to the
    reader, whose error names the field)."""
    from llmops.privacy.crypto import MAGIC

    if not path.is_file():
        return False
    with path.open("rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def scratch_parent(needed_bytes: int) -> Path | None:
    """/dev/shm when it exists, is writable and has room for `needed_bytes` plus headroom; else
    None (the system's temporary folder)."""
    if not (SHM.is_dir() and os.access(SHM, os.W_OK | os.X_OK)):
        return None
    try:
        free = shutil.disk_usage(SHM).free
    except OSError:
        return None
    return SHM if free >= needed_bytes + SHM_HEADROOM_BYTES else None


@contextlib.contextmanager
def private_scratch(needed_bytes: int = 0) -> Iterator[Path]:
    """A folder only this user can enter (0700), removed when the block ends, whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=scratch_parent(needed_bytes)))
    try:
        folder.chmod(0o700)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():  # pragma: no cover - only if removal failed
            logger.error("could not remove the decrypted inputs in %s", folder)


def job_key_ring() -> object:
    """The job's key ring; a job without one fails naming what it could not read."""
    from llmops.privacy.crypto import KeyMaterialError
    from llmops.privacy.keys import job_key_ring

    try:
        return job_key_ring()
    except KeyMaterialError as exc:
        raise JobInputError(f"the job's inputs are encrypted and it has no key to read them: {exc}") from None
