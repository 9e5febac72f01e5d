"""OpenLineage lineage of the llmops steps (see ``llmops.lineage.openlineage``).

Each ``emit_*`` is called once at the end of its step, inside the Airflow task, and never raises.
Importing this package loads only the standard library: the OpenLineage client and the Airflow
provider are imported when an event is built.
"""

from __future__ import annotations

from llmops.lineage.openlineage import (
    StepLineage,
    emit_commit,
    emit_curate,
    emit_extract,
    emit_prepare_training_data,
    emit_register,
    emit_stage,
    emit_train,
    emit_validate,
    is_active,
)

__all__ = [
    "StepLineage",
    "emit_commit",
    "emit_curate",
    "emit_extract",
    "emit_prepare_training_data",
    "emit_register",
    "emit_stage",
    "emit_train",
    "emit_validate",
    "is_active",
]
