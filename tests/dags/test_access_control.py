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
        "DAGs": {"can_read", "can_edit"},
        "DAG Runs": {"can_read", "can_create", "can_edit"},
    }
    assert finetune["Auditor"] == {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}}
    assert "DataOwner" not in finetune
    ingest = dags["support_bot__ingest"].access_control
    assert ingest["DataOwner"] == {"DAGs": {"can_read"}, "DAG Runs": {"can_read", "can_create"}}
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


def test_no_access_block_means_no_per_dag_rules():
    from llmops.orchestration.dag_support import access_control

    assert access_control({}) is None
