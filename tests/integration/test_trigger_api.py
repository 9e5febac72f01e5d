"""Triggering the finetune DAG as users do: through Airflow's REST API with run parameters, the
same call the UI's trigger form makes, against a real `airflow api-server` on 127.0.0.1.

Good parameters create a queued run that carries them; bad ones are refused before any run
exists, with a message naming the parameter; a viewer cannot trigger at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2]
DAG_ID = "support_bot__finetune"


@pytest.fixture(scope="module")
def server(airflow_db: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The API server over a metadata DB that holds this project's DAGs, as the DAG processor leaves it."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow_api_server import run_api_server

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(PROJECT / "dags"))
    assert not bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)
    with run_api_server(
        tmp_path_factory.mktemp("trigger"), {"ml_engineer": "op", "auditor": "viewer"}
    ) as srv:
        yield srv


def _trigger(server: Any, conf: dict[str, Any], user: str = "ml_engineer") -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/api/v2/dags/{DAG_ID}/dagRuns",
        json={"logical_date": None, "conf": conf, "note": "triggered by the API test"},
        headers={"Authorization": f"Bearer {server.token(user)}"},
        timeout=30,
        trust_env=False,
    )


def _runs(server: Any) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.base_url}/api/v2/dags/{DAG_ID}/dagRuns",
        headers={"Authorization": f"Bearer {server.token('ml_engineer')}"},
        timeout=30,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return response.json()["dag_runs"]


def test_params_schema_is_published_for_the_trigger_form(server: Any) -> None:
    """Expect every run parameter with its type, title and description in the DAG's details."""
    response = httpx.get(
        f"{server.base_url}/api/v2/dags/{DAG_ID}/details",
        headers={"Authorization": f"Bearer {server.token('auditor')}"},
        timeout=30,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    params = response.json()["params"]
    assert set(params) == {"curated_snapshot_id", "learning_rate", "epochs", "max_steps", "promote"}
    for name, param in params.items():
        assert param["description"], name
        assert param["schema"].get("type"), name
        assert param["schema"].get("title"), name
    assert params["learning_rate"]["schema"]["maximum"] == 1


def test_good_params_create_a_queued_run_that_carries_them(server: Any) -> None:
    conf = {"learning_rate": 0.002, "max_steps": 5, "promote": False}
    response = _trigger(server, conf)
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["state"] == "queued"
    assert run["run_type"] == "manual"
    assert {k: run["conf"][k] for k in conf} == conf
    assert run["triggering_user_name"] == "ml_engineer"
    assert run["dag_run_id"] in {r["dag_run_id"] for r in _runs(server)}


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"learning_rate": 2}, "learning_rate"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"max_steps": 0}, "max_steps"),
        ({"epochs": -1}, "epochs"),
        ({"curated_snapshot_id": "../../etc/passwd"}, "curated_snapshot_id"),
        ({"promote": "yes"}, "promote"),
    ],
)
def test_bad_params_are_refused_naming_the_parameter(server: Any, conf: dict[str, Any], named: str) -> None:
    before = len(_runs(server))
    response = _trigger(server, conf)
    assert response.status_code == 400, response.text
    assert named in response.json()["detail"], response.text
    assert len(_runs(server)) == before  # nothing was created


def test_a_viewer_cannot_trigger(server: Any) -> None:
    response = _trigger(server, {"max_steps": 5}, user="auditor")
    assert response.status_code == 403, response.text
