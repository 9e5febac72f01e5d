"""Build the Airflow DAG family for one pipeline spec.

Imported by the thin files in dags/, so only the standard library, ``airflow.sdk`` and the DAG
builders (light by the same rule) are imported at module level; every task imports its heavy
dependencies when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmops.orchestration.batch_dag import batch_inference_dag
from llmops.orchestration.finetune.dag import finetune_dag
from llmops.orchestration.ingest.dag import ingest_dag
from llmops.orchestration.monitor_dag import monitor_dag
from llmops.specs import load_pipeline

if TYPE_CHECKING:
    from airflow.sdk import DAG


def build_pipeline_dags(name: str, namespace: dict[str, Any]) -> list[DAG]:
    """Load the spec `name` and put its DAGs into the calling DAG file's globals.

    A broken spec raises here, so Airflow shows it as an import error of that pipeline's file only.
    """
    spec = load_pipeline(name)
    dags = [ingest_dag(spec), finetune_dag(spec), monitor_dag(spec)]
    if spec.batch_inference is not None:
        dags.append(batch_inference_dag(spec))
    for built in dags:
        namespace[built.dag_id.replace("-", "_")] = built
    return dags
