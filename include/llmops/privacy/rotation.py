"""KEK rotation for the whole lake: re-wrap every part's data key, never touch the data.

Why this is cheap and safe: snapshot parts use envelope encryption, so rotating the key-encryption
key means replacing each small ``*.key.json`` sidecar with the same data key wrapped under the new
KEK (:func:`llmops.privacy.crypto.rewrap`). Ciphertext, manifests and snapshot ids stay exactly as
they were; manifests are immutable, so each rotated snapshot folder gets a ``key_rotation.json``
record instead (from/to kek id, parts, time, and the earlier rotations).

Crash-safety: each sidecar is replaced atomically (temp file + rename, or one S3 PUT), and a
sidecar already under the new KEK is skipped, so an interrupted run is finished by running it
again, and a second run over a rotated lake changes nothing. Staged (uncommitted) parts under
``_staging`` are re-wrapped too: a later commit moves them into the lake and they must not arrive
wrapped under a retired key.

Operational order: pause ingestion, rotate with the current KEK as the old key, switch the
``llmops_kek`` connection to the new key, then rerun with ``--old-key-file`` set to the previous key
to catch any part written in between (a no-op otherwise). Do not run it during retention/erasure
(both delete key files; a rotation racing them could write a key file back).

CLI::

    python -m llmops.privacy.rotation --new-key-file PATH [--old-key-file PATH] [--lake-root URI] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llmops import storage
from llmops.errors import safe_error_text
from llmops.privacy import crypto

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

KEY_FILE_SUFFIX = ".key.json"
ROTATION_RECORD = "key_rotation.json"
MANIFEST = "manifest.json"  # snapshots.MANIFEST; not imported to keep this module light
KMS_KEK_PREFIX = "kms:"  # keys.KMS_KEK_PREFIX

PartOutcome = Literal["rewrapped", "skipped", "kms"]


class RotationError(crypto.CryptoError):
    """One part's key file could not be rotated; the message names the file. Nothing was written."""


def rotate_key_file(
    key_file_uri: str, old_kek: bytes, new_kek: bytes, *, dry_run: bool = False
) -> PartOutcome:
    """Re-wrap one part's data key from ``old_kek`` to ``new_kek`` and replace its sidecar atomically.

    Returns ``"skipped"`` when it is already under the new KEK, ``"kms"`` when KMS wraps it (KMS
    rotates its own key material), else ``"rewrapped"`` (also in a dry run, where the unwrap is
    checked but nothing is written). Raises :class:`RotationError` naming the file otherwise.
    """
    old_id, new_id = crypto.key_id(old_kek), crypto.key_id(new_kek)
    try:
        wrapped = crypto.WrappedKey.from_dict(storage.read_json(key_file_uri))
    except FileNotFoundError:
        raise RotationError(f"{key_file_uri}: key file is missing") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise RotationError(f"{key_file_uri}: key file is malformed ({safe_error_text(exc)})") from None
    if wrapped.kek_id == new_id:
        return "skipped"
    if wrapped.kek_id.startswith(KMS_KEK_PREFIX):
        return "kms"
    if wrapped.kek_id != old_id:
        raise RotationError(
            f"{key_file_uri}: data key is wrapped under kek_id {wrapped.kek_id}, which is neither the old "
            f"key ({old_id}) nor the new key ({new_id}); wrong old key? Nothing was rewritten"
        )
    try:
        rewrapped = crypto.rewrap(wrapped, old_kek, new_kek)
    except crypto.DecryptionError as exc:
        raise RotationError(
            f"{key_file_uri}: cannot unwrap with the old key ({safe_error_text(exc)}); nothing was rewritten"
        ) from None
    if dry_run:
        return "rewrapped"
    if not storage.exists(key_file_uri):  # deleted meanwhile (retention): do not write it back
        raise RotationError(f"{key_file_uri}: key file disappeared during rotation; nothing was written")
    storage.write_json(key_file_uri, rewrapped.to_dict())  # same layout as snapshots.stage_part writes
    return "rewrapped"


@dataclass
class _Folder:
    uri: str
    key_files: list[str]
    manifest: dict[str, Any] | None = None
    rewrapped: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)  # under the new KEK after this run
    failed: list[str] = field(default_factory=list)


def _folders(lake_root: str) -> list[_Folder]:
    by_folder: dict[str, list[str]] = {}
    for uri in storage.list_files(lake_root, f"**/*{KEY_FILE_SUFFIX}"):
        folder, _, _name = uri.rpartition("/")
        by_folder.setdefault(folder, []).append(uri)
    return [_Folder(uri=folder, key_files=sorted(files)) for folder, files in sorted(by_folder.items())]


def _part_name(key_file_uri: str) -> str:
    return key_file_uri.rpartition("/")[2].removesuffix(KEY_FILE_SUFFIX)


def _write_record(folder: _Folder, old_id: str, new_id: str, errors: list[dict[str, str]]) -> bool:
    """Write key_rotation.json when this run changed something or the record lags behind (a crash
    between the last part and the record), never for a snapshot born under the new key.

    Returns whether it was written. A folder left half-rotated by errors is recorded as incomplete.
    """
    record_uri = storage.join(folder.uri, ROTATION_RECORD)
    previous = storage.read_json(record_uri) if storage.exists(record_uri) else None
    complete = not folder.failed
    if not folder.rewrapped:
        born_under = ((folder.manifest or {}).get("encryption") or {}).get("kek_ids") or []
        if previous is None and all(k == new_id for k in born_under):
            return False  # written under the new key: there was no rotation to record
        if (
            previous is not None
            and previous.get("to_kek_id") == new_id
            and previous.get("complete") == complete
        ):
            return False  # nothing new: keep the file (and the no-op run) byte-identical
    from_id, history = old_id, []
    if previous is not None:
        earlier = [r for r in previous.pop("history", []) if isinstance(r, dict)]
        if previous.get("to_kek_id") == new_id:  # an earlier attempt at this same rotation: resume it
            from_id, history = previous.get("from_kek_id") or old_id, earlier
        else:
            history = [*earlier, previous]
    record = {
        "from_kek_id": from_id,
        "to_kek_id": new_id,
        "algorithm": crypto.ALGORITHM,
        "parts": [_part_name(u) for u in folder.current],
        "pending_parts": [_part_name(u) for u in folder.failed],
        "complete": complete,
        "rotated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "snapshot_id": (folder.manifest or {}).get("snapshot_id"),
        "history": history,
    }
    try:
        storage.write_json(record_uri, record)
    except OSError as exc:
        errors.append(
            {"path": record_uri, "error": f"could not write the rotation record: {safe_error_text(exc)}"}
        )
        return False
    return True


def _check_manifest(folder: _Folder, summary: dict[str, Any], errors: list[dict[str, str]]) -> None:
    """Read a snapshot folder's manifest (if committed) and report key files it lists but lacks."""
    manifest_uri = storage.join(folder.uri, MANIFEST)
    if not storage.exists(manifest_uri):
        summary["uncommitted_folders"] += 1  # staged, or a commit that has not finished yet
        return
    folder.manifest = storage.read_json(manifest_uri)
    summary["snapshots"] += 1
    listed = [e["key_file"] for e in folder.manifest.get("files", []) if e.get("key_file")]
    present = {_part_name(u) + KEY_FILE_SUFFIX for u in folder.key_files}
    for name in listed:
        if name not in present:
            missing = storage.join(folder.uri, name)
            errors.append({"path": missing, "error": "key file listed in the manifest is missing"})
            folder.failed.append(missing)


def _rotate_part(
    folder: _Folder,
    uri: str,
    old_kek: bytes,
    new_kek: bytes,
    dry_run: bool,
    summary: dict[str, Any],
    errors: list[dict[str, str]],
) -> None:
    """Rotate one part's key file, counting the outcome; an error is reported and the walk goes on."""
    summary["parts"] += 1
    try:
        outcome = rotate_key_file(uri, old_kek, new_kek, dry_run=dry_run)
    except RotationError as exc:
        message = str(exc)
    except OSError as exc:  # e.g. a failed S3 request: report it and go on with the rest
        message = f"{uri}: {safe_error_text(exc)}"
    else:
        message = ""
    if message:
        log.error("key rotation: %s", message)
        errors.append({"path": uri, "error": message})
        folder.failed.append(uri)
        return
    if outcome == "kms":
        summary["kms_managed"] += 1
        return
    summary[outcome] += 1
    folder.current.append(uri)
    if outcome == "rewrapped":
        folder.rewrapped.append(uri)


def rotate_lake_keys(
    lake_root: str, old_kek: bytes, new_kek: bytes, *, dry_run: bool = False
) -> dict[str, Any]:
    """Re-wrap every encrypted part's data key in the lake from ``old_kek`` to ``new_kek``.

    Walks all key files (every zone, plus ``_staging``), rewrites each sidecar atomically, skips
    those already under the new KEK, and writes ``key_rotation.json`` per snapshot folder. Errors
    do not stop the walk; they are returned with the path they concern. Returns counts:
    ``snapshots``, ``uncommitted_folders``, ``parts``, ``rewrapped``, ``skipped``, ``kms_managed``,
    ``records_written``, ``errors`` (list of ``{path, error}``), plus the kek ids and ``dry_run``.
    ``snapshots`` counts encrypted snapshot folders; a dry run unwraps every part (so it finds a
    wrong old key) and counts what it would rewrap, but writes nothing.
    """
    old_kek = crypto.check_key(old_kek, "old KEK")
    new_kek = crypto.check_key(new_kek, "new KEK")
    old_id, new_id = crypto.key_id(old_kek), crypto.key_id(new_kek)
    if old_id == new_id:
        raise ValueError(f"old and new KEK are the same key (kek_id {old_id}): nothing to rotate")
    summary: dict[str, Any] = {
        "lake_root": lake_root,
        "from_kek_id": old_id,
        "to_kek_id": new_id,
        "dry_run": dry_run,
        "snapshots": 0,
        "uncommitted_folders": 0,
        "parts": 0,
        "rewrapped": 0,
        "skipped": 0,
        "kms_managed": 0,
        "records_written": 0,
        "errors": [],
    }
    errors: list[dict[str, str]] = summary["errors"]
    for folder in _folders(lake_root):
        _check_manifest(folder, summary, errors)
        for uri in folder.key_files:
            _rotate_part(folder, uri, old_kek, new_kek, dry_run, summary, errors)
        if folder.manifest is not None and not dry_run and folder.current:  # something is rotated
            summary["records_written"] += int(_write_record(folder, old_id, new_id, errors))
    log.info(
        "key rotation %s -> %s%s: %d snapshot(s), %d part(s) rewrapped, %d already rotated, %d error(s)",
        old_id,
        new_id,
        " (dry run)" if dry_run else "",
        summary["snapshots"],
        summary["rewrapped"],
        summary["skipped"],
        len(errors),
    )
    return summary


def _read_existing_key_file(path: str, what: str) -> bytes:
    """A key file that must already exist: a typo must not silently create (and rotate to) a new key."""
    key_path = Path(path)
    if not key_path.is_file():
        raise SystemExit(
            f"{what} {key_path} does not exist (create it with mode 0600 holding a base64 32-byte key)"
        )
    return crypto.load_or_create_key_file(key_path)  # existing file: read with the permission checks


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: rotate the lake from the current KEK (or ``--old-key-file``) to ``--new-key-file``."""
    parser = argparse.ArgumentParser(
        prog="python -m llmops.privacy.rotation", description="Re-wrap every snapshot part's data key."
    )
    parser.add_argument("--new-key-file", required=True, help="base64 32-byte key file (mode 0600)")
    parser.add_argument("--old-key-file", help="default: the current KEK (llmops_kek connection or key file)")
    parser.add_argument("--lake-root", help="default: LLMOPS_LAKE_ROOT")
    parser.add_argument("--dry-run", action="store_true", help="check every part, write nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from llmops.privacy.keys import get_kek
    from llmops.settings import get_settings

    new_kek = _read_existing_key_file(args.new_key_file, "new key file")
    old_kek = _read_existing_key_file(args.old_key_file, "old key file") if args.old_key_file else get_kek()
    lake_root = args.lake_root or get_settings().lake_root
    summary = rotate_lake_keys(lake_root, old_kek, new_kek, dry_run=args.dry_run)
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
