"""Release of a finetune run: register the version, read the approval, move the champion alias."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from llmops.errors import safe_error_text
from llmops.ledger import get_ledger, record
from llmops.ledger.events import (
    ModelApproved,
    ModelGated,
    ModelPromoted,
    ModelRegistered,
    ModelRejected,
    PromotionSkipped,
    ReportGenerated,
)
from llmops.specs import spec_hash
from llmops.specs.pinned import run_spec
from llmops.storage import safe_run_id

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)


def register(pipeline: str, trained: dict[str, Any], decision: dict[str, Any], run_id: str) -> dict[str, Any]:
    from llmops import __version__
    from llmops.jobs.outputs import opened_model_dir
    from llmops.privacy.keys import get_key_ring
    from llmops.registry import mlflow_registry

    spec = run_spec(pipeline, run_id)
    ledger = get_ledger()
    existing = ledger.records(pipeline=spec.name, event_type=ModelRegistered.name, run_id=run_id)
    if existing:  # a retry after the version was created: do not register a second version
        return {k: existing[-1].payload[k] for k in ("model_name", "version", "model_uri")}
    from llmops.orchestration.finetune.data import example_prompt

    # The job folder's adapter (and a chained stage's merged base) is encrypted: decrypted into a
    # scratch folder for the copy into MLflow's artifact store, which holds the registered model in
    # plaintext under that store's own protection (docs/encryption_zones.md).
    with (
        opened_model_dir(trained["base_model_dir"], key_ring=get_key_ring) as base_model_dir,
        opened_model_dir(trained["adapter_dir"], "adapter_path", key_ring=get_key_ring) as adapter_dir,
    ):
        registered = mlflow_registry.log_and_register_model(
            run_id=trained["mlflow_run_id"],
            model_name=spec.registry.model_name,
            base_model_dir=base_model_dir,
            adapter_dir=adapter_dir,
            tags={
                "llmops.pipeline": spec.name,
                "llmops.spec_hash": spec_hash(spec),
                "llmops.code_version": __version__,
                "llmops.curated_snapshot_id": trained["curated_snapshot_id"],
                "llmops.sft_snapshot_id": trained["sft_snapshot_id"],
                "llmops.airflow_run_id": run_id,
                "llmops.gates_passed": str(decision["passed"]).lower(),
                "llmops.adapter_uri": trained["adapter_dir"],
                "llmops.base_model": spec.training.base_model.uri,
                "llmops.base_model_dir": trained["base_model_dir"],
                "llmops.method": spec.training.method,
                "llmops.chain": json.dumps(trained.get("chain") or [])[:4900],
                "llmops.gates": json.dumps(decision["gates"])[:4900],
            },
            max_new_tokens=spec.evaluation.max_new_tokens,
            input_example=example_prompt(spec, trained["sft_snapshot_id"]),
        )
    record(
        spec,
        ModelRegistered(
            **registered, mlflow_run_id=trained["mlflow_run_id"], alias=mlflow_registry.CHALLENGER
        ),
        f"model/{registered['model_name']}/{registered['version']}",
        run_id,
    )
    from llmops import lineage

    lineage.emit_register(spec, trained, {**registered, "alias": mlflow_registry.CHALLENGER})  # never raises
    return registered


APPROVE, REJECT = "Approve", "Reject"


def _one_answer(spec: PipelineSpec, response: dict[str, Any] | None) -> dict[str, Any]:
    """One approval request's answer: approved, rejected, timed out, or from a user not allowed."""
    if not response or not response.get("chosen_options"):
        return {"approved": False, "outcome": "no_decision", "approver": None, "responded_at": None}
    chosen = response["chosen_options"][0]
    user = response.get("responded_by_user") or None
    responded_at = response.get("responded_at")
    outcome: dict[str, Any] = {
        "approved": chosen == APPROVE,
        "outcome": "approved" if chosen == APPROVE else "rejected",
        "approver": {"id": str(user.get("id")), "name": str(user.get("name"))} if user else None,
        "responded_at": responded_at.isoformat() if hasattr(responded_at, "isoformat") else responded_at,
    }
    if user is None:
        outcome.update(approved=False, outcome="timed_out")
    approvers = spec.registry.approval.approvers
    if outcome["approved"] and approvers and outcome["approver"]["id"] not in approvers:
        outcome.update(approved=False, outcome="approver_not_allowed")
    return outcome


def approval_outcome(
    spec: PipelineSpec,
    response: dict[str, Any] | list[dict[str, Any] | None] | None,
    triggered_by: str | None = None,
) -> dict[str, Any]:
    """Read the human decisions (the approval tasks' XComs) into what the ledger records.

    No answer before the deadline comes back as the default, "Reject", with no responder: that
    is a timeout. A responder outside ``registry.approval.approvers`` does not count, nor does the
    user who triggered the run (separation of duties), nor one person answering twice when
    ``min_approvers`` asks for several.
    """
    responses = response if isinstance(response, list) else [response]
    answers = [_one_answer(spec, r) for r in responses] or [_one_answer(spec, None)]
    refused = next((a for a in answers if not a["approved"]), None)
    outcome = dict(refused or answers[-1])
    outcome["approvers"] = [a["approver"] for a in answers if a["approver"]]
    outcome["triggered_by"] = triggered_by
    if refused is None:
        ids = [a["approver"]["id"] for a in answers]
        if triggered_by and triggered_by in ids:
            outcome.update(approved=False, outcome="approver_triggered_the_run")
        elif len(set(ids)) < spec.registry.approval.min_approvers:
            outcome.update(approved=False, outcome="approvers_not_distinct")
    return outcome


def promote(
    pipeline: str,
    registered: dict[str, Any],
    run_id: str,
    enabled: bool = True,
    approval: dict[str, Any] | list[dict[str, Any] | None] | None = None,
    triggered_by: str | None = None,
) -> dict[str, Any]:
    """Move the champion alias, unless promotion is off, the required approval was not given (by
    enough distinct approvers, none of them the user who triggered the run), or the champion
    changed since the run was gated against it (checked under the promotion lock)."""
    from llmops.registry import mlflow_registry

    spec = run_spec(pipeline, run_id)
    subject = f"model/{registered['model_name']}/{registered['version']}"
    if not enabled:
        record(
            spec,
            PromotionSkipped(reason="promotion disabled for this run (Param promote=false)"),
            subject,
            run_id,
        )
        return {
            "promoted": False,
            "champion": mlflow_registry.alias_version(registered["model_name"], "champion"),
        }
    if spec.registry.approval.required:
        outcome = approval_outcome(spec, approval, triggered_by)
        event = ModelApproved if outcome["approved"] else ModelRejected
        record(
            spec,
            event(model_name=registered["model_name"], version=registered["version"], **outcome),
            subject,
            run_id,
        )
        if not outcome["approved"]:
            return {
                "promoted": False,
                "reason": outcome["outcome"],
                "champion": mlflow_registry.alias_version(registered["model_name"], "champion"),
            }
    from llmops.orchestration.deploy import ensure_registry_webhook

    ensure_registry_webhook(spec)  # before the alias moves, so MLflow's own event reaches it too
    try:
        moved = mlflow_registry.promote(
            registered["model_name"], registered["version"], gated_champion(spec, run_id)
        )
    except mlflow_registry.ChampionChanged as exc:  # the newer champion stays; the reason is recorded
        record(
            spec,
            PromotionSkipped(reason=safe_error_text(exc), champion=exc.current, gated_against=exc.expected),
            subject,
            run_id,
        )
        return {"promoted": False, "reason": "champion_changed", "champion": exc.current}
    record(
        spec,
        ModelPromoted(model_name=registered["model_name"], version=registered["version"], **moved),
        subject,
        run_id,
    )
    return {"promoted": True, **moved}


def gated_champion(spec: PipelineSpec, run_id: str) -> Any:
    """The champion version this run's gates were judged against, from its `ModelGated` record.

    `UNCHECKED` when the run recorded none (champion comparison off in the spec, a record written
    before the field existed, or a promotion outside a fine-tune run): nothing to re-check then.
    """
    from llmops.registry import mlflow_registry

    gated = get_ledger().records(pipeline=spec.name, event_type=ModelGated.name, run_id=run_id)
    if not gated or "champion_version" not in gated[-1].payload:
        return mlflow_registry.UNCHECKED
    return gated[-1].payload["champion_version"]


def audit_report(pipeline: str, run_id: str) -> dict[str, Any]:
    from llmops.reports.audit import write_audit_report

    spec = run_spec(pipeline, run_id)
    paths = write_audit_report(spec, run_id)
    record(spec, ReportGenerated(**paths), f"report/{safe_run_id(run_id)}", run_id)
    return paths
