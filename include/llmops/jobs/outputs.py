"""A job's outputs (adapters, checkpoints, merged models), encrypted at rest in its job folder.

Weights trained on company records can memorise them, so a job whose inputs are encrypted writes
its outputs encrypted too. It works in a private scratch folder (:func:`job_work_dir`: under
``/dev/shm`` when it has room, else a 0700 temporary folder; removed when the job ends, on
success and on failure alike) and publishes each folder file by file: ``<name>`` becomes
``<name>.enc`` (the chunked AES-256-GCM format of :mod:`llmops.privacy.crypto`, streamed, so a
multi-GB shard is never held in memory) beside ``<name>.enc.key.json`` (its data key, wrapped by
the KEK or KMS), the layout of :mod:`llmops.encrypted_files`.

Readers (the evaluation job, a chained stage's training job, registration) open a model folder
with :func:`opened_model_dir`: an encrypted one is decrypted into a private scratch folder that is
removed when the block ends; a folder written before outputs were encrypted (plaintext files) is
used where it is. Weight hashes stay those of the plaintext (``weights_sha256``), so lineage keeps
naming the same bytes; a reader given the expected hash checks it, which also catches a folder
swapped whole (ciphertext and key files from another job) that would otherwise decrypt cleanly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.encrypted_files import ENCRYPTED_SUFFIX, KEY_SUFFIX
from llmops.jobs.artifacts import canonical_json_sha256, write_json_atomic
from llmops.jobs.runtime import JobInputError, resolve_model_dir
from llmops.jobs.staging import _fetch, cache_root, is_remote

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

WORK_PREFIX = "llmops-job-"


def _visible_files(root: Path) -> list[str]:
    """Relative paths of the files under `root`, hidden ones (writes in progress) left out."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def is_encrypted_dir(folder: Path) -> bool:
    """Whether a local folder holds published encrypted files (``*.enc`` with key files)."""
    if not folder.is_dir():
        return False
    return any(
        p.name.endswith(ENCRYPTED_SUFFIX) and p.with_name(p.name + KEY_SUFFIX).is_file()
        for p in folder.rglob("*" + ENCRYPTED_SUFFIX)
    )


def published_names(files: list[str], plain: set[str]) -> set[str]:
    """The names a folder of `files` has once published encrypted (`plain` ones are kept as is)."""
    out: set[str] = set()
    for rel in files:
        if rel in plain:
            out.add(rel)
        else:
            out.update((rel + ENCRYPTED_SUFFIX, rel + ENCRYPTED_SUFFIX + KEY_SUFFIX))
    return out


def _encrypt_one(source: Path, dest: str, kek: Any, scratch: Path) -> None:
    """`source` as `dest`.enc beside its key file, streamed chunk by chunk. A local file is sealed
    in place (atomically); an object is sealed into `scratch` and uploaded in one PUT. A write
    stopped half way leaves ciphertext without its key, which no reader accepts."""
    from llmops import storage
    from llmops.privacy.crypto import encrypt_file

    target = dest + ENCRYPTED_SUFFIX
    if storage.is_local(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        wrapped = encrypt_file(source, target, kek)
        storage.write_json(target + KEY_SUFFIX, wrapped.to_dict())
        return
    sealed = scratch / "sealed"
    try:
        wrapped = encrypt_file(source, sealed, kek)
        storage.write_json(target + KEY_SUFFIX, wrapped.to_dict())
        storage.copy(str(sealed), target)
    finally:
        sealed.unlink(missing_ok=True)


def publish_encrypted_tree(source: Path, dest: str, kek: Any, *, plain: tuple[str, ...] = ()) -> int:
    """Publish every file under `source` encrypted under `dest` (a local folder or an ``s3://``
    prefix); the `plain` names (a checkpoint's completion marker: no record data) are copied as
    they are, last. Files under `dest` that this publication does not hold (an earlier attempt's)
    are deleted afterwards, so `dest` ends up the exact encrypted copy. Returns the file count."""
    from llmops import storage

    files = _visible_files(source)
    encrypted = [f for f in files if f not in plain]
    with tempfile.TemporaryDirectory(prefix="llmops-seal-") as scratch:
        for rel in encrypted:
            _encrypt_one(source / rel, storage.join(dest, rel), kek, Path(scratch))
    for rel in files:
        if rel in plain:
            storage.copy(str(source / rel), storage.join(dest, rel))
    keep = published_names(files, set(plain))
    for uri in storage.list_files(dest, "**"):
        if uri[len(dest.rstrip("/")) + 1 :] not in keep:
            storage.delete(uri)
    return len(files)


def decrypt_tree(source: Path, target: Path, kek: Any, field: str, location: str) -> None:
    """A local published folder's plaintext into `target`: ``*.enc`` files decrypted (each error
    names the file, as `location`/<name>), other files (not encrypted) copied."""
    from llmops.privacy.crypto import CryptoError, WrappedKey, decrypt_file

    for rel in _visible_files(source):
        if rel.endswith(KEY_SUFFIX) and (source / rel.removesuffix(KEY_SUFFIX)).is_file():
            continue
        out = target / rel.removesuffix(ENCRYPTED_SUFFIX)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not rel.endswith(ENCRYPTED_SUFFIX):
            shutil.copyfile(source / rel, out)
            continue
        name = f"{location.rstrip('/')}/{rel}"
        key_file = source / (rel + KEY_SUFFIX)
        if not key_file.is_file():
            raise JobInputError(f"{field}: {name} is encrypted but its key file is missing")
        try:
            decrypt_file(source / rel, out, WrappedKey.from_dict(json.loads(key_file.read_text())), kek)
        except (CryptoError, ValueError, KeyError) as exc:
            raise JobInputError(f"{field}: cannot decrypt {name}: {exc}") from None


def stored_model_dir(location: str, field: str) -> Path:
    """The folder as stored (fetched into the cache, still encrypted, for an ``s3://`` one)."""

    if is_remote(location):
        return _fetch(location, "models", field, single_file=False)
    folder = Path(location)
    if not folder.is_dir():
        raise JobInputError(f"{field}: directory not found: {folder}")
    return folder


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@contextlib.contextmanager
def opened_model_dir(
    location: str,
    field: str = "base_model_path",
    *,
    expected_sha256: str | None = None,
    key_ring: Callable[[], Any] | None = None,
) -> Iterator[Path]:
    """A local plaintext ``save_pretrained`` folder for `location` while the block runs.

    An encrypted folder is decrypted into a private scratch folder (removed when the block ends,
    whatever happens); a plaintext one is used where it is. With `expected_sha256`, the weights'
    hash must be that one. `key_ring` returns the keys (default: the job's, as for its inputs).
    """
    from llmops.jobs.artifacts import weights_sha256
    from llmops.jobs.scratch import job_key_ring, private_scratch

    raw = stored_model_dir(location, field)
    with contextlib.ExitStack() as stack:
        folder = raw
        if is_encrypted_dir(raw):
            kek = (key_ring or job_key_ring)()
            folder = stack.enter_context(private_scratch(_folder_bytes(raw)))
            logger.info("%s: decrypting %s into %s (removed once used)", field, location, folder)
            decrypt_tree(raw, folder, kek, field, location)
        model_dir = resolve_model_dir(str(folder), field)
        if expected_sha256 is not None:
            try:
                found = weights_sha256(model_dir)
            except FileNotFoundError:
                raise JobInputError(f"{field}: {location} has no weight files") from None
            if found != expected_sha256:
                raise JobInputError(
                    f"{field}: the weights in {location} are not the ones recorded for it "
                    f"(sha256 {found[:12]}..., expected {expected_sha256[:12]}...): replaced or tampered"
                )
        yield model_dir


def job_work_dir(output_uri: str, needed_bytes: int = 0) -> Path:
    """The private folder a job writes its outputs in before publishing them encrypted: the same
    path for every process of the job on a node (named after the output), 0700, under /dev/shm
    when it has room for `needed_bytes`. A folder left by a killed attempt is reused (and emptied
    by the job's own cleanup when it ends)."""
    from llmops.jobs.artifacts import canonical_json_sha256
    from llmops.jobs.scratch import scratch_parent

    name = f"{WORK_PREFIX}{os.getuid()}-{canonical_json_sha256(output_uri)[:16]}"
    parents = [p for p in (scratch_parent(0), Path(tempfile.gettempdir())) if p is not None]
    existing = [p / name for p in parents if (p / name).is_dir()]
    folder = existing[0] if existing else (scratch_parent(needed_bytes) or Path(tempfile.gettempdir())) / name
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid():
        raise JobInputError(f"output_dir: the job's scratch folder {folder} belongs to another user")
    folder.chmod(0o700)
    return folder


def remove_work_dir(folder: Path) -> None:
    """Remove a job's scratch folder (everything it held in plaintext)."""
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():  # pragma: no cover - only if removal failed
        logger.error("could not remove the job's scratch folder %s", folder)
    else:
        logger.info("removed the job's scratch folder %s", folder)


@dataclass(frozen=True)
class OutputLocation:
    """The job's ``output_dir``: where files are written locally, and where they are published.

    For a local ``output_dir`` both are the same folder and publishing is a no-op. For an
    ``s3://`` one, the job works in a per-output folder of the cache (the same path on every
    rank, so a distributed job agrees on it) and uploads what it publishes. With a key (``kek``:
    the job's inputs are encrypted, so are its outputs) the job works in a private scratch folder
    (:func:`job_work_dir`) whatever ``output_dir`` is, and publishes folders
    encrypted file by file (:func:`publish_encrypted_tree`).
    """

    uri: str
    local_dir: Path
    remote: bool
    kek: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def for_uri(cls, uri: str, kek: Any = None, needed_bytes: int = 0) -> OutputLocation:
        if kek is not None:
            return cls(uri=uri, local_dir=job_work_dir(uri, needed_bytes), remote=True, kek=kek)
        if not is_remote(uri):
            return cls(uri=uri, local_dir=Path(uri), remote=False)
        name = uri.rstrip("/").rsplit("/", 1)[-1] or "output"
        key = canonical_json_sha256(uri)[:16]
        return cls(uri=uri, local_dir=cache_root() / "jobs" / f"{name}-{key}", remote=True)

    @property
    def encrypted(self) -> bool:
        """Whether published folders are encrypted (and ``local_dir`` is a private scratch folder)."""
        return self.kek is not None

    def fetch_file(self, rel: str, local: Path, field: str = "output_dir") -> None:
        """A published file's plaintext into `local` (decrypted when it was published encrypted)."""
        from llmops import storage

        if not self.encrypted:
            storage.copy(self.join(rel), str(local))
            return
        decrypt_published_file(self.join(rel), local, self.kek, field)

    def join(self, *parts: str) -> str:
        """The published location (URI or path) of a relative path."""
        if self.remote:
            from llmops import storage

            return storage.join(self.uri, *parts)
        return str(self.local_dir.joinpath(*parts))

    def upload_file(self, rel: str) -> None:
        """Publish one local file (a single PUT: the object appears whole or not at all)."""
        if self.remote:
            from llmops import storage

            storage.copy(str(self.local_dir / rel), self.join(rel))

    def upload_tree(self, rel: str, *, last: str | None = None) -> int:
        """Publish every file under a local folder, ``last`` (a file name in it) last.

        Remote objects under the prefix that the local folder no longer has (from an earlier
        attempt) are deleted afterwards, so the prefix ends up an exact copy. Returns the count.
        """
        if not self.remote:
            return 0
        from llmops import storage

        root = self.local_dir / rel
        if self.encrypted:
            return publish_encrypted_tree(root, self.join(rel), self.kek, plain=(last,) if last else ())
        files = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        ordered = [f for f in files if f != last] + ([last] if last in files else [])
        for name in ordered:
            storage.copy(str(root / name), storage.join(self.uri, rel, name))
        prefix = storage.join(self.uri, rel)
        for uri in storage.list_files(prefix, "**"):
            if uri[len(prefix) + 1 :] not in files:
                storage.delete(uri)
        return len(ordered)

    def write_json(self, rel: str, data: Any) -> None:
        """Write a JSON file locally (atomically) and publish it."""
        write_json_atomic(self.local_dir / rel, data)
        self.upload_file(rel)

    def delete(self, rel: str) -> None:
        """Remove a file or folder locally and, for a remote output, remotely too."""
        local = self.local_dir / rel
        if local.is_dir():
            shutil.rmtree(local, ignore_errors=True)
        else:
            local.unlink(missing_ok=True)
        if self.remote:
            from llmops import storage

            storage.delete(self.join(rel))


def decrypt_published_file(source: str, target: Path, kek: Any, field: str) -> None:
    """One published file into `target`: ``<source>.enc`` decrypted when it is there, else the
    plaintext ``<source>`` of a folder written before outputs were encrypted."""
    from llmops import storage
    from llmops.encrypted_files import ENCRYPTED_SUFFIX, KEY_SUFFIX
    from llmops.privacy.crypto import CryptoError, WrappedKey, decrypt_file

    sealed = source + ENCRYPTED_SUFFIX
    if not storage.exists(sealed):
        storage.copy(source, str(target))
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    local = storage.local_path(sealed) if storage.is_local(sealed) else None
    with tempfile.TemporaryDirectory(prefix="llmops-fetch-") as tmp:
        if local is None:
            local = Path(tmp) / "sealed"
            storage.copy(sealed, str(local))
        try:
            wrapped = WrappedKey.from_dict(storage.read_json(sealed + KEY_SUFFIX))
            decrypt_file(local, target, wrapped, kek)
        except FileNotFoundError:
            raise JobInputError(f"{field}: {sealed} is encrypted but its key file is missing") from None
        except (CryptoError, ValueError, KeyError) as exc:
            raise JobInputError(f"{field}: cannot decrypt {sealed}: {exc}") from None
