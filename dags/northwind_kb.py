"""DAGs of the northwind_kb pipeline, built from include/pipelines/northwind_kb.yaml.

One thin file per pipeline spec: a broken spec shows up as an Airflow import error of this file
only, and the other pipelines keep loading. Add a pipeline with `llmops new-pipeline <name>`.
"""

from llmops.orchestration.factory import build_pipeline_dags

build_pipeline_dags("northwind_kb", globals())
