"""Where keys come from: an Airflow connection in production, a local key file by default, or AWS KMS.

The key-encryption key (KEK) wraps each snapshot's data key; the pseudonymisation key keys the
HMAC that turns identifiers into stable tokens. Neither is ever logged or written to XCom.

Wrapping a data key is behind a small protocol, :class:`KeyWrapper`, with two implementations:

* :class:`LocalKeyWrapper`: a local 256-bit KEK (connection ``llmops_kek`` or a key file), using
  :mod:`llmops.privacy.crypto`'s AES-GCM key wrap unchanged (``kek_id`` = 16 hex characters).
* :class:`KmsKeyWrapper`: AWS KMS ``Encrypt``/``Decrypt`` of the 32-byte data key, selected by
  ``LLMOPS_KMS_KEY_ID`` (key id, ARN or alias) through the Airflow AWS connection
  ``LLMOPS_KMS_CONN_ID`` (default ``aws_default``). Why KMS: the KEK never leaves the HSM, every
  unwrap is authorised by IAM and audited in CloudTrail, and revoking access is a policy change.
  The record's ``kek_id`` is ``kms:<key ARN>``; an encryption context binds each wrapped key to
  llmops' snapshot data-key purpose, so a ciphertext wrapped for anything else cannot be passed off
  as one of ours (and vice versa).

Both produce a :class:`~llmops.privacy.crypto.WrappedKey`, the sidecar ``*.key.json`` format.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from llmops.privacy.crypto import WrappedKey

log = logging.getLogger(__name__)

KMS_KEY_ID_ENV = "LLMOPS_KMS_KEY_ID"
KMS_CONN_ID_ENV = "LLMOPS_KMS_CONN_ID"
DEFAULT_KMS_CONN_ID = "aws_default"
KMS_KEK_PREFIX = "kms:"
#: Data: chunked AES-256-GCM stream v1 (unchanged); DEK wrap: AWS KMS symmetric Encrypt.
KMS_ALGORITHM = "AES-256-GCM-STREAM-v1+AWS-KMS"
#: Authenticated by KMS (not secret; visible in CloudTrail): what the wrapped bytes are for.
KMS_ENCRYPTION_CONTEXT: dict[str, str] = {
    "llmops:purpose": "snapshot-data-key",
    "llmops:format": "AES-256-GCM-STREAM-v1",
}


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
    """The local KEK (connection ``llmops_kek``, else the key file).

    Still the key for parts wrapped locally, and the input of local key rotation, when
    ``LLMOPS_KMS_KEY_ID`` selects KMS for new parts: see :func:`get_key_wrapper`.
    """
    from llmops.settings import get_settings

    settings = get_settings()
    return _resolve(settings.kek_conn_id, settings.kek_file, "key-encryption key")


def get_pseudonymisation_key(conn_id: str) -> bytes:
    from llmops.settings import get_settings

    settings = get_settings()
    return _resolve(conn_id, settings.kek_file.parent / "pseudonymisation.key", "pseudonymisation key")


# --------------------------------------------------------------------------------------------------
# Key wrappers
# --------------------------------------------------------------------------------------------------


class KeyWrapper(Protocol):
    """Wraps and unwraps 32-byte data keys under one KEK; ``kek_id`` names that KEK publicly."""

    @property
    def kek_id(self) -> str: ...

    def wrap(self, dek: bytes) -> WrappedKey: ...

    def unwrap(self, wrapped: WrappedKey) -> bytes: ...


class LocalKeyWrapper:
    """A local KEK, wrapping exactly as :mod:`llmops.privacy.crypto` does (same sidecar format)."""

    def __init__(self, kek: bytes) -> None:
        from llmops.privacy import crypto

        self._kek = crypto.check_key(kek, "KEK")
        self._kek_id = crypto.key_id(self._kek)

    def __repr__(self) -> str:
        return f"LocalKeyWrapper(kek_id={self._kek_id!r})"

    @property
    def kek_id(self) -> str:
        return self._kek_id

    def wrap(self, dek: bytes) -> WrappedKey:
        from llmops.privacy import crypto

        return crypto.wrap_dek(crypto.check_key(dek, "data key"), self._kek)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        from llmops.privacy import crypto

        if wrapped.kek_id.startswith(KMS_KEK_PREFIX):
            raise crypto.DecryptionError(
                f"data key is wrapped by AWS KMS ({wrapped.kek_id}): a local KEK cannot unwrap it "
                f"(set {KMS_KEY_ID_ENV}, or read through get_key_ring())"
            )
        return crypto.unwrap_dek(wrapped, self._kek)


class KmsKeyWrapper:
    """An AWS KMS symmetric key, reached through an Airflow AWS connection.

    The client is built on first use by the Amazon provider's ``AwsBaseHook``, so credentials, role
    assumption, region and endpoint come from the connection, as for every other AWS call. Wrapping
    and unwrapping need only ``kms:Encrypt`` / ``kms:Decrypt``; ``kek_id`` for a key configured by
    alias or bare id also needs ``kms:DescribeKey``. Records name the key ARN, never the alias: an
    alias can be re-pointed.
    """

    def __init__(self, key_id: str, conn_id: str | None = DEFAULT_KMS_CONN_ID) -> None:
        from llmops.privacy.crypto import KeyMaterialError

        if not isinstance(key_id, str) or not key_id.strip():
            raise KeyMaterialError(f"KMS key id is empty: set {KMS_KEY_ID_ENV} to a key id, ARN or alias")
        self._key_id = key_id.strip()
        self._conn_id = conn_id
        self._client: Any = None
        self._arn: str | None = (
            self._key_id if self._key_id.startswith("arn:") and ":key/" in self._key_id else None
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KmsKeyWrapper(key_id={self._key_id!r}, conn_id={self._conn_id!r})"

    @property
    def client(self) -> Any:
        """The boto3 KMS client from the connection (built once per wrapper)."""
        with self._lock:
            if self._client is None:
                try:
                    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
                except ImportError:  # a job in the trainer image: the pod's own AWS identity
                    import boto3

                    self._client = boto3.client("kms")
                else:
                    self._client = AwsBaseHook(aws_conn_id=self._conn_id, client_type="kms").conn
            return self._client

    def describe(self) -> dict[str, Any]:
        """``DescribeKey``, checked: the key must be an enabled symmetric encrypt/decrypt key.

        A preflight for deployments (fails fast on a typo, a disabled key or a signing key).
        """
        response = _kms_call(
            "DescribeKey", self._key_id, lambda: self.client.describe_key(KeyId=self._key_id)
        )
        meta = response["KeyMetadata"]
        _check_kms_key(meta, self._key_id)
        self._arn = meta["Arn"]
        return meta

    @property
    def key_arn(self) -> str:
        """The key's ARN: as configured when that is an ARN, else from :meth:`describe` (cached)."""
        if self._arn is None:
            self.describe()
        assert self._arn is not None
        return self._arn

    @property
    def kek_id(self) -> str:
        return KMS_KEK_PREFIX + self.key_arn

    def wrap(self, dek: bytes) -> WrappedKey:
        from llmops.privacy.crypto import CryptoError, WrappedKey, check_key

        dek = check_key(dek, "data key")
        response = _kms_call(
            "Encrypt",
            self._key_id,
            lambda: self.client.encrypt(
                KeyId=self._key_id, Plaintext=dek, EncryptionContext=KMS_ENCRYPTION_CONTEXT
            ),
        )
        arn = response.get("KeyId") or ""
        if not arn.startswith("arn:"):
            raise CryptoError(f"KMS Encrypt with key {self._key_id!r} did not return the key ARN")
        self._arn = self._arn or arn
        return WrappedKey(
            kek_id=KMS_KEK_PREFIX + arn,
            algorithm=KMS_ALGORITHM,
            wrapped_dek_b64=base64.b64encode(response["CiphertextBlob"]).decode(),
        )

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        """The data key, if ``wrapped`` was made under this KMS key; otherwise a DecryptionError."""
        from llmops.privacy.crypto import DecryptionError

        arn = _kms_arn_of(wrapped)
        if self._arn is not None and arn != self._arn:  # known without a call: say so precisely
            raise DecryptionError(
                f"wrong key: data key wrapped under {wrapped.kek_id}, this wrapper uses {KMS_KEK_PREFIX}{self._arn}"
            )
        # KeyId pins this wrapper's key (an alias too): KMS refuses a ciphertext of any other key.
        return _kms_decrypt(self.client, wrapped, self._key_id)


def _kms_arn_of(wrapped: WrappedKey) -> str:
    from llmops.privacy.crypto import DecryptionError

    if not wrapped.kek_id.startswith(KMS_KEK_PREFIX) or wrapped.algorithm != KMS_ALGORITHM:
        raise DecryptionError(
            f"data key is not wrapped by KMS (kek_id {wrapped.kek_id!r}, algorithm {wrapped.algorithm!r})"
        )
    arn = wrapped.kek_id[len(KMS_KEK_PREFIX) :]
    if not arn.startswith("arn:") or ":key/" not in arn:
        raise DecryptionError(f"KMS-wrapped data key has a malformed kek_id {wrapped.kek_id!r}")
    return arn


def _kms_decrypt(client: Any, wrapped: WrappedKey, key_id: str) -> bytes:
    from llmops.privacy.crypto import KEY_BYTES, DecryptionError

    try:
        blob = base64.b64decode(wrapped.wrapped_dek_b64, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError("wrapped data key is not valid base64") from None
    response = _kms_call(
        "Decrypt",
        key_id,
        lambda: client.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionContext=KMS_ENCRYPTION_CONTEXT),
    )
    dek = response["Plaintext"]
    if len(dek) != KEY_BYTES:
        raise DecryptionError(f"KMS returned a {len(dek)}-byte plaintext where a data key was expected")
    return dek


def _check_kms_key(meta: dict[str, Any], key_id: str) -> None:
    from llmops.privacy.crypto import KeyMaterialError

    usage, spec = meta.get("KeyUsage"), meta.get("KeySpec") or meta.get("CustomerMasterKeySpec")
    if usage not in (None, "ENCRYPT_DECRYPT") or spec not in (None, "SYMMETRIC_DEFAULT"):
        raise KeyMaterialError(
            f"KMS key {key_id!r} cannot wrap data keys: it needs KeyUsage ENCRYPT_DECRYPT and KeySpec "
            f"SYMMETRIC_DEFAULT (got {usage}, {spec})"
        )
    if meta.get("KeyState") not in (None, "Enabled"):
        raise KeyMaterialError(f"KMS key {key_id!r} is not usable: state {meta.get('KeyState')}")


# KMS error code -> (is it about the wrapped key rather than the KMS key?, explanation)
_KMS_ERRORS: dict[str, tuple[bool, str]] = {
    "InvalidCiphertextException": (
        True,
        "wrapped data key failed authentication (corrupted, or not wrapped by llmops for snapshot data)",
    ),
    "IncorrectKeyException": (True, "wrong key: the data key was wrapped under another KMS key"),
    "AccessDeniedException": (
        True,
        "access denied by IAM or the key policy, or the data key is under another key",
    ),
    "NotFoundException": (False, "KMS key not found (check the id, ARN or alias, and the region)"),
    "DisabledException": (False, "KMS key is disabled"),
    "KMSInvalidStateException": (False, "KMS key is not in a usable state (pending deletion?)"),
    "InvalidKeyUsageException": (False, "KMS key cannot be used to encrypt or decrypt"),
}


@contextlib.contextmanager
def _botocore_quiet() -> Iterator[None]:
    """botocore logs request and response bodies at DEBUG: for KMS those hold plaintext data keys.

    Keep its loggers at INFO or above for the duration of a KMS call, whatever the task's level.
    """
    names = ("botocore", "botocore.endpoint", "botocore.parsers", "botocore.hooks", "botocore.auth")
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _kms_call(operation: str, key: str, call: Callable[[], Any]) -> Any:
    """Run one KMS call, turning AWS errors into crypto's errors; messages name the key, never data."""
    from botocore.exceptions import ClientError

    from llmops.privacy.crypto import CryptoError, DecryptionError, KeyMaterialError

    try:
        with _botocore_quiet():
            return call()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        about_data, why = _KMS_ERRORS.get(code, (False, f"KMS error {code}"))
        if code not in _KMS_ERRORS:
            cls: type[CryptoError] = CryptoError
        else:
            cls = DecryptionError if about_data and operation == "Decrypt" else KeyMaterialError
        raise cls(f"KMS {operation} with key {key!r} failed: {why} [{code}]") from None


def kms_wrap_dek(dek: bytes, key_id: str, conn_id: str | None = DEFAULT_KMS_CONN_ID) -> WrappedKey:
    """Wrap one 32-byte data key with a KMS key; the result's ``kek_id`` is ``kms:<key ARN>``."""
    return KmsKeyWrapper(key_id, conn_id).wrap(dek)


def kms_unwrap_dek(wrapped: WrappedKey, conn_id: str | None = DEFAULT_KMS_CONN_ID) -> bytes:
    """Unwrap a KMS-wrapped data key under the key its record names (KMS enforces that key)."""
    return KmsKeyWrapper(_kms_arn_of(wrapped), conn_id).unwrap(wrapped)


def kms_settings() -> tuple[str, str] | None:
    """(key id, AWS connection id) when ``LLMOPS_KMS_KEY_ID`` selects KMS, else None."""
    key = os.environ.get(KMS_KEY_ID_ENV, "").strip()
    if not key:
        return None
    return key, os.environ.get(KMS_CONN_ID_ENV, "").strip() or DEFAULT_KMS_CONN_ID


def get_key_wrapper() -> KeyWrapper:
    """The wrapper for new data keys: KMS when ``LLMOPS_KMS_KEY_ID`` is set, else the local KEK."""
    selected = kms_settings()
    if selected is not None:
        return KmsKeyWrapper(*selected)
    return LocalKeyWrapper(get_kek())


class KeyRing:
    """Unwraps a data key by the KEK its record names: KMS records through KMS, others locally.

    Why: a lake that moved to KMS still holds parts wrapped under the local KEK, and a reader must
    not need to know which is which. The local KEK is resolved (:func:`get_kek`) only when a local
    record is met, so a KMS-only deployment never creates a key file. ``wrap`` uses the primary.
    """

    def __init__(
        self,
        primary: KeyWrapper,
        *,
        kms_conn_id: str | None = DEFAULT_KMS_CONN_ID,
        local_kek: bytes | None = None,
        resolve_local: Callable[[], bytes] | None = None,
    ) -> None:
        self.primary = primary
        self._kms_conn_id = kms_conn_id
        self._resolve_local = resolve_local or get_kek
        self._local = primary if isinstance(primary, LocalKeyWrapper) else None
        if local_kek is not None:
            self._local = LocalKeyWrapper(local_kek)
        self._kms = primary if isinstance(primary, KmsKeyWrapper) else None

    def __repr__(self) -> str:
        return f"KeyRing(primary={self.primary!r})"

    @property
    def kek_id(self) -> str:
        return self.primary.kek_id

    def wrap(self, dek: bytes) -> WrappedKey:
        return self.primary.wrap(dek)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        if wrapped.kek_id.startswith(KMS_KEK_PREFIX):
            if self._kms is None:
                self._kms = KmsKeyWrapper(_kms_arn_of(wrapped), self._kms_conn_id)
            # Decrypt under the key the record names, through this ring's connection.
            return _kms_decrypt(self._kms.client, wrapped, _kms_arn_of(wrapped))
        if self._local is None:
            self._local = LocalKeyWrapper(self._resolve_local())
        return self._local.unwrap(wrapped)


def get_key_ring() -> KeyRing:
    """A :class:`KeyRing` whose primary is :func:`get_key_wrapper` (for readers of mixed lakes)."""
    selected = kms_settings()
    if selected is not None:
        return KeyRing(KmsKeyWrapper(*selected), kms_conn_id=selected[1])
    return KeyRing(LocalKeyWrapper(get_kek()))


# --------------------------------------------------------------------------------------------------
# Keys inside a job
# --------------------------------------------------------------------------------------------------

#: A job's local KEK, base64: set from a Kubernetes secret in a pod, or by the local launcher when
#: the orchestrator's key comes from a connection only Airflow can read. Never in a job config.
JOB_KEK_ENV = "LLMOPS_KEK"


def _connection_env_password(conn_id: str) -> str | None:
    """The password of an ``AIRFLOW_CONN_<ID>`` variable (URI or JSON form), read without Airflow."""
    import json
    from urllib.parse import unquote, urlsplit

    value = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}", "").strip()
    if not value:
        return None
    if value.startswith("{"):
        try:
            password = json.loads(value).get("password")
        except (ValueError, AttributeError):
            return None
        return password if isinstance(password, str) else None
    password = urlsplit(value).password
    return unquote(password) if password else None


def _job_local_kek() -> bytes | None:
    """The local KEK as a job finds it: ``LLMOPS_KEK``, else the ``llmops_kek`` connection's env
    variable, else an existing key file. A job never creates a key: a new one could decrypt nothing."""
    from llmops.privacy.crypto import key_from_b64, load_or_create_key_file
    from llmops.settings import get_settings

    settings = get_settings()
    if os.environ.get(JOB_KEK_ENV, "").strip():
        return key_from_b64(os.environ[JOB_KEK_ENV], what=JOB_KEK_ENV)
    password = _connection_env_password(settings.kek_conn_id)
    if password:
        return key_from_b64(password, what=f"connection '{settings.kek_conn_id}' password")
    if settings.kek_file.is_file():
        return load_or_create_key_file(settings.kek_file)  # exists: read, with the permission checks
    return None


def _no_local_kek() -> bytes:
    from llmops.privacy.crypto import KeyMaterialError

    raise KeyMaterialError(
        f"this job's input is wrapped under a local KEK, and the job has none: set {JOB_KEK_ENV} "
        "(Kubernetes: training.kubernetes.kek_secret), the llmops_kek connection's AIRFLOW_CONN_ "
        "variable, or LLMOPS_KEK_FILE to an existing key file"
    )


def job_key_ring() -> KeyRing:
    """The key ring of a training or evaluation job, which may run without Airflow (the trainer
    image has none): KMS when ``LLMOPS_KMS_KEY_ID`` is set (the process's AWS identity), and the
    local KEK from :func:`_job_local_kek`, resolved the first time a local record is met."""
    local = _job_local_kek()
    selected = kms_settings()
    if selected is not None:
        return KeyRing(
            KmsKeyWrapper(*selected), kms_conn_id=selected[1], local_kek=local, resolve_local=_no_local_kek
        )
    return KeyRing(LocalKeyWrapper(local if local is not None else _no_local_kek()))


def local_job_key_env() -> dict[str, str]:
    """What a local job's environment needs beyond what it inherits to find the KEK the way the
    orchestrator does: nothing when that is a key file, an ``AIRFLOW_CONN_`` variable or KMS;
    ``LLMOPS_KEK`` when the key comes from a connection only Airflow can read (a secrets backend,
    the metadata database). A subprocess's environment is never written anywhere; never give this
    to a pod (pods get :data:`JOB_KEK_ENV` from a Kubernetes secret)."""
    from llmops.settings import get_settings

    conn_id = get_settings().kek_conn_id
    if kms_settings() is not None or os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}"):
        return {}
    key = _from_connection(conn_id)
    return {} if key is None else {JOB_KEK_ENV: base64.b64encode(key).decode()}
