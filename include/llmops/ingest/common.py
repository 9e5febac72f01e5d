"""What every extractor shares: the error type, text conversion, and seeded sampling."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


class SourceError(RuntimeError):
    """A source could not be read; the message names the source and what went wrong."""


def as_text(value: Any) -> str | None:
    """The raw zone keeps values as text, exactly as extracted; typing is a normalisation rule."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def sample_mask(keys: list[str | None], fraction: float, seed: int) -> list[bool]:
    """Keep a row when a seeded hash of its key falls under `fraction`: the same rows every run."""
    threshold = int(fraction * 2**64)
    out = []
    for key in keys:
        digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(digest, "big") < threshold)
    return out


def sample_batch(batch: pa.RecordBatch, key: str, fraction: float | None, seed: int) -> pa.RecordBatch:
    import pyarrow as pa

    if fraction is None or fraction >= 1:
        return batch
    mask = sample_mask(batch.column(key).to_pylist(), fraction, seed)
    return batch.filter(pa.array(mask, type=pa.bool_()))
