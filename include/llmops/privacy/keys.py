"""Where keys come from: an Airflow connection in production, a local key file by default.

The key-encryption key (KEK) wraps each snapshot's data key; the pseudonymisation key keys the
HMAC that turns identifiers into stable tokens. Neither is ever logged or written to XCom.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)


def _from_connection(conn_id: str) -> bytes | None:
    """The connection's password as a base64 key, or None when no such connection is defined."""
    if not (os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}") or _airflow_has_connection(conn_id)):
        return None
    from llmops.connections import get_connection
    from llmops.privacy.crypto import key_from_b64

    conn = get_connection(conn_id)
    if not conn.password:
        raise ValueError(f"connection '{conn_id}' has no password: put the base64 key there")
    return key_from_b64(conn.password, what=f"connection '{conn_id}' password")


def _airflow_has_connection(conn_id: str) -> bool:
    try:
        from airflow.sdk import BaseHook

        BaseHook.get_connection(conn_id)
        return True
    except Exception:
        return False


def _resolve(conn_id: str, key_file: Path, what: str) -> bytes:
    key = _from_connection(conn_id)
    if key is not None:
        return key
    if os.environ.get("LLMOPS_REQUIRE_KEY_CONNECTIONS", "").lower() in ("1", "true", "yes"):
        raise RuntimeError(
            f"{what}: connection '{conn_id}' is required in this deployment but is not defined"
        )
    from llmops.privacy.crypto import load_or_create_key_file

    return load_or_create_key_file(key_file)


def get_kek() -> bytes:
    from llmops.settings import get_settings

    settings = get_settings()
    return _resolve(settings.kek_conn_id, settings.kek_file, "key-encryption key")


def get_pseudonymisation_key(conn_id: str) -> bytes:
    from llmops.settings import get_settings

    settings = get_settings()
    return _resolve(conn_id, settings.kek_file.parent / "pseudonymisation.key", "pseudonymisation key")
