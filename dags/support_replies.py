"""DAGs of the support_replies pipeline, built from include/pipelines/support_replies.yaml.

One thin file per pipeline spec: a broken spec shows up as an Airflow import error of this file
only, and the other pipelines keep loading. Add a pipeline with `llmops new-pipeline <name>`.
"""

from llmops.orchestration.factory import build_pipeline_dags

build_pipeline_dags("support_replies", globals())
