"""The data lake: one object-storage path API for a local folder and ``s3://`` alike.

Everything the pipeline persists goes through these helpers so that moving the lake to S3 is a
settings change. Writes are atomic: on a local filesystem through a temporary file and a rename;
on object storage a single PUT is atomic already. Immutable snapshots commit their manifest last,
so a reader that finds a manifest finds complete data.

S3 credentials come from an Airflow AWS connection (``LLMOPS_LAKE_CONN_ID``, default
``aws_default``), turned into a filesystem by the Amazon provider exactly as Airflow's own
``ObjectStoragePath`` does it. Airflow is imported only when an S3 URI is used, because the
training subprocess imports this module too; where Airflow is absent, plain s3fs reads the
standard AWS environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL_S3``, profiles, ...).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

S3_SCHEMES: frozenset[str] = frozenset({"s3", "s3a", "s3n"})
DEFAULT_LAKE_CONN_ID = "aws_default"
_COPY_CHUNK = 8 * 1024 * 1024

_fs_cache: dict[str | None, fsspec.AbstractFileSystem] = {}
_fs_cache_pid = os.getpid()
_fs_lock = threading.Lock()


def join(root: str, *parts: str) -> str:
    out = root.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def lake_conn_id() -> str:
    """The Airflow AWS connection of the lake; read now, so tests and tasks see the current env."""
    return os.environ.get("LLMOPS_LAKE_CONN_ID", DEFAULT_LAKE_CONN_ID)


def clear_filesystem_cache() -> None:
    """Forget cached S3 filesystems (after a connection changed, e.g. between tests)."""
    with _fs_lock:
        _fs_cache.clear()


def _build_s3_filesystem(conn_id: str | None) -> fsspec.AbstractFileSystem:
    from fsspec.dircache import DirCache

    try:
        from airflow.providers.amazon.aws.fs.s3 import get_fs
    except ImportError:
        import s3fs

        log.info("Airflow's Amazon provider is not importable: S3 credentials from the AWS environment")
        # No listings cache: another process (a task, the trainer) may write the same prefix.
        return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    fs = get_fs(conn_id, None)
    # get_fs passes storage_options to botocore's Config, not to S3FileSystem, so the listings
    # cache is switched off here: a cached listing would hide objects other workers wrote since.
    fs.dircache = DirCache(use_listings_cache=False)
    log.info("lake: S3 filesystem from Airflow connection '%s'", conn_id)
    return fs


def s3_filesystem(conn_id: str | None) -> fsspec.AbstractFileSystem:
    """The S3 filesystem for an Airflow AWS connection, built once per connection and process.

    Building one looks the connection up and resolves credentials (about a second), hence the
    cache. It is per process because an async filesystem cannot be used across a fork.
    """
    global _fs_cache_pid
    with _fs_lock:
        if _fs_cache_pid != os.getpid():
            _fs_cache.clear()
            _fs_cache_pid = os.getpid()
        fs = _fs_cache.get(conn_id)
        if fs is None:
            fs = _fs_cache[conn_id] = _build_s3_filesystem(conn_id)
        return fs


def filesystem(uri: str, *, conn_id: str | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for a URI, and the path inside it.

    ``conn_id`` picks the AWS connection for an ``s3://`` URI (default: the lake's); other URIs
    ignore it.
    """
    if _scheme(uri) in S3_SCHEMES:
        path = uri.split("://", 1)[1]
        return s3_filesystem(conn_id if conn_id is not None else lake_conn_id()), path
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def is_local(uri: str) -> bool:
    if _scheme(uri) in S3_SCHEMES:  # known without looking a connection up
        return False
    return isinstance(filesystem(uri)[0], LocalFileSystem)


def exists(uri: str, *, conn_id: str | None = None) -> bool:
    fs, path = filesystem(uri, conn_id=conn_id)
    return fs.exists(path)


def read_bytes(uri: str, *, conn_id: str | None = None) -> bytes:
    fs, path = filesystem(uri, conn_id=conn_id)
    with fs.open(path, "rb") as fh:
        return fh.read()


def _atomic_local_write(target: Path, fill: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary file in the target's folder, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(uri: str, data: bytes, *, conn_id: str | None = None) -> None:
    """Write a whole object atomically (no reader ever sees half of it)."""
    fs, path = filesystem(uri, conn_id=conn_id)
    if isinstance(fs, LocalFileSystem):
        _atomic_local_write(Path(path), lambda fh: fh.write(data))
    else:
        fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all


def read_json(uri: str, *, conn_id: str | None = None) -> Any:
    return json.loads(read_bytes(uri, conn_id=conn_id))


def write_json(uri: str, payload: Any, *, conn_id: str | None = None) -> None:
    write_bytes(
        uri, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode(), conn_id=conn_id
    )


def list_dirs(uri: str, *, conn_id: str | None = None) -> list[str]:
    """Immediate sub-folders of a prefix (names only); empty when the prefix does not exist."""
    fs, path = filesystem(uri, conn_id=conn_id)
    if not fs.exists(path):
        return []
    return sorted(
        Path(entry["name"]).name for entry in fs.ls(path, detail=True) if entry.get("type") == "directory"
    )


def list_files(prefix_uri: str, pattern: str = "*", *, conn_id: str | None = None) -> list[str]:
    """Files under a prefix whose path relative to it matches a glob, as full URIs, sorted.

    ``*`` stays within one folder level; ``**/`` descends (``**/*.csv``). Hidden names (a leading
    dot, e.g. the temporary files of an atomic write in progress) and S3 folder markers are
    skipped. A prefix that does not exist has no files.
    """
    if pattern.startswith("/") or ".." in pattern.split("/"):
        raise ValueError(f"pattern '{pattern}' must be relative to the prefix and stay inside it")
    fs, path = filesystem(prefix_uri, conn_id=conn_id)
    base = path.rstrip("/")
    found = fs.glob(f"{base}/{pattern}", detail=True)
    out = []
    for name, info in found.items():
        if info.get("type") != "file" or name.endswith("/") or not name.startswith(base + "/"):
            continue
        rel = name[len(base) + 1 :]
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        out.append(join(prefix_uri, rel))
    return sorted(out)


def _is_bucket_root(uri: str, path: str) -> bool:
    return _scheme(uri) in S3_SCHEMES and not path.strip("/").partition("/")[2]


def delete(uri: str, *, conn_id: str | None = None) -> None:
    """Delete a file, or a prefix and everything under it; nothing to delete is not an error.

    Deleting a whole bucket's URI empties the bucket but leaves the bucket itself.
    """
    fs, path = filesystem(uri, conn_id=conn_id)
    if not fs.exists(path):
        return
    if _is_bucket_root(uri, path):
        keys = fs.find(path)
        if keys:
            fs.rm(keys)
    else:
        fs.rm(path, recursive=True)
    log.info("deleted %s", uri)


def _copy_file(src: str, dst: str, src_conn_id: str | None, dst_conn_id: str | None) -> None:
    sfs, spath = filesystem(src, conn_id=src_conn_id)
    dfs, dpath = filesystem(dst, conn_id=dst_conn_id)
    if isinstance(dfs, LocalFileSystem):

        def fill(fh: IO[bytes]) -> None:
            with sfs.open(spath, "rb") as reader:
                shutil.copyfileobj(reader, fh, _COPY_CHUNK)

        _atomic_local_write(Path(dpath), fill)
    elif sfs is dfs:
        dfs.copy(spath, dpath)  # server-side copy on object storage
    elif isinstance(sfs, LocalFileSystem):
        dfs.put_file(spath, dpath)  # multipart for big files: visible only once complete
    else:
        with tempfile.NamedTemporaryFile(prefix="llmops-copy-") as tmp:
            with sfs.open(spath, "rb") as reader:
                shutil.copyfileobj(reader, tmp, _COPY_CHUNK)
            tmp.flush()
            dfs.put_file(tmp.name, dpath)


def copy(
    src_uri: str, dst_uri: str, *, src_conn_id: str | None = None, dst_conn_id: str | None = None
) -> None:
    """Copy a file, or every file under a prefix (keeping relative paths), between any two places.

    Each destination object is written atomically, like `write_bytes`; within one S3 connection
    the copy happens server-side. The conn ids pick AWS connections for ``s3://`` ends (default:
    the lake's).
    """
    sfs, spath = filesystem(src_uri, conn_id=src_conn_id)
    if sfs.isfile(spath):
        _copy_file(src_uri, dst_uri, src_conn_id, dst_conn_id)
        return
    files = list_files(src_uri, "**", conn_id=src_conn_id)
    if not files and not sfs.exists(spath):
        raise FileNotFoundError(f"nothing to copy at {src_uri}")
    base = src_uri.rstrip("/")
    for uri in files:
        _copy_file(uri, join(dst_uri, uri[len(base) + 1 :]), src_conn_id, dst_conn_id)
    log.info("copied %d file(s) from %s to %s", len(files), src_uri, dst_uri)


def local_path(uri: str) -> Path:
    """The local path behind a URI; for code that needs a real file (model loading, subprocesses)."""
    if _scheme(uri) in S3_SCHEMES:
        raise ValueError(f"{uri} is not on the local filesystem")
    fs, path = filesystem(uri)
    if not isinstance(fs, LocalFileSystem):
        raise ValueError(f"{uri} is not on the local filesystem")
    return Path(path)


def safe_run_id(run_id: str) -> str:
    """A run id usable as a path segment (Airflow run ids contain ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
