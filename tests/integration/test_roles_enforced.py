"""Roles enforced by Airflow itself: the FAB auth manager, the roles `llmops sync-roles` creates,
real users made with `airflow users create`, and a real `airflow api-server` answering REST calls.

The metadata DB is this module's own (FAB's user tables beside Airflow's), set up the way an
operator does: `airflow db migrate`, `llmops sync-roles`, `airflow dags reserialize` (the DAG
processor's parse, which syncs each DAG's ``access_control``), then the users.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2]
SEALED_SUBJECT = "sealed:v1:" + "A" * 64  # the form's pattern; the run never starts here (no scheduler)
USERS = {  # user -> role
    "dpo": "DataProtectionOfficer",
    "auditor": "Auditor",
    "engineer": "MLEngineer",
    "owner": "DataOwner",
    "approver": "ModelApprover",
    "nobody": "Public",
}


def _run(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, (
        f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def _overrides(work: Path) -> dict[str, str]:
    """The settings of this module's deployment: its own DB, FAB, the specs under ``work``."""
    from airflow_api_server import FAB_AUTH_MANAGER

    return {
        "LLMOPS_PIPELINES_DIR": str(work / "pipelines"),
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{work / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
    }


def _operator_env(work: Path) -> dict[str, str]:
    """What an operator's shell has when running the CLI steps against that deployment."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")} | _overrides(work)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT / "include"), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def fab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from airflow_api_server import run_api_server

    work = tmp_path_factory.mktemp("fab")
    pipelines = work / "pipelines"  # the demo specs, support_bot with approval by the user "approver"
    pipelines.mkdir()
    for spec in (PROJECT / "include" / "pipelines").glob("*.yaml"):
        raw = yaml.safe_load(spec.read_text())
        if raw["name"] == "support_bot":
            raw["registry"]["approval"] = {"required": True, "approvers": ["approver"]}
        (pipelines / spec.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    overrides = _overrides(work)
    env = _operator_env(work)
    bin_dir = Path(sys.executable).parent
    _run([sys.executable, "-m", "airflow", "db", "migrate"], env)
    _run([str(bin_dir / "llmops"), "sync-roles"], env)
    _run([sys.executable, "-m", "airflow", "dags", "reserialize"], env)
    passwords = {user: secrets.token_urlsafe(12) for user in USERS}
    for user, role in USERS.items():
        _run(
            [sys.executable, "-m", "airflow", "users", "create", "--username", user, "--role", role,
             f"--password={passwords[user]}", "--email", f"{user}@example.com",
             "--firstname", user, "--lastname", "test"],  # --password=: a password may start with "-"
            env,
        )  # fmt: skip
    with run_api_server(work, {}, fab_users=passwords, env_overrides=overrides) as server:
        yield server


def _call(server: Any, method: str, path: str, user: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"{server.base_url}{path}",
        headers={"Authorization": f"Bearer {server.token(user)}"},
        timeout=60,
        trust_env=False,
        **kwargs,
    )


def _trigger(server: Any, dag_id: str, user: str, conf: dict[str, Any] | None = None) -> httpx.Response:
    body = {"logical_date": None, "conf": conf or {}, "note": f"roles test: {user}"}
    return _call(server, "POST", f"/api/v2/dags/{dag_id}/dagRuns", user, json=body)


ERASURE_CONF = {"subject_id": SEALED_SUBJECT, "request_id": "DSR-roles-1", "requested_by": "dpo@example.com"}


def test_only_the_data_protection_officer_can_trigger_erasure(fab_server: Any) -> None:
    """Expect 403 on data_erasure_request for every other role, including the ML engineer and the
    auditor, and a queued run for the DPO."""
    for user in ("engineer", "owner", "auditor", "approver", "nobody"):
        response = _trigger(fab_server, "data_erasure_request", user, ERASURE_CONF)
        assert response.status_code == 403, (user, response.status_code, response.text)
    response = _trigger(fab_server, "data_erasure_request", "dpo", ERASURE_CONF)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "queued"
    runs = _call(fab_server, "GET", "/api/v2/dags/data_erasure_request/dagRuns", "auditor")
    assert runs.status_code == 200 and runs.json()["total_entries"] == 1


def test_the_auditor_reads_every_dag_and_triggers_none(fab_server: Any) -> None:
    dags = _call(fab_server, "GET", "/api/v2/dags", "auditor", params={"limit": 100})
    assert dags.status_code == 200, dags.text
    seen = {d["dag_id"] for d in dags.json()["dags"]}
    assert {
        "support_bot__finetune",
        "northwind_kb__finetune",
        "data_erasure_request",
        "model_rollback",
    } <= seen
    for dag_id in (
        "support_bot__finetune",
        "support_bot__ingest",
        "compliance_audit_report",
        "model_rollback",
    ):
        runs = _call(fab_server, "GET", f"/api/v2/dags/{dag_id}/dagRuns", "auditor")
        assert runs.status_code == 200, (dag_id, runs.text)
        assert _trigger(fab_server, dag_id, "auditor").status_code == 403, dag_id
    pause = _call(
        fab_server, "PATCH", "/api/v2/dags/support_bot__ingest", "auditor", json={"is_paused": True}
    )
    assert pause.status_code == 403


def test_spec_roles_act_only_on_their_dags(fab_server: Any) -> None:
    """The demo spec gives DataOwner trigger on ingest, MLEngineer read on ingest and edit on
    finetune: each may do exactly that; a role with no rule on a DAG does not even see it."""
    assert _trigger(fab_server, "support_bot__ingest", "owner").status_code == 200
    assert _trigger(fab_server, "support_bot__ingest", "engineer").status_code == 403
    assert _trigger(fab_server, "support_bot__finetune", "owner").status_code == 403
    response = _trigger(fab_server, "support_bot__finetune", "engineer", {"promote": False})
    assert response.status_code == 200, response.text
    assert _trigger(fab_server, "model_rollback", "engineer").status_code == 403

    owner_dags = _call(fab_server, "GET", "/api/v2/dags", "owner", params={"limit": 100})
    assert owner_dags.status_code == 200
    assert {d["dag_id"] for d in owner_dags.json()["dags"]} == {"support_bot__ingest"}
    hidden = _call(fab_server, "GET", "/api/v2/dags/northwind_kb__finetune/dagRuns", "owner")
    assert hidden.status_code == 403
    assert _call(fab_server, "GET", "/api/v2/dags", "nobody").status_code == 403


def test_sync_roles_is_idempotent_and_takes_back_hand_added_rights(fab_server: Any) -> None:
    """A second sync changes nothing; a global right an admin added to an llmops role by hand (here
    DAG-wide trigger on the DataOwner) is removed again, so the role is what the specs say."""
    env = _operator_env(Path(fab_server.log_file).parent)
    llmops = str(Path(sys.executable).parent / "llmops")
    assert '"added": 0, "removed": 0' in _run([llmops, "sync-roles"], env)
    _run(
        [
            sys.executable,
            "-m",
            "airflow",
            "roles",
            "add-perms",
            "DataOwner",
            "-r",
            "DAG Runs",
            "-a",
            "can_create",
        ],
        env,
    )
    assert '"removed": 1' in _run([llmops, "sync-roles"], env)


def test_only_the_model_approver_may_answer_an_approval(fab_server: Any) -> None:
    """Answering the approval (a required action) needs the ModelApprover role: the ML engineer,
    who may edit the finetune DAG, gets 403; the approver passes authorisation and gets 404, as
    there is no pending request in this database. Neither the approver starts training."""
    path = "/api/v2/dags/support_bot__finetune/dagRuns/manual__none/taskInstances/approve/-1/hitlDetails"
    body = {"chosen_options": ["Approve"], "params_input": {}}
    for user in ("engineer", "owner", "auditor", "dpo"):
        assert _call(fab_server, "PATCH", path, user, json=body).status_code == 403, user
    assert _call(fab_server, "PATCH", path, "approver", json=body).status_code == 404
    assert (
        _call(
            fab_server, "PATCH", path.replace("support_bot", "northwind_kb"), "approver", json=body
        ).status_code
        == 403
    )
    assert _trigger(fab_server, "support_bot__finetune", "approver").status_code == 403


def _write_report(root: str, pipeline: str, run_id: str) -> None:
    from llmops import storage
    from llmops.reports import index

    report = {
        "schema_version": "1.0",
        "generated_at": "2026-03-03T09:30:00+00:00",
        "pipeline": {"name": pipeline, "description": "roles check", "owner": "x", "purpose": "x"},
        "run": {"finetune_run_id": run_id},
        "summary": {"decision": "promoted", "model": None},
    }
    storage.write_json(storage.join(root, pipeline, run_id, index.REPORT_JSON), report)


def test_reports_are_listed_only_for_pipelines_the_user_can_read(fab_server: Any) -> None:
    """Expect the DataOwner (support_bot's ingest only) to list support_bot's reports and not
    northwind_kb's, and a 404 for a northwind_kb report; the auditor sees both."""
    from llmops.settings import get_settings

    root = get_settings().reports_root
    _write_report(root, "support_bot", "roles-check-sb")
    _write_report(root, "northwind_kb", "roles-check-nk")

    def listed(user: str) -> set[tuple[str, str]]:
        response = _call(fab_server, "GET", "/llmops/api/reports", user)
        assert response.status_code == 200, response.text
        return {(e["pipeline"], e["report_id"]) for e in response.json()["reports"]}

    owner = listed("owner")
    assert ("support_bot", "roles-check-sb") in owner
    assert not {p for p, _ in owner} - {"support_bot"}
    assert {("support_bot", "roles-check-sb"), ("northwind_kb", "roles-check-nk")} <= listed("auditor")
    path = "/llmops/reports/northwind_kb/roles-check-nk/audit_report.json"
    assert _call(fab_server, "GET", path, "owner").status_code == 404
    assert _call(fab_server, "GET", path, "auditor").status_code == 200
    assert _call(fab_server, "GET", path, "engineer").status_code == 200  # MLEngineer: northwind_kb finetune
