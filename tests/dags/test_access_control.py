"""Per-DAG roles from the spec's `access` block land on the DAGs as `access_control`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmops.specs import SpecError, parse_spec

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT / "dags"))
    assert not bag.import_errors
    return bag.dags


def test_demo_roles_are_set_per_dag(dags):
    finetune = dags["support_bot__finetune"].access_control
    assert finetune["MLEngineer"] == {
        "DAGs": {"can_read", "can_edit", "can_delete"},
        "DAG Runs": {"can_read", "can_create", "can_delete"},
    }
    assert finetune["Auditor"] == {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}}
    assert "DataOwner" not in finetune
    ingest = dags["support_bot__ingest"].access_control
    # Airflow authorises a trigger with can_edit on the DAG as well as can_create on its runs
    assert ingest["DataOwner"] == {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}}
    assert dags["support_bot__monitor"].access_control["Auditor"]["DAGs"] == {"can_read"}


def test_roles_survive_serialization(dags):
    """Expect the rules in the serialized DAG, which is what the API server and the UI read."""
    from airflow.serialization.serialized_objects import DagSerialization

    data = DagSerialization.to_dict(dags["support_bot__ingest"])
    restored = DagSerialization.from_dict(data)
    assert restored.access_control["Auditor"] == {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}}


def test_an_unknown_access_level_names_the_field():
    raw = yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())
    raw["access"]["finetune"]["Auditor"] = "admin"
    with pytest.raises(SpecError, match=r"access\.finetune\.Auditor"):
        parse_spec(raw)


def test_governance_dags_belong_to_their_roles(dags):
    """Expect erasure and retention triggerable by the data protection officer only, rollback by
    the model approver; no other llmops role is named on them (the Auditor reads every DAG)."""
    for dag_id in ("data_erasure_request", "data_retention", "compliance_audit_report"):
        assert dags[dag_id].access_control == {
            "DataProtectionOfficer": {
                "DAGs": {"can_read", "can_edit"},
                "DAG Runs": {"can_read", "can_create"},
            }
        }, dag_id
    assert set(dags["model_rollback"].access_control) == {"ModelApprover"}


def test_required_approval_lets_the_model_approver_answer(dags):
    """Expect the ModelApprover on the finetune DAG of a spec that requires approval: answering a
    required action needs can_edit on the DAG; not on a spec without approval."""
    from llmops.governance.roles import pipeline_dag_roles

    raw = yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())
    raw["registry"]["approval"] = {"required": True, "approvers": ["alice"]}
    spec = parse_spec(raw)
    assert pipeline_dag_roles(spec)["support_bot__finetune"]["ModelApprover"] == "approve"
    raw["registry"]["approval"] = {"required": False}
    assert "ModelApprover" not in pipeline_dag_roles(parse_spec(raw))["support_bot__finetune"]


def test_no_access_block_means_no_per_dag_rules():
    from llmops.governance.roles import access_control

    assert access_control({}) is None
