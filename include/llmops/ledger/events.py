"""Recording governed events: every ledger row a pipeline writes goes through :func:`record`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmops.ledger.store import get_ledger
from llmops.specs import spec_hash

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec


def record(spec: PipelineSpec, event_type: str, subject: str, run_id: str, payload: dict[str, Any]) -> None:
    """Append one event of `spec`'s pipeline, stamped with the hash of the spec it ran under."""
    get_ledger().append(
        pipeline=spec.name,
        event_type=event_type,
        subject=subject,
        run_id=run_id,
        payload={"spec_hash": spec_hash(spec), **payload},
    )
