"""Ledger and registry evidence shared by the compliance reports (per run and per model version).

The reports are built only from what this module reads: ledger records and registry metadata,
which hold ids, counts, hashes and metrics, never rows, raw PII or secrets. One belt-and-braces
rule on top: any ``scheme://user:password@`` in a value is redacted before a report is written,
so a tracking or database URL with credentials in it can never reach a report.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmops.errors import REDACTED
from llmops.errors import URL_CREDENTIALS as _URL_CREDENTIALS
from llmops.ledger.events import PiiHandled

if TYPE_CHECKING:
    from llmops.ledger import Ledger, LedgerRecord, VerifyResult


def last(records: list[LedgerRecord], event_type: str) -> LedgerRecord | None:
    """The newest record of one type (records are in ledger order), or None."""
    matches = [r for r in records if r.event_type == event_type]
    return matches[-1] if matches else None


def record_ref(record: LedgerRecord | None) -> dict[str, Any] | None:
    """Where a fact is in the ledger: enough to find the record and check its hash."""
    if record is None:
        return None
    return {"seq": record.seq, "event_type": record.event_type, "record_hash": record.record_hash}


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_time(value: Any) -> datetime | None:
    """An ISO timestamp as an aware UTC datetime (naive ones are read as UTC); None if it is not one."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def ingest_run_records(ledger: Ledger, pipeline: str, curated_snapshot_id: str) -> list[LedgerRecord]:
    """Every record of the ingest run that produced a curated snapshot (found by its `pii.handled`)."""
    handled = ledger.records(
        pipeline=pipeline, subject=f"curated/{curated_snapshot_id}", event_type=PiiHandled.name
    )
    if not handled:
        return []
    return ledger.records(pipeline=pipeline, run_id=handled[-1].run_id)


def encryption_facts(encryption: Any) -> dict[str, Any] | None:
    """Algorithm and key ids of an encrypted snapshot; nothing else (never wrapped or raw keys)."""
    if not isinstance(encryption, dict):
        return None
    return {"algorithm": encryption.get("algorithm"), "kek_ids": list(encryption.get("kek_ids") or [])}


def source_entry(payload: dict[str, Any]) -> dict[str, Any]:
    """One source of a raw snapshot, from its `snapshot.raw.created` payload."""
    return {
        "name": payload["source"],
        "kind": payload["kind"],
        "connection": payload["conn_id"],
        "location": payload["location"],
        "raw_snapshot_id": payload["snapshot_id"],
        "row_count": payload["row_count"],
        "sha256": payload["sha256"],
        "encryption": encryption_facts(payload.get("encryption")),
        "partitions": payload.get("partitions", 1),
        "watermark": payload.get("watermark"),
        "query": payload.get("query"),
        "schema_drift": payload.get("schema_drift"),
        "governance": payload["governance"],
    }


def verification(result: VerifyResult) -> dict[str, Any]:
    """`Ledger.verify()` as report JSON."""
    return {
        "ok": result.ok,
        "records": result.records,
        "head_hash": result.head_hash,
        "problem": result.problem,
        "full": result.full,
        "anchored_seq": result.anchored_seq,
    }


def event_row(record: LedgerRecord, *, actor: bool = False) -> dict[str, Any]:
    """One ledger record as a row of a report's events table (no payload: it is in the sections)."""
    row = {
        "seq": record.seq,
        "recorded_at": record.recorded_at,
        "event_type": record.event_type,
        "subject": record.subject,
        "run_id": record.run_id,
        "record_hash": record.record_hash,
    }
    if actor:
        row["actor"] = record.actor
    return row


def registry_state(model_name: str, version: str) -> dict[str, Any]:
    """The version's registry entry now: aliases, status, MLflow run, `llmops.*` tags.

    A registry that cannot be read gives ``{"registry_error": <error type>}``: reports are still
    written, and say so.
    """
    try:
        from llmops.registry.mlflow_registry import model_version_info

        info = model_version_info(model_name, str(version))
    except Exception as exc:  # the report must still be written when the registry is down
        return {"registry_error": type(exc).__name__}
    return {
        "aliases": sorted(info["aliases"]),
        "status": info["status"],
        "mlflow_run_id": info["run_id"],
        "source": info["source"],
        # The gate table is in the ledger already (in full); the rest of llmops' tags are short.
        "tags": {
            k: v for k, v in sorted(info["tags"].items()) if k.startswith("llmops.") and k != "llmops.gates"
        },
    }


def redact_credentials(value: Any) -> Any:
    """A copy of ``value`` in which every ``scheme://user:password@`` has its password replaced."""
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(lambda m: f"{m.group('head')}:{REDACTED}@", value)
    if isinstance(value, dict):
        return {k: redact_credentials(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_credentials(v) for v in value]
    return value
