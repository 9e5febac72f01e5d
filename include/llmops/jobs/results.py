"""The result protocol between a job and the orchestrator: the job writes ``result.json`` in its
output folder last of all (so its presence means the job is done), with a ``status`` of
"succeeded", "pruned" (a search trial its pruner stopped), "skipped" (a trial over budget, written
by the orchestrator) or "failed" (with the error); the orchestrator reads it from the lake, local
or on object storage, whichever launcher ran the job."""

from __future__ import annotations

import json
from typing import Any

RESULT_FILE = "result.json"
STATUSES = ("succeeded", "pruned", "skipped", "failed")


def result_uri(output_dir: str) -> str:
    from llmops import storage

    return storage.join(output_dir, RESULT_FILE)


def read_result(output_dir: str) -> dict[str, Any] | None:
    """A job's result, or None when it never got to write one (killed, not started)."""
    from llmops import storage

    uri = result_uri(output_dir)
    if not storage.exists(uri):
        return None
    return json.loads(storage.read_bytes(uri))


def write_result(output_dir: str, result: dict[str, Any]) -> None:
    """Write a result from the orchestrator's side (a trial skipped before it started)."""
    from llmops import storage

    if result.get("status") not in STATUSES:
        raise ValueError(f"result status must be one of {', '.join(STATUSES)}, got {result.get('status')!r}")
    storage.write_json(result_uri(output_dir), result)
