"""Checkpoints that survive a killed job: completion markers, resume selection, remote sync.

The Trainer writes ``checkpoint-<step>/`` folders (adapter, optimizer, scheduler, RNG states,
trainer state) file by file, so a job killed mid-save leaves a folder that looks like a
checkpoint but is not one. Each checkpoint therefore gets a marker file, written after the
Trainer finished it (and, for a remote output, uploaded after every other file): only marked
checkpoints are resumed from, and unmarked ones are deleted.

A job whose outputs are encrypted writes its checkpoints in its private scratch folder and
publishes each one encrypted file by file (the marker, which holds no record data, stays plain
and is published last); resuming decrypts the published checkpoint back into the scratch folder.

The marker also records the job's training fingerprint (config and input digests), so a
checkpoint left in an output directory by a *different* job is refused instead of silently
continuing someone else's run.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.jobs.artifacts import canonical_json_sha256, write_json_atomic
from llmops.jobs.runtime import JobInputError

if TYPE_CHECKING:
    from llmops.jobs.outputs import OutputLocation
    from llmops.training.config import TrainingJobConfig

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
MARKER_FILE = "llmops_checkpoint.json"
KEEP_CHECKPOINTS = 2
_NAME = re.compile(r"^checkpoint-(\d+)$")
# Fields that do not change what is trained: a retry may differ in them and still resume.
_NOT_TRAINING = ("mlflow", "provenance", "run_name", "resume", "merge_adapter", "hpo")
_LOCATIONS = ("base_model_path", "train_file", "eval_file", "output_dir")


def training_fingerprint(
    config: TrainingJobConfig, base_model_sha256: str, data_sha256: dict[str, str]
) -> str:
    """What a checkpoint must match to be resumed: the training settings and the input bytes.

    Locations are replaced by content digests, so the same data staged under another path (a
    cache entry, a retried pod) still resumes, while changed data never does.
    """
    settings = {k: v for k, v in config.resolved_dict().items() if k not in _NOT_TRAINING + _LOCATIONS}
    return canonical_json_sha256(
        {"settings": settings, "base_model_sha256": base_model_sha256, "data_sha256": data_sha256}
    )


def _step(path: Path | str) -> int | None:
    match = _NAME.match(Path(str(path).rstrip("/")).name)
    return int(match.group(1)) if match else None


def read_marker(checkpoint: Path) -> dict[str, Any] | None:
    """The marker of a complete checkpoint, or None for an incomplete (or foreign) folder."""
    try:
        marker = json.loads((checkpoint / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and "fingerprint" in marker else None


def write_marker(checkpoint: Path, step: int, fingerprint: str) -> dict[str, Any]:
    """Mark a checkpoint the Trainer has finished writing; lists its files for the remote copy."""
    files = sorted(
        p.relative_to(checkpoint).as_posix()
        for p in checkpoint.rglob("*")
        if p.is_file() and p.name != MARKER_FILE
    )
    marker = {"step": step, "fingerprint": fingerprint, "files": files, "completed_at": time.time()}
    write_json_atomic(checkpoint / MARKER_FILE, marker)
    return marker


def local_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """``checkpoint-<step>`` folders under ``root``, newest step first (complete or not)."""
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir() if p.is_dir() and (step := _step(p)) is not None]
    return sorted(found, reverse=True)


def _check_fingerprint(marker: dict[str, Any], fingerprint: str, where: str) -> None:
    if marker.get("fingerprint") != fingerprint:
        raise JobInputError(
            f"output_dir: {where} was written by a different job (other settings or input data); "
            "use a new output_dir, or set resume: false to discard its checkpoints"
        )


def _prepare_local(root: Path, fingerprint: str) -> Path | None:
    latest: Path | None = None
    for step, path in local_checkpoints(root):
        marker = read_marker(path)
        if marker is None:
            logger.warning("deleting incomplete checkpoint %s (the job was stopped while saving it)", path)
            shutil.rmtree(path, ignore_errors=True)
        elif latest is None:
            _check_fingerprint(marker, fingerprint, f"checkpoints/checkpoint-{step}")
            latest = path
    return latest


def _prepare_remote(location: OutputLocation, root: Path, fingerprint: str) -> Path | None:
    from llmops import storage

    shutil.rmtree(root, ignore_errors=True)  # the remote copy is the truth; local is scratch
    prefix = location.join(CHECKPOINTS_DIR)
    candidates = sorted(((_step(name), name) for name in storage.list_dirs(prefix)), reverse=True)
    for step, name in candidates:
        if step is None:
            continue
        marker_uri = storage.join(prefix, name, MARKER_FILE)
        if not storage.exists(marker_uri):
            logger.warning("deleting incomplete remote checkpoint %s", storage.join(prefix, name))
            storage.delete(storage.join(prefix, name))
            continue
        marker = json.loads(storage.read_bytes(marker_uri))
        _check_fingerprint(marker, fingerprint, f"checkpoints/{name}")
        local = root / name
        for rel in marker["files"]:  # decrypted when the job's outputs are encrypted
            location.fetch_file(f"{CHECKPOINTS_DIR}/{name}/{rel}", local / rel, f"checkpoints/{name}")
        write_json_atomic(local / MARKER_FILE, marker)
        logger.info("fetched checkpoint %s (%d files) from %s", name, len(marker["files"]), prefix)
        return local
    return None


def prepare_checkpoints(location: OutputLocation, fingerprint: str, resume: bool) -> Path | None:
    """Make ``checkpoints/`` ready for this attempt and return the checkpoint to resume from.

    Called by one process per node before training. With ``resume`` false every existing
    checkpoint (local and remote) is deleted, so the Trainer's rotation never mixes two runs.
    """
    root = location.local_dir / CHECKPOINTS_DIR
    if not resume:
        if local_checkpoints(root) or location.remote:
            logger.info(
                "resume is off: discarding existing checkpoints in %s", location.join(CHECKPOINTS_DIR)
            )
        location.delete(CHECKPOINTS_DIR)
        return None
    if location.remote:
        return _prepare_remote(location, root, fingerprint)
    return _prepare_local(root, fingerprint)


def latest_complete_checkpoint(root: Path) -> Path | None:
    """The newest marked checkpoint under ``root`` (what the other ranks resume from)."""
    for _, path in local_checkpoints(root):
        if read_marker(path) is not None:
            return path
    return None


def checkpoint_callback(location: OutputLocation, fingerprint: str) -> Any:
    """A TrainerCallback that marks each saved checkpoint and mirrors ``checkpoints/`` remotely."""
    from transformers import TrainerCallback

    class CheckpointSync(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _barrier()  # every rank has written its RNG state into the folder
            if not state.is_world_process_zero:
                return
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not checkpoint.is_dir():
                return
            write_marker(checkpoint, state.global_step, fingerprint)
            if location.remote:
                rel = f"{CHECKPOINTS_DIR}/{checkpoint.name}"
                count = location.upload_tree(rel, last=MARKER_FILE)
                _prune_remote(location, {p.name for _, p in local_checkpoints(checkpoint.parent)})
                logger.info("checkpoint %s uploaded (%d files)", location.join(rel), count)
            else:
                logger.info("checkpoint %s saved", checkpoint)

    return CheckpointSync()


def _prune_remote(location: OutputLocation, keep: set[str]) -> None:
    """Delete remote checkpoints the Trainer rotated away locally (it keeps the last two)."""
    from llmops import storage

    prefix = location.join(CHECKPOINTS_DIR)
    for name in storage.list_dirs(prefix):
        if _step(name) is not None and name not in keep:
            storage.delete(storage.join(prefix, name))


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
