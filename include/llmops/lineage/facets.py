"""The llmops custom OpenLineage facets (their JSON schemas are in ``schemas/`` beside this file).

Imported only when an event is built (it imports the OpenLineage client): DAG files never load it.
"""

from __future__ import annotations

from typing import Any

import attr
from openlineage.client.generated.base import DatasetFacet, RunFacet

from llmops import __version__

#: Custom facets name their own schema. The URL is the facet's identity (consumers such as Marquez
#: store it, they do not fetch it); the document it names is shipped in ``schemas/``.
SCHEMA_BASE = "https://llmops.example/openlineage/facets"
PRODUCER = f"https://llmops.example/llmops/{__version__}"

PII_FACET = "llmops_pii"
RUN_FACET = "llmops"
PII_FACET_SCHEMA_URL = f"{SCHEMA_BASE}/1-0-0/LlmopsPiiDatasetFacet.json#/$defs/LlmopsPiiDatasetFacet"
RUN_FACET_SCHEMA_URL = f"{SCHEMA_BASE}/1-0-0/LlmopsRunFacet.json#/$defs/LlmopsRunFacet"


@attr.define
class LlmopsPiiDatasetFacet(DatasetFacet):
    """What the privacy policy found and did on the way into a dataset: counts and decisions only.

    ``typesFound``: ``[{"type", "count", "actions": {action: count}}]``; ``columns``: ``[{"column",
    "action", "detectedType"?, "replacements"?, "justification"?}]``; ``freeText``: ``{"columns",
    "actions": {type: action}}``; ``residual``: ``{type: count}`` still detectable afterwards.
    """

    rowsScanned: int  # noqa: N815
    totalReplacements: int  # noqa: N815
    typesFound: list[dict[str, Any]]  # noqa: N815
    columns: list[dict[str, Any]]
    freeText: dict[str, Any] | None = attr.field(default=None)  # noqa: N815
    residual: dict[str, int] | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return PII_FACET_SCHEMA_URL


@attr.define
class LlmopsRunFacet(RunFacet):
    """Links a task's OpenLineage run to the Airflow run, the spec, the snapshots, MLflow and the model."""

    pipeline: str
    step: str
    airflow: dict[str, Any]
    specHash: str | None = attr.field(default=None)  # noqa: N815
    snapshots: dict[str, list[str]] | None = attr.field(default=None)
    mlflow: dict[str, str] | None = attr.field(default=None)
    model: dict[str, str] | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return RUN_FACET_SCHEMA_URL
