"""Purpose limitation: data is used only for the purposes its governance tags allow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmops.errors import PermanentError

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec


class PurposeNotAllowed(PermanentError, ValueError):
    """Data whose governance tags do not cover the pipeline's purpose cannot be trained on."""


def check_purpose(spec: PipelineSpec, snapshot_id: str, manifest: dict[str, Any]) -> None:
    """Enforce purpose limitation from the tags the data carries (not only from today's spec)."""
    from llmops.specs.schema import Governance

    problems = []
    for source, tags in sorted((manifest.get("governance") or {}).items()):
        problem = Governance.model_validate(tags).allows(spec.purpose)
        if problem:
            problems.append(f"source '{source}': {problem}")
    if not manifest.get("governance"):
        problems.append("it carries no governance tags")
    if problems:
        raise PurposeNotAllowed(
            f"curated snapshot {snapshot_id} cannot feed '{spec.name}' (purpose '{spec.purpose}'): "
            + "; ".join(problems)
        )
