"""Governance ledger: append-only, hash-chained records in SQL."""

from llmops.ledger.events import record
from llmops.ledger.store import Ledger, LedgerIntegrityError, LedgerRecord, VerifyResult, get_ledger

__all__ = ["Ledger", "LedgerIntegrityError", "LedgerRecord", "VerifyResult", "get_ledger", "record"]
