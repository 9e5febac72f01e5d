"""Airflow DAGs shared by every pipeline: data_retention (daily) and data_erasure_request (on demand)."""

from llmops.orchestration.governance_dags import build_governance_dags

build_governance_dags(globals())
