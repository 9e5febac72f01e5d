"""What every extractor shares: the error type, text conversion, and seeded sampling."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from llmops.errors import PermanentError

if TYPE_CHECKING:
    import pyarrow as pa


class SourceError(RuntimeError):
    """A source could not be read; the message names the source and what went wrong, never a value."""


class SchemaDrift(PermanentError, SourceError):
    """A column the spec reads is gone from the source (renamed or dropped): no retry brings it back.

    Names the source and the columns (schema, not data): `missing` and `observed` feed the
    contract result recorded in the ledger.
    """

    def __init__(
        self, message: str, source: str, expected: list[str], observed: list[str], missing: list[str]
    ) -> None:
        super().__init__(message)
        self.source = source
        self.expected = list(expected)
        self.observed = list(observed)
        self.missing = list(missing)

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.source, self.expected, self.observed, self.missing))


UNDECODABLE = "undecodable"  # manifest key: rows whose bytes were not UTF-8, by key, with the columns


def decode_text(value: bytes, column: str, bad_columns: list[str]) -> str:
    """UTF-8 text of raw bytes; undecodable bytes become U+FFFD and the column is noted, so the
    row is quarantined with its reason instead of failing the whole source."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        bad_columns.append(column)
        return value.decode("utf-8", errors="replace")


def as_text(value: Any) -> str | None:
    """The raw zone keeps values as text, exactly as extracted; typing is a normalisation rule."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def decode_binary(columns: dict[str, Any], key: str, undecodable: list[dict[str, Any]]) -> dict[str, Any]:
    """Binary Arrow columns as text. A row whose bytes are not UTF-8 keeps U+FFFD in their place
    and is noted in `undecodable` as ``{"key", "columns"}``, to be quarantined at validation."""
    import pyarrow as pa

    out, bad_rows = {}, {}
    for name, array in columns.items():
        try:
            out[name] = array.cast(pa.string())  # validates UTF-8, in C++
            continue
        except pa.ArrowInvalid:
            pass
        values = []
        for row, value in enumerate(array.to_pylist()):
            bad: list[str] = []
            values.append(None if value is None else decode_text(value, name, bad))
            if bad:
                bad_rows.setdefault(row, []).append(name)
        out[name] = pa.array(values, type=pa.string())
    if bad_rows:
        keys = out[key].to_pylist() if key in out else None
        for row, names in sorted(bad_rows.items()):
            undecodable.append(
                {"key": keys[row] if keys and keys[row] is not None else f"#{row}", "columns": names}
            )
    return out


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
