"""What the evidence of a model version's report says an auditor or user should keep in mind:
derived from the report itself, never boilerplate (except the one line on how toxicity is measured,
which is always true)."""

from __future__ import annotations

from typing import Any

from llmops.reports.version_data import IN_LAKE, KEPT

NOT_CONSULTED = "not consulted"
SMALL_EVAL_SET = 100  # fewer generated samples than this: say so among the limitations


def _evaluation(report: dict[str, Any]) -> list[str]:
    out = []
    evaluation = report["evaluation"]
    n = evaluation.get("n_samples")
    if n is not None and n < SMALL_EVAL_SET:
        out.append(
            f"Generation metrics (token F1, exact match, ROUGE-L, the probes) come from {n} held-out samples of "
            "the same curated data as the training set: they do not show performance on other sources, periods "
            "or languages."
        )
    if not evaluation.get("golden"):
        out.append(
            "No golden (curated reference) set was evaluated: quality is measured on the held-out split only."
        )
    gates = evaluation.get("gates") or {}
    if gates and gates.get("champion_unavailable") and gates.get("on_champion_unavailable") == "pass":
        out.append(
            f"The champion could not be scored ({gates['champion_unavailable']}); its comparison gates "
            "passed because the spec says on_champion_unavailable: pass."
        )
    elif gates and not gates.get("champion_compared"):
        out.append(
            f"Not compared with a champion on the same data ({evaluation.get('champion_note') or 'none'})."
        )
    if not evaluation["probes"]["pii_leakage"].get("canaries"):
        out.append(
            "The PII leakage probe used prompts cut where personal data stood in training records; no "
            "canaries were planted (privacy.canaries), so memorisation of training text was not measured."
        )
    out.append(
        "Toxicity is the share of answers containing a blocked term from the spec, and refusal the share "
        "containing a refusal phrase: word lists, not a trained classifier or human review."
    )
    return out


def _validation(report: dict[str, Any]) -> list[str]:
    out = []
    for check in report["data"]["validation"]:
        if check.get("rows_quarantined"):
            reasons = ", ".join(f"{r['reason']} ({r['rows']})" for r in check["quarantine_reasons"][:5])
            out.append(
                f"{check['rows_quarantined']} of {check['rows_after_normalisation']} rows were quarantined in "
                f"ingest run {check['ingest_run_id']} and not trained on: {reasons}."
            )
        drifted = [
            c["source"]
            for c in check.get("contracts") or []
            if (c.get("field_drift") or {}).get("unexpected_fields")
            or (c.get("field_drift") or {}).get("missing_fields")
        ]
        if drifted:
            out.append(f"Schema drift (fields added or missing) was seen in: {', '.join(drifted)}.")
    return out


def _training(report: dict[str, Any]) -> list[str]:
    out = []
    hpo = report["hpo"]
    failed = [t for t in hpo["trials"] if t.get("state") == "failed"] if hpo else []
    if failed:
        out.append(f"{len(failed)} of {len(hpo['trials'])} search trials failed.")
    training = report["training"] or {}
    if training.get("max_steps"):
        out.append(f"Training was capped at max_steps={training['max_steps']} by a run Param.")
    if training.get("spec_changed_since"):
        out.append("The pipeline spec changed after this version was trained: the spec shown is today's.")
    return out


def _data_lifecycle(report: dict[str, Any]) -> list[str]:
    out = []
    gone = [s for s in report["data"]["snapshots"] if s["state"] not in (IN_LAKE, KEPT)]
    if gone:
        out.append(
            f"{len(gone)} snapshot(s) of this version's lineage were since deleted or rewritten (see Snapshots): "
            "the exact training data can no longer be re-read from the lake; the hashes stay as evidence."
        )
    if report["erasure"]["open_requests"]:
        out.append(
            f"Open erasure request(s) {', '.join(report['erasure']['open_requests'])}: this version was trained "
            "on data of a subject who asked to be erased; retrain and retire it."
        )
    unknown = [r["request_id"] for r in report["erasure"]["requests"] if r["status"].startswith("unknown")]
    if unknown:
        out.append(
            f"Erasure request(s) {', '.join(unknown)} flagged this version; whether they are still open could "
            "not be read from the registry."
        )
    return out


def _registry(report: dict[str, Any]) -> list[str]:
    error = report["registry"].get("registry_error")
    if error == NOT_CONSULTED:
        return ["The MLflow registry was not consulted for this report: aliases come from the ledger."]
    if error:
        return [f"The MLflow registry could not be read ({error}): aliases come from the ledger."]
    if report["registry"].get("matches_ledger") is False:
        return [
            "The registry's aliases differ from what the ledger recorded: an alias was moved outside the pipeline."
        ]
    return []


def _lineage_and_ledger(report: dict[str, Any]) -> list[str]:
    out = []
    lineage = report["lineage"]
    if not lineage["openlineage"]["configured"]:
        out.append(
            "OpenLineage events were not read (no file transport configured): the lineage is the ledger's alone."
        )
    elif lineage.get("edges_checked") and lineage["edges_confirmed"] < lineage["edges_checked"]:
        out.append(
            f"{lineage['edges_checked'] - lineage['edges_confirmed']} lineage edge(s) known to the ledger were not "
            "reported by OpenLineage."
        )
    if not report["ledger"]["verification"]["ok"]:
        out.append(f"The governance ledger does NOT verify: {report['ledger']['verification']['problem']}.")
    return out


def limitations(report: dict[str, Any]) -> list[str]:
    """What the evidence itself says an auditor or user should keep in mind (derived, not boilerplate)."""
    return [
        *_evaluation(report),
        *_validation(report),
        *_training(report),
        *_data_lifecycle(report),
        *_registry(report),
        *_lineage_and_ledger(report),
    ]
