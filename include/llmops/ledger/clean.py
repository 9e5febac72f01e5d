"""The last filter before a payload is chained: no URL in a ledger record keeps its password.

Why here as well as at the call sites: a record is permanent (it cannot be edited without breaking
the chain), so a tracking URI, a storage URL or an error message that quotes a connection URL must
lose its password before it is hashed, whichever step recorded it. Exception text itself is reduced
at the call sites (:func:`llmops.errors.safe_error_text`): only they know whose message it is.
"""

from __future__ import annotations

from typing import Any

from llmops.errors import without_url_credentials


def clean_payload(value: Any) -> Any:
    """`value` (JSON-shaped) with every string's URL passwords replaced; keys included."""
    if isinstance(value, str):
        return without_url_credentials(value) if "@" in value else value
    if isinstance(value, dict):
        return {clean_payload(k): clean_payload(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_payload(v) for v in value]
    return value
