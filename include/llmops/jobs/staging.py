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
