"""The llmops roles name only permissions the FAB auth manager knows, and hold no DAG-wide right
beyond the Auditor's read (a typo would create a permission nothing checks)."""

from __future__ import annotations

from pathlib import Path

from llmops.governance import roles
from llmops.specs import load_spec

PROJECT = Path(__file__).resolve().parents[2]


def _fab_permissions() -> set[tuple[str, str]]:
    from airflow.providers.fab.auth_manager.security_manager.override import (
        FabAirflowSecurityManagerOverride as Fab,
    )

    return {tuple(p) for config in Fab.ROLE_CONFIGS for p in config["perms"]}


def _demo_specs() -> list:
    return [load_spec(p) for p in sorted((PROJECT / "include" / "pipelines").glob("*.yaml"))]


def test_every_global_permission_is_one_fab_checks() -> None:
    from airflow.providers.fab.auth_manager.security_manager.override import (
        FabAirflowSecurityManagerOverride as Fab,
    )

    wanted = roles.role_permissions(_demo_specs(), Fab.VIEWER_PERMISSIONS)
    known = _fab_permissions()
    for role, perms in wanted.items():
        assert perms <= known, (role, sorted(perms - known))


def test_only_the_auditor_reads_every_dag() -> None:
    from airflow.providers.fab.auth_manager.security_manager.override import (
        FabAirflowSecurityManagerOverride as Fab,
    )

    wanted = roles.role_permissions(_demo_specs(), Fab.VIEWER_PERMISSIONS)
    assert {"DataOwner", "MLEngineer"} <= set(wanted)  # the demo specs' roles
    assert not set(wanted) & roles.FAB_BUILTIN_ROLES  # FAB's own roles keep FAB's rights
    for role, perms in wanted.items():
        dag_wide = {p for p in perms if p[1] in ("DAGs", "DAG Runs") and p[0] != "menu_access"}
        assert dag_wide == (
            {("can_read", "DAGs"), ("can_read", "DAG Runs")} if role == "Auditor" else set()
        ), role


def test_every_level_uses_actions_fab_allows_per_dag() -> None:
    from airflow.providers.fab.www.security.permissions import RESOURCE_DETAILS_MAP

    for level, resources in roles.ACCESS_LEVELS.items():
        for resource, actions in resources.items():
            assert actions <= RESOURCE_DETAILS_MAP[resource]["actions"], (level, resource)


def test_every_llmops_dag_has_rules_for_its_roles() -> None:
    dags = roles.all_dag_roles(_demo_specs())
    assert dags["data_erasure_request"] == {"DataProtectionOfficer": "trigger"}
    assert dags["support_bot__ingest"]["DataOwner"] == "trigger"
    assert {"support_bot__batch_inference", "northwind_kb__monitor"} <= set(dags)
