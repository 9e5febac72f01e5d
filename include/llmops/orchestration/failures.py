"""Failed tasks in the governance ledger: the audit trail shows failures as well as successes."""

from __future__ import annotations

import logging
import traceback

from llmops import storage
from llmops.errors import error_type, safe_error_text
from llmops.ledger import record
from llmops.ledger.events import TaskFailed
from llmops.specs import load_pipeline
from llmops.specs.pinned import pinned_spec_uri, run_spec

log = logging.getLogger(__name__)


def record_task_failure(
    pipeline: str,
    *,
    run_id: str,
    dag_id: str,
    task_id: str,
    map_index: int,
    try_number: int | None,
    error: BaseException | str | None,
) -> None:
    """Record a failed task in the ledger, so the audit trail shows failures as well as successes.

    The error goes through `safe_error_text`: this package's messages are kept (they name fields,
    rows and counts, never values), a third-party one is reduced to its type, as it may quote
    source rows. A failure to record must not hide the task's own error.
    """
    try:
        # The spec the run started with when it was pinned; a failure before that (or of a spec
        # that no longer loads) is recorded under the current one.
        pinned = pinned_spec_uri(pipeline, run_id)
        spec = run_spec(pipeline, run_id) if storage.exists(pinned) else load_pipeline(pipeline)
        # A fail-fast wrapper keeps the domain error as its cause: report the cause.
        root = error.__cause__ if isinstance(error, BaseException) and error.__cause__ is not None else error
        message = safe_error_text(root)
        kind = error_type(root)
        subject = f"task/{dag_id}/{task_id}" + (
            f"[{map_index}]" if map_index is not None and map_index >= 0 else ""
        )
        record(
            spec,
            TaskFailed(
                dag_id=dag_id,
                task_id=task_id,
                map_index=map_index,
                try_number=try_number,
                error_type=kind,
                error=message,
            ),
            f"{subject}/try-{try_number}",
            run_id,
        )
        log.warning("%s failed (try %s): %s: %s", subject, try_number, kind, message)
    except Exception as exc:  # the callback must never mask the real failure
        # Where, never the message (a storage error can quote a path's contents or a credential).
        log.warning(
            "could not record the task failure in the ledger: %s; raised at:\n%s",
            safe_error_text(exc),
            "".join(traceback.format_tb(exc.__traceback__)),
        )
