"""The reproducibility manifest of a training run (``output_dir/manifest.json``).

Everything needed to say which bytes were trained with which code and settings, and to rerun
it: input digests (base model weights, data files), the resolved config and its digest, seed,
code version and trainer image, library versions, hardware, outcome metrics and the caller's
provenance (pipeline, snapshot ids, spec hash, Airflow run id). ``result.json`` carries the same
keys plus the flat per-run figures the orchestrator reads.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from typing import TYPE_CHECKING, Any

from llmops.jobs.artifacts import canonical_json_sha256

if TYPE_CHECKING:
    from llmops.training.config import TrainingJobConfig

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
CODE_VERSION_ENV = "LLMOPS_CODE_VERSION"
IMAGE_DIGEST_ENV = "LLMOPS_IMAGE_DIGEST"


def code_version() -> dict[str, str | None]:
    """The package version and, when the launcher provides it, the git commit it was built from."""
    from llmops import __version__

    return {"llmops": __version__, "git_commit": os.environ.get(CODE_VERSION_ENV) or None}


def hardware(device: str, local_rank: int = 0) -> dict[str, Any]:
    """What the run executed on, at the level that changes numerics and speed."""
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine()}
    if device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(local_rank)
        info.update(
            {
                "accelerator": props.name,
                "accelerator_memory_gb": round(props.total_memory / 2**30, 1),
                "accelerator_count": torch.cuda.device_count(),
                "cuda": torch.version.cuda,
            }
        )
    else:
        info["accelerator"] = None
        info["cpu_count"] = os.cpu_count()
    return info


def build_manifest(
    config: TrainingJobConfig,
    *,
    status: str,
    base_model_sha256: str,
    data_files: dict[str, dict[str, Any]],
    device: str,
    dtype: str,
    world_size: int,
    library_versions: dict[str, str],
    metrics: dict[str, Any],
    adapter_uri: str | None,
    adapter_sha256: str | None,
    merged_model_uri: str | None = None,
    merged_model_sha256: str | None = None,
    resumed_from_step: int | None = None,
    local_rank: int = 0,
) -> dict[str, Any]:
    """The manifest as a JSON-able dict (its keys are also top-level keys of ``result.json``)."""
    resolved = config.resolved_dict()
    return {
        "manifest_schema_version": MANIFEST_SCHEMA_VERSION,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "status": status,
        "method": config.method,
        "run_name": config.run_name,
        "base_model_uri": config.base_model_path,
        "base_model_sha256": base_model_sha256,
        "data_files": data_files,
        "config": resolved,
        "config_sha256": canonical_json_sha256(resolved),
        "seed": config.hyperparameters.seed,
        "code_version": code_version(),
        "image_digest": os.environ.get(IMAGE_DIGEST_ENV) or None,
        "library_versions": library_versions,
        "device": device,
        "dtype": dtype,
        "world_size": world_size,
        "hardware": hardware(device, local_rank),
        "metrics": metrics,
        "provenance": dict(config.provenance),
        "adapter_uri": adapter_uri,
        "adapter_sha256": adapter_sha256,
        "merged_model_uri": merged_model_uri,
        "merged_model_sha256": merged_model_sha256,
        "resumed_from_step": resumed_from_step,
    }
