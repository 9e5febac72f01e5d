"""The ledger's HMAC keys: an Airflow connection in production, a local key file by default.

Resolved like the other llmops keys (:mod:`llmops.privacy.keys`): connection ``llmops_ledger_key``
(``LLMOPS_LEDGER_KEY_CONN_ID``), password = base64 of 32 random bytes; else the key file
``LLMOPS_LEDGER_KEY_FILE`` (default ``$LLMOPS_HOME/keys/ledger.key``, created 0600).
``LLMOPS_REQUIRE_KEY_CONNECTIONS=true`` forbids the file fallback.

Rotation keeps old rows verifiable: every row names the key id it was chained under, new rows use
the primary key, and retired keys only verify. Retired keys live in the connection's extra
(``{"retired_keys": ["<base64>", ...]}``) or, for the key file, in ``ledger-retired/*.key`` next
to it (:func:`rotate_local_key` moves the current file there and creates a new one).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

DEFAULT_CONN_ID = "llmops_ledger_key"
CONN_ID_ENV = "LLMOPS_LEDGER_KEY_CONN_ID"
KEY_FILE_ENV = "LLMOPS_LEDGER_KEY_FILE"
RETIRED_DIR = "ledger-retired"


class LedgerKeyError(RuntimeError):
    """The ledger key cannot be resolved (never names the key's content)."""


def ledger_key_id(key: bytes) -> str:
    """A public name for a key that reveals nothing about it (an HMAC of a constant)."""
    return hmac.new(key, b"llmops ledger key id", hashlib.sha256).hexdigest()[:16]


class LedgerKeys:
    """The primary key (chains and signs new records) and the retired ones (verify only)."""

    def __init__(self, primary: bytes, retired: Iterable[bytes] = ()) -> None:
        if len(primary) < 32:
            raise LedgerKeyError("the ledger key must be at least 32 bytes")
        self.primary_id = ledger_key_id(primary)
        self._keys = {ledger_key_id(k): bytes(k) for k in retired}
        self._keys[self.primary_id] = bytes(primary)

    def __repr__(self) -> str:
        return f"LedgerKeys(primary_id={self.primary_id!r}, ids={sorted(self._keys)!r})"

    @property
    def primary(self) -> bytes:
        return self._keys[self.primary_id]

    @property
    def ids(self) -> list[str]:
        return sorted(self._keys)

    def get(self, key_id: str | None) -> bytes | None:
        return self._keys.get(key_id or "")

    def anchor_key(self, key_id: str | None) -> bytes | None:
        """The key that signs anchors, derived so a record hash can never pass for a signature."""
        key = self.get(key_id)
        return None if key is None else hmac.new(key, b"llmops ledger anchor", hashlib.sha256).digest()


def _from_connection(conn_id: str) -> LedgerKeys | None:
    from llmops.connections import ConnectionConfigError, get_connection
    from llmops.privacy.crypto import key_from_b64

    try:
        conn = get_connection(conn_id)
    except ConnectionConfigError:
        return None
    if not conn.password:
        raise LedgerKeyError(f"connection '{conn_id}' has no password: put the base64 ledger key there")
    what = f"connection '{conn_id}'"
    retired = (getattr(conn, "extra_dejson", None) or {}).get("retired_keys") or []
    return LedgerKeys(
        key_from_b64(conn.password, what=f"{what} password"),
        [key_from_b64(k, what=f"{what} retired key") for k in retired],
    )


def key_file() -> Path:
    from llmops.settings import get_settings

    return Path(os.environ.get(KEY_FILE_ENV) or get_settings().kek_file.parent / "ledger.key")


def _from_file(path: Path) -> LedgerKeys:
    from llmops.privacy.crypto import load_or_create_key_file

    retired_dir = path.parent / RETIRED_DIR
    retired = [load_or_create_key_file(p) for p in sorted(retired_dir.glob("*.key"))]
    return LedgerKeys(load_or_create_key_file(path), retired)


def resolve_ledger_keys() -> LedgerKeys:
    """The connection's keys when it is defined, else the key file's (created on first use)."""
    conn_id = os.environ.get(CONN_ID_ENV, DEFAULT_CONN_ID)
    keys = _from_connection(conn_id)
    if keys is not None:
        return keys
    if os.environ.get("LLMOPS_REQUIRE_KEY_CONNECTIONS", "").lower() in ("1", "true", "yes"):
        raise LedgerKeyError(f"ledger key: connection '{conn_id}' is required in this deployment")
    return _from_file(key_file())


def rotate_local_key(path: Path | None = None) -> str:
    """Retire the key file's key (kept to verify old rows) and create a new primary; its id."""
    from llmops.privacy.crypto import load_or_create_key_file

    path = path or key_file()
    current = load_or_create_key_file(path)
    retired_dir = path.parent / RETIRED_DIR
    retired_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.replace(path, retired_dir / f"{ledger_key_id(current)}.key")
    return ledger_key_id(load_or_create_key_file(path))
