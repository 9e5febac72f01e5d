"""The compiled form of each pipeline spec, cached so that parsing a DAG file reads no YAML.

The DAG processor parses every DAG file every 30 seconds, and each parse used to read the spec's
YAML (pure-Python PyYAML, most of a spec's load time) and validate it from scratch. A spec that
validated is written here as its JSON dump, under a key made of the spec file's bytes and a
fingerprint of the code that validates it (llmops and pydantic versions, the source of
``llmops.specs``): an edited spec or a changed schema gets a new key, the old entry is never read
again.

An entry is never trusted blindly: its first line holds the SHA-256 of the JSON that follows, and
the JSON is validated again by the spec models (``model_validate_json``: no YAML, a fraction of a
millisecond), so a corrupt, truncated or stale entry is ignored and the spec is loaded from its
YAML as before, then cached again. Only a spec that passed validation is written; a broken spec is
parsed (and its SpecError raised) on every load, as without the cache.

Entries live in ``$LLMOPS_HOME/cache/specs`` (folder 0700, files 0600), written atomically (a
private temporary file renamed into place), so two processes that write the same entry at once both
leave a whole file. ``LLMOPS_SPEC_CACHE=off`` turns the cache off; a cache folder that cannot be
written only costs the saving.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmops.specs.schema import PipelineSpec

log = logging.getLogger(__name__)

CACHE_ENV = "LLMOPS_SPEC_CACHE"
#: Bumped when the entry format changes.
FORMAT = b"llmops-spec-cache/1"

_fingerprint: bytes | None = None


def enabled() -> bool:
    return os.environ.get(CACHE_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def cache_dir() -> Path:
    from llmops.settings import get_settings

    return get_settings().home / "cache" / "specs"


def code_fingerprint() -> bytes:
    """What decides a spec's validated form besides its text, computed once per process: the llmops
    and pydantic versions, the source of every module of ``llmops.specs``, and the size and
    modification time of every other module of llmops (the specs use a few: training methods,
    metrics, PII types), so any code change starts a new cache."""
    global _fingerprint
    if _fingerprint is None:
        import pydantic

        import llmops

        digest = hashlib.sha256(FORMAT)
        digest.update(f"\0{llmops.__version__}\0{pydantic.VERSION}\0".encode())
        specs = Path(__file__).resolve().parent
        for source in sorted(specs.glob("*.py")):
            digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
        for line in sorted(_module_stats(specs.parent, specs)):
            digest.update(line.encode() + b"\0")
        _fingerprint = digest.digest()
    return _fingerprint


def _module_stats(folder: Path, skip: Path) -> list[str]:
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if (
                entry.is_dir(follow_symlinks=False)
                and entry.name != "__pycache__"
                and entry.path != str(skip)
            ):
                found += _module_stats(Path(entry.path), skip)
            elif entry.name.endswith(".py"):
                stat = entry.stat()
                found.append(f"{entry.path}:{stat.st_size}:{stat.st_mtime_ns}")
    return found


def entry_path(data: bytes) -> Path:
    """Where the compiled form of a spec file holding `data` is cached."""
    key = hashlib.sha256(code_fingerprint() + data).hexdigest()
    return cache_dir() / f"{key}.json"


def load_cached(data: bytes) -> PipelineSpec | None:
    """The cached spec of a file holding `data`, or None (no entry, or one that is not usable)."""
    if not enabled():
        return None
    try:
        path = entry_path(data)
        blob = path.read_bytes()
    except OSError:
        return None
    header, sep, body = blob.partition(b"\n")
    fields = header.split(b" ")
    if not sep or len(fields) != 3 or fields[0] != FORMAT:
        _discard(path, "unknown format")
        return None
    if hashlib.sha256(body).hexdigest().encode() != fields[1]:
        _discard(path, "checksum mismatch")
        return None
    from pydantic import ValidationError

    from llmops.specs.schema import PipelineSpec
    from llmops.specs.sources import SOURCE_KINDS, ensure_plugins

    kinds = set(fields[2].decode("ascii", "replace").split(",")) - {""}
    if not kinds <= SOURCE_KINDS.keys():
        ensure_plugins()  # a kind from an installed package: load them, as a fresh parse would
    try:
        return PipelineSpec.model_validate_json(body)
    except (ValidationError, ValueError):
        _discard(path, "no longer a valid spec")
        return None


def store_cached(data: bytes, spec: PipelineSpec) -> None:
    """Cache `spec`, the validated content of a file holding `data` (best effort: a cache that
    cannot be written only costs the saving)."""
    if not enabled():
        return
    try:
        body = spec.model_dump_json().encode()
        # Only a spec whose JSON gives it back exactly is cached (a kind from a package could dump
        # what it does not read back); the check runs once per edit of the spec.
        if type(spec).model_validate_json(body) != spec:
            log.debug("spec cache not written: %s does not round-trip through JSON", spec.name)
            return
    except ValueError as exc:  # pydantic's serialization and validation errors are ValueErrors
        log.debug("spec cache not written: %s", exc)
        return
    kinds = ",".join(sorted({source.kind for source in spec.sources})).encode()
    blob = b" ".join([FORMAT, hashlib.sha256(body).hexdigest().encode(), kinds]) + b"\n" + body
    try:
        path = entry_path(data)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(blob)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.debug("spec cache not written: %s", exc.strerror or exc)


def _discard(path: Path, why: str) -> None:
    log.info("spec cache entry %s ignored (%s); the spec is loaded from its YAML", path.name, why)
    try:
        path.unlink()
    except OSError:
        pass
