"""The data lake: one object-storage path API for a local folder and ``s3://`` alike.

Everything the pipeline persists goes through these helpers so that moving the lake to S3 is a
settings change. Writes are atomic: on a local filesystem through a temporary file and a rename;
on object storage a single PUT is atomic already. Immutable snapshots commit their manifest last,
so a reader that finds a manifest finds complete data.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem


def join(root: str, *parts: str) -> str:
    out = root.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for a URI, and the path inside it."""
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def is_local(uri: str) -> bool:
    return isinstance(filesystem(uri)[0], LocalFileSystem)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as fh:
        return fh.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object atomically (no reader ever sees half of it)."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    else:
        with fs.open(path, "wb") as fh:
            fh.write(data)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_json(uri: str, payload: Any) -> None:
    write_bytes(uri, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def list_dirs(uri: str) -> list[str]:
    """Immediate sub-folders of a prefix (names only); empty when the prefix does not exist."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    return sorted(
        Path(entry["name"]).name for entry in fs.ls(path, detail=True) if entry.get("type") == "directory"
    )


def local_path(uri: str) -> Path:
    """The local path behind a URI; for code that needs a real file (model loading, subprocesses)."""
    fs, path = filesystem(uri)
    if not isinstance(fs, LocalFileSystem):
        raise ValueError(f"{uri} is not on the local filesystem")
    return Path(path)
