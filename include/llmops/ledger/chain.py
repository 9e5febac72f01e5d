"""The chain's arithmetic: canonical fields and the keyed record hash, shared by store and anchors.

A record hash is HMAC-SHA256 under the ledger key its row names (``key_id``), over the previous
hash and the canonical fields. Without the key, nobody can recompute a consistent chain: a rewrite
with another key, or with a plain SHA-256, fails at the first row it touches.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmops.ledger.keys import LedgerKeys

GENESIS = "0" * 64

HASHED_FIELDS = (
    "seq",
    "event_id",
    "recorded_at",
    "pipeline",
    "event_type",
    "subject",
    "run_id",
    "actor",
    "key_id",
)


def canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def record_hash(key: bytes, prev_hash: str, fields: dict[str, Any]) -> str:
    """HMAC-SHA256(key, prev_hash + canonical(fields)), hex."""
    return hmac.new(key, (prev_hash + canonical(fields)).encode(), hashlib.sha256).hexdigest()


def link_problem(row: Any, expected_seq: int, prev_hash: str, keys: LedgerKeys) -> str | None:
    """What is wrong with one stored row as the successor of `prev_hash`, or None."""
    seq = getattr(row, "seq", None)
    if seq != expected_seq:
        return f"record seq {expected_seq} is missing (found seq {seq})"
    if row.prev_hash != prev_hash:
        return f"record seq {seq}: chain link broken"
    try:
        payload = json.loads(row.payload)
    except (TypeError, ValueError):
        return f"record seq {seq}: payload is not valid JSON"
    key = keys.get(row.key_id)
    if key is None:
        return f"record seq {seq}: signed with an unknown ledger key id {str(row.key_id)[:32]!r}"
    fields = {k: getattr(row, k) for k in HASHED_FIELDS}
    expected = record_hash(key, prev_hash, {**fields, "payload": payload})
    if not hmac.compare_digest(expected, str(row.record_hash)):
        return f"record seq {seq}: content was altered"
    return None
