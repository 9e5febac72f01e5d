"""Governance runs over every pipeline (erasure, retention) fail loudly, never skip in silence.

A pipeline whose spec does not load still has data in the lake: an erasure that passed over it
would leave the subject there and end in success. So every spec file is a pipeline to govern;
one whose spec does not load fails its own task (the others still run), named and recorded in
the ledger under the pipeline's file name, with no spec hash to stamp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmops.errors import PermanentError
from llmops.ledger.events import Event, record_unloaded
from llmops.settings import get_settings
from llmops.specs import SpecError

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmops.specs import PipelineSpec


class SpecNotLoaded(PermanentError, RuntimeError):
    """A pipeline's spec does not load, so nothing was done for it: fix the spec and run again."""


class SnapshotsNotDone(RuntimeError):
    """Some snapshots of a pipeline could not be processed; the rest were. A retry redoes them."""


def pipeline_names(selected: str = "") -> list[str]:
    """Every pipeline with a spec file (its file name: a broken spec's `name` cannot be trusted),
    or just `selected`; valid or not, so that none is passed over."""
    names = sorted(path.stem for path in get_settings().pipelines_dir.glob("*.yaml"))
    if selected:
        if selected not in names:
            raise ValueError(f"pipeline '{selected}' not found (no {selected}.yaml)")
        return [selected]
    return names


def governed_spec(
    pipeline: str, run_id: str, failed: Callable[[list[str], list[str]], Event], subject: str
) -> PipelineSpec:
    """The spec this run governs `pipeline` under; if it does not load, record `failed(files,
    problems)` for the pipeline and raise `SpecNotLoaded` naming the file."""
    from llmops.specs.pinned import run_spec

    try:
        return run_spec(pipeline, run_id)
    except SpecError as exc:
        record_unloaded(pipeline, failed([exc.path], exc.problems), subject, run_id)
        problems = "\n".join(f"  - {p}" for p in exc.problems)
        raise SpecNotLoaded(
            f"pipeline '{pipeline}': spec {exc.path} does not load, so nothing was done for it; "
            f"fix it and run again:\n{problems}"
        ) from None


def failure_message(what: str, pipeline: str, failures: dict[str, str]) -> str:
    """`what` failed for these files of `pipeline` (path: error), each on its own line."""
    files = "\n".join(f"  - {path}: {error}" for path, error in sorted(failures.items()))
    return f"{what} on pipeline '{pipeline}': {len(failures)} file(s) could not be processed:\n{files}"
