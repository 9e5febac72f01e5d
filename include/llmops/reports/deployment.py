"""What happened to a model version after registration: approval, alias moves, monitoring, erasure.

The ledger is replayed to tell the version's deployment history (registered, approved, promoted,
replaced, rolled back, restored) with times and actors; the registry's aliases are compared with
what the replay says they should be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmops.ledger.events import (
    ErasureCompleted,
    ErasureModelFlagged,
    ErasureRequested,
    ModelApproved,
    ModelDeployed,
    ModelDeploymentFailed,
    ModelPromoted,
    ModelRegistered,
    ModelRejected,
    ModelRolledBack,
    MonitoringAlerted,
    MonitoringMeasured,
    PromotionSkipped,
    RetrainTriggered,
)
from llmops.reports.evidence import record_ref

if TYPE_CHECKING:
    from llmops.ledger import LedgerRecord
    from llmops.reports.period import Window
    from llmops.specs import PipelineSpec

MANAGED_ALIASES = ("challenger", "champion", "previous", "rolled_back")  # the aliases llmops moves
MONITORING_RUNS_SHOWN = 30
SERVING_EVENTS = (ModelDeployed.name, ModelDeploymentFailed.name)  # subject model/<name>/<version>/<target>


def replay_aliases(
    records: list[LedgerRecord], model_name: str
) -> list[tuple[LedgerRecord, dict[str, str], dict[str, str]]]:
    """Alias moves of a model as the ledger tells them: (record, aliases before, aliases after).

    Registration moves ``challenger``; a promotion moves ``champion`` and keeps the replaced one as
    ``previous``; a rollback makes ``previous`` champion again and labels the replaced one
    ``rolled_back`` (as ``llmops.registry.mlflow_registry`` does). Comparing the result with the
    registry shows whether anyone moved an alias outside the pipeline.
    """
    aliases: dict[str, str] = {}
    steps = []
    for record in records:
        payload = record.payload
        if payload.get("model_name") != model_name:
            continue
        before = dict(aliases)
        if record.event_type == ModelRegistered.name:
            aliases["challenger"] = str(payload["version"])
        elif record.event_type == ModelPromoted.name:
            if payload.get("previous") is not None:
                aliases["previous"] = str(payload["previous"])
            aliases["champion"] = str(payload.get("champion") or payload["version"])
        elif record.event_type == ModelRolledBack.name:
            if payload.get("rolled_back") is not None:
                aliases["rolled_back"] = str(payload["rolled_back"])
            aliases["champion"] = str(payload["champion"])
            aliases.pop("previous", None)
        else:
            continue
        steps.append((record, before, dict(aliases)))
    return steps


def held(aliases: dict[str, str], version: str) -> list[str]:
    return sorted(a for a, v in aliases.items() if v == version)


def approver_label(payload: dict[str, Any]) -> str:
    person = payload.get("approver") or {}
    if not person:
        return "nobody (no answer in time)" if payload.get("outcome") == "timed_out" else "nobody"
    name, uid = person.get("name"), person.get("id")
    return f"{name} ({uid})" if name and name != uid else str(uid)


Entry = tuple[str, str, str]  # (event, description, actor)


def _rollback_entry(
    record: LedgerRecord, version: str, mine_before: list[str], mine_after: list[str]
) -> Entry | None:
    payload = record.payload
    reason = f" Reason: {payload.get('reason')}" if payload.get("reason") else ""
    actor = str(payload.get("requested_by") or "unknown")
    if str(payload.get("rolled_back")) == version:
        return "rolled back", f"rolled back: v{payload.get('champion')} is champion again.{reason}", actor
    if str(payload.get("champion")) == version:
        return (
            "restored as champion",
            f"champion again after a rollback of v{payload.get('rolled_back')}.{reason}",
            actor,
        )
    if mine_before != mine_after:
        return "alias moved", f"aliases now: {', '.join(mine_after) or 'none'}", actor
    return None


def _side_effect_entry(
    record: LedgerRecord, after: dict[str, str], mine_before: list[str], mine_after: list[str]
) -> Entry | None:
    """Another version's registration or promotion that moved one of this version's aliases."""
    if mine_before == mine_after:
        return None
    other = record.payload.get("version")
    if "champion" in mine_before and "champion" not in mine_after:
        return "replaced as champion", f"replaced as champion by v{other}; alias previous", record.actor
    if "previous" in mine_before and "previous" not in mine_after:
        return "no longer previous", f"v{after.get('previous')} is the previous champion now", record.actor
    if "challenger" in mine_before and "challenger" not in mine_after:
        return "challenger moved", f"alias challenger moved to v{other}", record.actor
    return "alias moved", f"aliases now: {', '.join(mine_after) or 'none'}", record.actor


def _alias_entry(
    record: LedgerRecord, version: str, subject: str, before: dict[str, str], after: dict[str, str]
) -> Entry | None:
    """A registration, promotion or rollback, as it concerns this version."""
    payload = record.payload
    mine_before, mine_after = held(before, version), held(after, version)
    if record.event_type == ModelRegistered.name and record.subject == subject:
        return "registered", f"registered from fine-tune run {record.run_id}; alias challenger", record.actor
    if record.event_type == ModelPromoted.name and str(payload.get("version")) == version:
        kept = f"; v{payload['previous']} kept as previous" if payload.get("previous") else ""
        return "promoted", "promoted: alias champion" + kept, record.actor
    if record.event_type == ModelRolledBack.name:
        return _rollback_entry(record, version, mine_before, mine_after)
    return _side_effect_entry(record, after, mine_before, mine_after)


def _decision_entry(record: LedgerRecord, subject: str) -> Entry | None:
    """An approval, a skipped promotion, a serving target or an erasure review of this version."""
    payload = record.payload
    if record.subject == subject and record.event_type in (ModelApproved.name, ModelRejected.name):
        if record.event_type == ModelApproved.name:
            return (
                "approved",
                f"approved for promotion at {payload.get('responded_at')}",
                approver_label(payload),
            )
        outcome = str(payload.get("outcome") or "").replace("_", " ")
        return "not approved", f"not approved ({outcome})", approver_label(payload)
    if record.subject == subject and record.event_type == PromotionSkipped.name:
        return "promotion skipped", str(payload.get("reason") or ""), record.actor
    if record.event_type in SERVING_EVENTS and record.subject.startswith(f"{subject}/"):
        # A serving target (`model/<name>/<version>/<target>`): which target, why, the outcome.
        target = payload.get("target") or record.subject.rsplit("/", 1)[-1]
        passed = record.event_type == ModelDeployed.name
        description = (
            f"{'deployed to' if passed else 'deployment to'} {target}"
            + (f" (on {payload['trigger']})" if payload.get("trigger") else "")
            + ("" if passed else ": failed")
        )
        return ("deployed" if passed else "deployment failed"), description, record.actor
    if record.subject == subject and record.event_type == ErasureModelFlagged.name:
        description = f"erasure request {payload.get('request_id')}: {payload.get('action')}"
        return "flagged for erasure review", description, record.actor
    return None


def deployment_history(records: list[LedgerRecord], model_name: str, version: str) -> list[dict[str, Any]]:
    """Every recorded event that changed or decided this version's deployment, oldest first."""
    version = str(version)
    subject = f"model/{model_name}/{version}"
    moves = {r.seq: (before, after) for r, before, after in replay_aliases(records, model_name)}
    history = []
    for record in records:
        if record.seq in moves:
            before, after = moves[record.seq]
            entry = _alias_entry(record, version, subject, before, after)
            aliases_after: list[str] | None = held(after, version)
        else:
            entry = _decision_entry(record, subject)
            aliases_after = None
        if entry is None:
            continue
        kind, description, actor = entry
        history.append(
            {
                "at": record.recorded_at,
                "event": kind,
                "description": description,
                "actor": actor,
                "run_id": record.run_id,
                "aliases_after": aliases_after,
                "event_type": record.event_type,
                "seq": record.seq,
                "record_hash": record.record_hash,
            }
        )
    return history


def deployment_status(aliases: list[str], history: list[dict[str, Any]]) -> tuple[str, str]:
    """(status, decision) of a version: its aliases now, and what its history says it went through."""
    events = {e["event"] for e in history}
    if "champion" in aliases:
        return "champion", "promoted (champion)"
    if "previous" in aliases:
        return "previous champion", "promoted, now previous champion"
    if "rolled_back" in aliases:
        return "rolled back", "rolled back"
    if "rolled back" in events:
        return "retired", "rolled back"
    if "promoted" in events:
        return "retired", "promoted, since replaced"
    if "not approved" in events:
        return "rejected at approval", "rejected at approval"
    if "challenger" in aliases:
        return "challenger", "registered, not promoted"
    return "registered", "registered, not promoted"


def approval_section(
    spec: PipelineSpec,
    records: list[LedgerRecord],
    subject: str,
    gated: LedgerRecord | None,
    run_report: LedgerRecord | None,
    promoted: bool,
) -> dict[str, Any]:
    decided = [
        r
        for r in records
        if r.subject == subject and r.event_type in (ModelApproved.name, ModelRejected.name)
    ]
    decision = decided[-1] if decided else None
    evidence_shown = {
        "gates_passed": gated.payload.get("passed") if gated else None,
        "gates": record_ref(gated),
        "run_report": (
            {k: run_report.payload.get(k) for k in ("html", "json")} if run_report is not None else None
        ),
    }
    base = {
        "required_by_spec_now": spec.registry.approval.required,
        "approvers_in_spec_now": list(spec.registry.approval.approvers),
        "evidence": evidence_shown,
    }
    if decision is None:
        note = (
            "no approval step recorded: promoted automatically once every gate passed"
            if promoted
            else "no approval step recorded"
        )
        return {
            **base,
            "decision": "automatic" if promoted else "none recorded",
            "approved": None,
            "approver": None,
            "responded_at": None,
            "recorded_at": None,
            "note": note,
            "ledger": None,
        }
    payload = decision.payload
    approvers = payload.get("approvers") or ([payload["approver"]] if payload.get("approver") else [])
    triggered_by = payload.get("triggered_by")
    return {
        **base,
        "decision": payload.get("outcome"),
        "approved": bool(payload.get("approved")),
        "approver": payload.get("approver"),
        "approvers": approvers,
        "triggered_by": triggered_by,
        # Separation of duties: nobody approved their own run, and enough distinct people answered.
        "separation_held": bool(approvers)
        and triggered_by not in {a.get("id") for a in approvers}
        and len({a.get("id") for a in approvers}) >= spec.registry.approval.min_approvers,
        "responded_at": payload.get("responded_at"),
        "recorded_at": decision.recorded_at,
        "note": None,
        "ledger": record_ref(decision),
    }


def monitoring_for_version(
    records: list[LedgerRecord], subject: str, version: str, window: Window
) -> dict[str, Any]:
    """The monitor DAG's measurements and alerts of this version (newest first)."""
    runs = [
        {
            "run_id": r.run_id,
            "measured_at": r.payload.get("measured_at") or r.recorded_at,
            "breaches": r.payload.get("breaches") or [],
            "same_snapshot": r.payload.get("same_snapshot"),
            "reference_snapshot_id": r.payload.get("reference_snapshot_id"),
            "current_snapshot_id": r.payload.get("current_snapshot_id"),
            "quality": (r.payload.get("quality") or {}).get("status"),
            "retrain_requested": bool(r.payload.get("retrain")),
        }
        for r in records
        if r.event_type == MonitoringMeasured.name and r.subject == subject and window.contains(r.recorded_at)
    ]
    alerts = [
        {"run_id": r.run_id, "at": r.recorded_at, "breaches": r.payload.get("breaches") or []}
        for r in records
        if r.event_type == MonitoringAlerted.name and r.subject == subject and window.contains(r.recorded_at)
    ]
    retrains = [
        {"run_id": r.run_id, "at": r.recorded_at, "triggered_run_id": r.payload.get("triggered_run_id")}
        for r in records
        if r.event_type == RetrainTriggered.name
        and str(r.payload.get("model_version")) == version
        and window.contains(r.recorded_at)
    ]
    runs.reverse()
    return {
        "runs_measured": len(runs),
        "runs": runs[:MONITORING_RUNS_SHOWN],
        "runs_with_breaches": sum(1 for r in runs if r["breaches"]),
        "alerts": list(reversed(alerts)),
        "retrains_triggered": list(reversed(retrains)),
    }


def erasure_section(
    records: list[LedgerRecord], subject: str, open_requests: list[str] | None, error: str | None
) -> dict[str, Any]:
    """Erasure requests that flagged this version, with whether each is still open in the registry."""
    requested = {r.payload.get("request_id"): r for r in records if r.event_type == ErasureRequested.name}
    completed = {r.payload.get("request_id"): r for r in records if r.event_type == ErasureCompleted.name}
    flagged = [r for r in records if r.event_type == ErasureModelFlagged.name and r.subject == subject]
    ids = sorted({str(r.payload.get("request_id")) for r in flagged} | set(open_requests or []))
    out = []
    for request_id in ids:
        flag = next((r for r in flagged if r.payload.get("request_id") == request_id), None)
        done = completed.get(request_id)
        if open_requests is None:
            status = "unknown (registry unavailable)"
        else:
            status = "open" if request_id in open_requests else "resolved"
        out.append(
            {
                "request_id": request_id,
                "requested_at": requested[request_id].recorded_at if request_id in requested else None,
                "flagged_at": flag.recorded_at if flag else None,
                "run_id": flag.run_id if flag else None,
                "rows_removed": done.payload.get("rows_removed") if done else None,
                "snapshots_rewritten": done.payload.get("snapshots_rewritten") if done else None,
                "status": status,
            }
        )
    return {
        "open_requests": sorted(open_requests or []),
        "requests": out,
        "registry_error": error,
        "action": "retrain without the erased data subjects, then retire this version"
        if open_requests
        else None,
    }
