"""Sealed data-subject identifiers: what an erasure request carries instead of the identifier.

Airflow keeps every DAG run's configuration in its metadata database, where whoever may read the
DAG's runs can read it, for as long as the run is kept. An erasure request names the person to
forget, so it must not sit there in the clear. `llmops seal-subject` encrypts the identifier under
the lake's key ring (a fresh data key, AES-256-GCM, wrapped by the KEK or KMS key) into one opaque
string, which is what the trigger form takes; the form refuses anything else before a run exists.
Only a worker holding the key ring can open it. Sealing the same identifier twice gives two
different strings, so a sealed value does not even tell two requests for one person apart.

Module level holds only constants and the standard library: the erasure DAG file imports it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from llmops.errors import PermanentError

PREFIX = "sealed:v1:"
# What the erasure DAG's `subject_id` Param accepts (JSON Schema pattern, checked at trigger time).
PATTERN = r"^sealed:v1:[A-Za-z0-9_-]{40,4096}$"


class SealedSubjectError(PermanentError, ValueError):
    """The value is not a sealed identifier this deployment's keys can open (retrying cannot help)."""


def seal(identifier: str, kek: Any = None) -> str:
    """The identifier encrypted under the key ring, as one URL-safe string."""
    from llmops.privacy.crypto import encrypt_bytes
    from llmops.privacy.keys import get_key_ring

    value = identifier.strip()
    if not value:
        raise SealedSubjectError("the identifier to seal is empty")
    blob, wrapped = encrypt_bytes(value.encode("utf-8"), kek if kek is not None else get_key_ring())
    envelope = {"key": wrapped.to_dict(), "data": base64.b64encode(blob).decode("ascii")}
    packed = base64.urlsafe_b64encode(json.dumps(envelope, separators=(",", ":")).encode()).decode()
    return PREFIX + packed.rstrip("=")


def unseal(token: str, kek: Any = None) -> str:
    """The identifier inside a sealed string; a clear error when it is not one or was altered."""
    from llmops.privacy.crypto import WrappedKey, decrypt_bytes
    from llmops.privacy.keys import get_key_ring

    if not token.startswith(PREFIX):
        raise SealedSubjectError(
            "subject_id must be sealed (run `llmops seal-subject` and paste what it prints): a plain "
            "identifier would stay in Airflow's database"
        )
    packed = token.removeprefix(PREFIX)
    try:
        envelope = json.loads(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
        wrapped = WrappedKey.from_dict(envelope["key"])
        blob = base64.b64decode(envelope["data"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise SealedSubjectError("subject_id is not a sealed identifier (cut short or altered?)") from None
    try:
        return decrypt_bytes(blob, wrapped, kek if kek is not None else get_key_ring()).decode("utf-8")
    except Exception as exc:  # a failed tag or an unknown key: say which, quote nothing
        raise SealedSubjectError(
            f"subject_id cannot be opened with this deployment's keys ({type(exc).__name__}): "
            "altered, or sealed elsewhere"
        ) from None
