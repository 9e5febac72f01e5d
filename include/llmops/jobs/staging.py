"""Moving job inputs and outputs between object storage and the local disk.

Models are loaded with ``from_pretrained`` and the Trainer writes checkpoints with plain file
I/O, so both need a local directory. Inputs given as ``s3://`` URIs are therefore fetched into a
local cache first, and a remote ``output_dir`` is mirrored by a local working directory whose
files are uploaded with :mod:`llmops.storage` (the one lake I/O layer, so credentials and
endpoints are resolved exactly as everywhere else in the pipeline).

The cache is content-addressed: an entry's key is the URI plus the listing of its objects
(relative path, size, ETag), so a search running many trials downloads the base model once per
machine, and a changed object is a new entry, never a stale hit. Entries appear by atomic rename
under a file lock, so concurrent trials and the ranks of a distributed job share one download.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.errors import safe_error_text
from llmops.jobs.artifacts import canonical_json_sha256, weights_sha256, write_json_atomic
from llmops.jobs.config import REMOTE_SCHEMES
from llmops.jobs.runtime import JobInputError, resolve_model_dir

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

CACHE_ENV = "LLMOPS_CACHE_DIR"
_INFO_SUFFIX = ".info.json"


def is_remote(location: str) -> bool:
    """True for object-storage URIs, which must be staged; False for local paths."""
    return location.startswith(REMOTE_SCHEMES)


def cache_root() -> Path:
    """Where fetched inputs and the working copies of remote outputs live (``LLMOPS_CACHE_DIR``).

    On Kubernetes this should be the pod's scratch volume; the default is the user's cache.
    """
    configured = os.environ.get(CACHE_ENV)
    root = Path(configured) if configured else Path.home() / ".cache" / "llmops"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _file_lock(path: Path) -> Any:
    """An inter-process lock (filelock ships with the Hugging Face stack the job depends on)."""
    from filelock import FileLock

    return FileLock(str(path) + ".lock")


def remote_listing(uri: str, field: str) -> list[dict[str, Any]]:
    """Every object under a URI (or the object itself): relative path, size and ETag, sorted.

    Hidden names (temporary files of a write in progress) and folder markers are skipped, as
    :func:`llmops.storage.list_files` does.
    """
    from llmops import storage

    fs, path = storage.filesystem(uri)
    base = path.rstrip("/")
    try:
        if fs.isfile(base):
            found = {base: fs.info(base)}
            base = base.rsplit("/", 1)[0]
        else:
            found = fs.find(base, detail=True)
    except (OSError, ValueError) as exc:
        # The field and URI say where; a storage client's text can quote credentials or contents.
        raise JobInputError(f"{field}: cannot list {uri}: {safe_error_text(exc)}") from None
    listing = []
    for name, info in found.items():
        if info.get("type") == "directory" or name.endswith("/") or not name.startswith(base + "/"):
            continue
        rel = name[len(base) + 1 :]
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        etag = info.get("ETag") or info.get("etag") or info.get("mtime")
        listing.append({"path": rel, "size": int(info.get("size") or 0), "etag": str(etag or "")})
    return sorted(listing, key=lambda item: item["path"])


def _download(uri: str, listing: Iterable[dict[str, Any]], target: Path, *, single_file: bool) -> None:
    from llmops import storage

    for item in listing:
        source = uri if single_file else storage.join(uri, item["path"])
        local = target / item["path"]
        storage.copy(source, str(local))
        if local.stat().st_size != item["size"]:
            raise OSError(f"{source}: got {local.stat().st_size} bytes, expected {item['size']}")


def _fetch(uri: str, kind: str, field: str, *, single_file: bool) -> Path:
    """Fetch a remote object or prefix into the cache; returns the entry directory."""
    listing = remote_listing(uri, field)
    if single_file:
        listing = listing[:1] if listing and uri.endswith("/" + listing[0]["path"]) else []
        if not listing:
            raise JobInputError(f"{field}: file not found: {uri}")
    elif not listing:
        raise JobInputError(f"{field}: nothing found under {uri}")
    key = canonical_json_sha256({"uri": uri, "objects": listing})[:24]
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "root"
    entry = cache_root() / kind / f"{name}-{key}"
    entry.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(entry):
        if entry.is_dir():
            logger.info("%s: using cached copy of %s (%s)", field, uri, entry)
            return entry
        size = sum(item["size"] for item in listing)
        logger.info(
            "%s: fetching %s (%d objects, %.1f MB) to %s", field, uri, len(listing), size / 1e6, entry
        )
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        try:
            _download(uri, listing, tmp, single_file=single_file)
            os.replace(tmp, entry)
        except FileNotFoundError as exc:
            raise JobInputError(f"{field}: {uri}: {safe_error_text(exc)}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


def fetch_model_dir(location: str, field: str = "base_model_path") -> Path:
    """A local ``save_pretrained`` directory for a local path or an ``s3://`` prefix."""
    if not is_remote(location):
        return resolve_model_dir(location, field)
    return resolve_model_dir(str(_fetch(location, "models", field, single_file=False)), field)


def fetch_file(location: str, field: str) -> Path:
    """A local path for a local file or an ``s3://`` object (read-only: it may be a cache entry)."""
    if not is_remote(location):
        return Path(location)
    entry = _fetch(location, "files", field, single_file=True)
    return entry / location.rsplit("/", 1)[-1]


def model_weights_sha256(model_dir: Path) -> str:
    """``weights_sha256`` of a model directory, memoised beside cache entries.

    Hashing a multi-GB model takes a while; a cache entry's content never changes (its key is
    the objects' ETags), so its digest is computed once per machine.
    """
    cache = cache_root()
    info_file = model_dir.with_name(model_dir.name + _INFO_SUFFIX)
    in_cache = model_dir.resolve().is_relative_to(cache.resolve())
    if in_cache and info_file.is_file():
        try:
            return str(json.loads(info_file.read_text())["weights_sha256"])
        except (OSError, ValueError, KeyError):
            logger.warning("ignoring unreadable cache info %s", info_file)
    digest = weights_sha256(model_dir)
    if in_cache:
        write_json_atomic(info_file, {"weights_sha256": digest})
    return digest


@dataclass(frozen=True)
class OutputLocation:
    """The job's ``output_dir``: where files are written locally, and where they are published.

    For a local ``output_dir`` both are the same folder and publishing is a no-op. For an
    ``s3://`` one, the job works in a per-output folder of the cache (the same path on every
    rank, so a distributed job agrees on it) and uploads what it publishes. With a key (``kek``:
    the job's inputs are encrypted, so are its outputs) the job works in a private scratch folder
    (:func:`llmops.jobs.outputs.job_work_dir`) whatever ``output_dir`` is, and publishes folders
    encrypted file by file (:func:`llmops.jobs.outputs.publish_encrypted_tree`).
    """

    uri: str
    local_dir: Path
    remote: bool
    kek: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def for_uri(cls, uri: str, kek: Any = None, needed_bytes: int = 0) -> OutputLocation:
        if kek is not None:
            from llmops.jobs.outputs import job_work_dir

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
        from llmops.jobs.outputs import decrypt_published_file

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
            from llmops.jobs.outputs import publish_encrypted_tree

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
