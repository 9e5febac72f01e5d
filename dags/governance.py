"""Airflow DAGs shared by every pipeline: data_retention (daily), data_erasure_request and
model_rollback (on demand), compliance_audit_report (weekly and on demand)."""

from llmops.orchestration.governance_dags import build_governance_dags

build_governance_dags(globals())
