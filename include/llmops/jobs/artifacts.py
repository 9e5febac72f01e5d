"""Filesystem helpers shared by the training and evaluation entrypoints.

Artifacts are written atomically (temp path, then rename) so a crashed or killed job never
leaves a half-written adapter or result that a downstream task could mistake for a real one,
and weight files are fingerprinted so lineage can prove which bytes were trained and served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

WEIGHT_SUFFIXES = (".safetensors", ".bin")
_CHUNK = 1 << 20
# mkstemp/mkdtemp create owner-only entries; artifacts are read by other processes (Airflow
# workers, serving), so published files and directories get the conventional modes.
_FILE_MODE = 0o644
_DIR_MODE = 0o755


def file_sha256(path: Path) -> str:
    """Hex sha256 of one file, streamed so multi-GB shards do not need to fit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_sha256(paths: Iterable[Path]) -> str:
    """One digest over several files: each file's name and content hash, in name order.

    Names are part of the digest so that renaming or re-sharding is a different artifact.
    """
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode("utf-8"))
        digest.update(b"\0")
        digest.update(file_sha256(path).encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files of a saved model or adapter (safetensors preferred, legacy .bin otherwise)."""
    model_dir = Path(model_dir)
    found = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(".safetensors"))
    if not found:
        found = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(".bin"))
    return found


def weights_sha256(model_dir: Path) -> str:
    """Fingerprint of the weight files in ``model_dir``; raises if there are none."""
    files = weight_files(model_dir)
    if not files:
        raise FileNotFoundError(f"no weight files (*.safetensors or *.bin) in {model_dir}")
    return files_sha256(files)


def canonical_json_sha256(data: Any) -> str:
    """Hash of a JSON-able value with sorted keys, so equal configs hash equal across runs."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_safe(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write strict JSON via a temp file in the same directory and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _FILE_MODE)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh temp directory next to ``target``; on success it replaces ``target``.

    On error the temp directory is removed and any previous ``target`` is left untouched. An
    existing ``target`` is moved aside before the rename and deleted after it, so readers see
    either the old or the new complete directory, apart from a rename-sized gap.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, _DIR_MODE)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
