"""Privacy controls: PII detection and redaction (``pii``) and envelope encryption (``crypto``).

Only the PII API is re-exported here; it needs nothing beyond the standard library at import time
(pandas is imported inside the functions that take DataFrames). Import ``llmops.privacy.crypto``
explicitly where encryption is needed.
"""

from llmops.privacy.pii import (
    PII_TYPES,
    PrivacyReport,
    Pseudonymiser,
    Span,
    apply_privacy_policy,
    find_residual_pii,
    redact_text,
    scan_many,
    scan_text,
)

__all__ = [
    "PII_TYPES",
    "PrivacyReport",
    "Pseudonymiser",
    "Span",
    "apply_privacy_policy",
    "find_residual_pii",
    "redact_text",
    "scan_many",
    "scan_text",
]
