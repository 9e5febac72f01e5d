"""One spec per run: the first task of a DAG run pins the resolved spec in the lake, and every
later task of that run (and the job configs they write) reads the pinned copy.

Without it each task would read the YAML again: a spec edited while a run is in flight would give
one run two specs (other gates, another privacy policy between two of its tasks). The pinned copy
carries its content hash, checked on every read, so a copy edited in the lake is refused rather
than trusted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from llmops import storage
from llmops.specs.loader import SpecError, load_pipeline, spec_hash
from llmops.specs.schema import PipelineSpec
from llmops.specs.sources import ensure_plugins

if TYPE_CHECKING:
    from pathlib import Path

PINNED_NAME = "spec.json"


def pinned_spec_uri(pipeline: str, run_id: str, lake_root: str | None = None) -> str:
    """Where the spec of one DAG run of `pipeline` is pinned."""
    if lake_root is None:
        from llmops.settings import get_settings

        lake_root = get_settings().lake_root
    return storage.join(lake_root, "runs", pipeline, storage.safe_run_id(run_id), PINNED_NAME)


def _read_pinned(uri: str) -> PipelineSpec:
    try:
        document = json.loads(storage.read_bytes(uri))
        ensure_plugins()
        spec = PipelineSpec.model_validate(document["spec"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError(uri, [f"pinned spec cannot be read: {type(exc).__name__}"]) from None
    if spec_hash(spec) != document.get("spec_hash"):
        raise SpecError(
            uri, ["pinned spec does not match its recorded hash: it was changed after the run started"]
        )
    return spec


def pin_spec(pipeline: str, run_id: str, pipelines_dir: Path | None = None) -> PipelineSpec:
    """Pin the pipeline's current spec for this run, unless a copy is pinned already (a retried
    first task keeps the spec the run started with); return the pinned spec."""
    uri = pinned_spec_uri(pipeline, run_id)
    if storage.exists(uri):
        return _read_pinned(uri)
    spec = load_pipeline(pipeline, pipelines_dir)
    document = {
        "pipeline": spec.name,
        "run_id": run_id,
        "spec_hash": spec_hash(spec),
        "pinned_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": spec.model_dump(mode="json"),
    }
    storage.write_bytes(uri, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode())
    return spec


def run_spec(pipeline: str, run_id: str) -> PipelineSpec:
    """The spec this run started with (pinned by its first task; pinned now if none is yet)."""
    uri = pinned_spec_uri(pipeline, run_id)
    if storage.exists(uri):
        return _read_pinned(uri)
    return pin_spec(pipeline, run_id)
