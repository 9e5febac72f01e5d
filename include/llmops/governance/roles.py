"""Who may do what, as Airflow roles: the governance roles llmops ships, the per-DAG rules each
pipeline spec asks for, and their sync into the FAB auth manager (``llmops sync-roles``).

The FAB auth manager checks every UI and REST call against a role's permissions: a global one
(``can_read`` on ``DAGs``) covers every DAG, a per-DAG one (``can_read`` on ``DAG:<dag_id>``) one
DAG. The llmops roles hold no global DAG permission (the Auditor's read excepted), so what they may
do to a DAG is exactly its ``access_control``. Roles must exist before the DAG processor parses the
DAGs: it syncs each DAG's ``access_control`` and refuses a DAG that names a missing role.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from llmops.specs.schema import PipelineSpec

AUDITOR = "Auditor"
DATA_PROTECTION_OFFICER = "DataProtectionOfficer"
MODEL_APPROVER = "ModelApprover"
GOVERNANCE_ROLES = (AUDITOR, DATA_PROTECTION_OFFICER, MODEL_APPROVER)
#: FAB's own roles: a spec may name them for per-DAG rules, their global permissions stay FAB's.
FAB_BUILTIN_ROLES = frozenset({"Admin", "Op", "User", "Viewer", "Public"})

#: Per-DAG permissions of each level. Airflow ties triggering and answering a required action
#: (approval) to ``can_edit`` on the DAG, so ``trigger`` and ``approve`` include it (it also lets
#: them pause the DAG); ``edit`` adds deleting the DAG's runs. FAB grants no per-DAG run edit.
ACCESS_LEVELS: dict[str, dict[str, frozenset[str]]] = {
    "read": {"DAGs": frozenset({"can_read"}), "DAG Runs": frozenset({"can_read"})},
    "approve": {"DAGs": frozenset({"can_read", "can_edit"}), "DAG Runs": frozenset({"can_read"})},
    "trigger": {
        "DAGs": frozenset({"can_read", "can_edit"}),
        "DAG Runs": frozenset({"can_read", "can_create"}),
    },
    "edit": {
        "DAGs": frozenset({"can_read", "can_edit", "can_delete"}),
        "DAG Runs": frozenset({"can_read", "can_create", "can_delete"}),
    },
}
_RANK = {"read": 0, "approve": 1, "trigger": 2, "edit": 3}

#: The DAGs every deployment shares, and who may act on them (the Auditor reads every DAG).
GOVERNANCE_DAG_ROLES: dict[str, dict[str, str]] = {
    "data_erasure_request": {DATA_PROTECTION_OFFICER: "trigger"},
    "data_retention": {DATA_PROTECTION_OFFICER: "trigger"},
    "compliance_audit_report": {DATA_PROTECTION_OFFICER: "trigger"},
    "model_rollback": {MODEL_APPROVER: "trigger"},
}

#: Global permissions beyond the shared base (see :func:`role_permissions`), per governance role.
_EXTRA_GLOBAL: dict[str, tuple[tuple[str, str], ...]] = {
    AUDITOR: (("can_read", "DAGs"), ("can_read", "DAG Runs"), ("can_read", "Audit Logs")),
    DATA_PROTECTION_OFFICER: (),
    MODEL_APPROVER: (("can_edit", "HITL Detail"), ("menu_access", "HITL Detail")),
}
#: Global permissions no llmops base role holds: each would open every DAG at once.
_NOT_IN_BASE = frozenset({("can_read", "DAGs"), ("can_read", "DAG Runs")})
_DAG_LEVEL_PREFIXES = ("DAG:", "DAG Run:")


def access_control(levels: Mapping[str, str]) -> dict[str, dict[str, set[str]]] | None:
    """A DAG's ``access_control`` from ``{role: level}`` (None: no per-DAG rules)."""
    return {
        role: {k: set(v) for k, v in ACCESS_LEVELS[level].items()} for role, level in levels.items()
    } or None


def _at_least(levels: dict[str, str], role: str, level: str) -> None:
    if role not in levels or _RANK[levels[role]] < _RANK[level]:
        levels[role] = level


def pipeline_dag_roles(spec: PipelineSpec) -> dict[str, dict[str, str]]:
    """``{dag_id: {role: level}}`` for one pipeline's DAGs: its ``access`` block, plus the
    ModelApprover's right to answer the finetune DAG's approval when the spec requires one."""
    out = {
        spec.ingest_dag_id: dict(spec.access.ingest),
        spec.finetune_dag_id: dict(spec.access.finetune),
        f"{spec.name}__monitor": dict(spec.access.monitor),
    }
    if spec.batch_inference is not None:
        out[spec.batch_inference_dag_id] = dict(spec.access.batch_inference)
    if spec.registry.approval.required:
        _at_least(out[spec.finetune_dag_id], MODEL_APPROVER, "approve")
    return out


def dag_access_control(spec: PipelineSpec, dag_id: str) -> dict[str, dict[str, set[str]]] | None:
    """The ``access_control`` the DAG factory gives ``dag_id`` of ``spec``."""
    return access_control(pipeline_dag_roles(spec).get(dag_id, {}))


def governance_access_control(dag_id: str) -> dict[str, dict[str, set[str]]] | None:
    """The ``access_control`` of a shared governance DAG (erasure, retention, reports, rollback)."""
    return access_control(GOVERNANCE_DAG_ROLES[dag_id])


def all_dag_roles(specs: Iterable[PipelineSpec]) -> dict[str, dict[str, str]]:
    """Every llmops DAG's ``{role: level}``: the governance DAGs and each pipeline's."""
    out = {dag_id: dict(levels) for dag_id, levels in GOVERNANCE_DAG_ROLES.items()}
    for spec in specs:
        out.update(pipeline_dag_roles(spec))
    return out


def role_permissions(
    specs: Iterable[PipelineSpec], base: Iterable[tuple[str, str]]
) -> dict[str, frozenset[tuple[str, str]]]:
    """The global permissions of every role llmops owns: the governance roles and each role a spec
    names (FAB's own roles excepted). ``base`` is what every such role gets to use the UI at all
    (FAB's Viewer permissions); the DAG-wide reads are taken out of it, so DAGs come per DAG."""
    shared = frozenset(tuple(p) for p in base) - _NOT_IN_BASE
    out = {role: shared | frozenset(_EXTRA_GLOBAL[role]) for role in GOVERNANCE_ROLES}
    for levels in all_dag_roles(specs).values():
        for role in levels:
            if role not in out and role not in FAB_BUILTIN_ROLES:
                out[role] = shared
    return out


def is_dag_level(resource: str) -> bool:
    """Per-DAG resources (``DAG:x``, ``DAG Run:x``) belong to each DAG's ``access_control``."""
    return resource.startswith(_DAG_LEVEL_PREFIXES)


@dataclass
class RoleSyncReport:
    roles: dict[str, int] = field(default_factory=dict)  # role -> global permissions after the sync
    added: int = 0
    removed: int = 0
    dags: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"roles": self.roles, "added": self.added, "removed": self.removed, "dags": self.dags}


def sync_roles(specs: Iterable[PipelineSpec]) -> RoleSyncReport:
    """Create or correct the llmops roles and every llmops DAG's per-DAG permissions in the FAB
    auth manager's database. Idempotent: a second run changes nothing; a global permission added
    to an llmops role by hand is taken away again (the roles are defined here, not in the UI)."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
    from airflow.providers.fab.auth_manager.security_manager.override import (
        FabAirflowSecurityManagerOverride,
    )

    specs = list(specs)
    dag_roles = all_dag_roles(specs)
    report = RoleSyncReport()
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        appbuilder.add_permissions(update_perms=True)
        sm.sync_roles()  # FAB's own roles and the global permissions every DAG needs
        wanted = role_permissions(specs, FabAirflowSecurityManagerOverride.VIEWER_PERMISSIONS)
        for name, perms in sorted(wanted.items()):
            role = sm.find_role(name) or sm.add_role(name)
            for perm in list(role.permissions):
                key = (perm.action.name, perm.resource.name)
                if not is_dag_level(perm.resource.name) and key not in perms:
                    sm.remove_permission_from_role(role, perm)
                    report.removed += 1
            have = {(p.action.name, p.resource.name) for p in role.permissions}
            for action, resource in sorted(perms - have):
                sm.add_permission_to_role(role, sm.create_permission(action, resource))
                report.added += 1
            report.roles[name] = len(perms)
        for builtin in sorted({r for levels in dag_roles.values() for r in levels} & FAB_BUILTIN_ROLES):
            if sm.find_role(builtin) is None:
                sm.add_role(builtin)
        for dag_id, levels in sorted(dag_roles.items()):
            sm.sync_perm_for_dag(dag_id, access_control(levels))
            report.dags += 1
    return report
