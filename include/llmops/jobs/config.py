"""Reading a job's config (training or evaluation): one JSON file, a local path or an ``s3://`` URI,
validated by the job's own model with errors that name the file, the field and the problem.

Import-light (pydantic only): DAG code and the orchestrator validate job configs before a job runs.
Reading from object storage imports :mod:`llmops.storage` lazily, only when a URI is given.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from llmops.errors import safe_error_text

if TYPE_CHECKING:
    from collections.abc import Iterable

REMOTE_SCHEMES = ("s3://",)


class ConfigError(ValueError):
    """A job config that cannot be used; the message names the file, the field and the problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"invalid job config {source}:\n" + "\n".join(f"  - {p}" for p in problems))


def _field_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def describe_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem, each starting with the dotted field path (e.g. ``lora.r: ...``)."""
    problems = []
    for error in exc.errors(include_url=False):
        # Drop union/literal branch tags (e.g. "list[str]", "literal['all-linear']") from the path.
        loc = [p for p in error["loc"] if isinstance(p, int) or not any(c in str(p) for c in "[]'")]
        where = _field_path(loc)
        message = str(error.get("ctx", {}).get("error", "")) if error["type"] == "value_error" else ""
        if not loc and _names_a_field(message):
            # A cross-field rule (model validator) phrases its message as "field: problem".
            problems.append(message)
        elif error["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown field (check its spelling or remove it)")
        elif error["type"] == "missing":
            problems.append(f"{where}: required field is missing")
        elif "input" in error and error["type"] != "model_type":
            shown = repr(error["input"])
            if len(shown) > 80:
                shown = shown[:77] + "..."
            problems.append(f"{where}: {error['msg']} (got {shown})")
        else:
            problems.append(f"{where}: {error['msg']}")
    return list(dict.fromkeys(problems))


def _names_a_field(message: str) -> bool:
    head, sep, _ = message.partition(": ")
    return bool(sep) and bool(head) and all(part.isidentifier() for part in head.split("."))


def is_uri(value: str) -> bool:
    """True for ``scheme://...`` values (object storage), False for local paths."""
    return "://" in value


def read_json_config(path: Path | str) -> dict[str, Any]:
    """Read a JSON object from ``path``, raising ConfigError for unreadable or non-object files."""
    if isinstance(path, str) and is_uri(path):
        from llmops import storage  # lazy: fsspec is not needed to parse DAGs

        try:
            text = storage.read_bytes(path).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(path, [f"cannot read file: {safe_error_text(exc)}"]) from None
    else:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(str(path), [f"cannot read file: {exc.strerror or exc}"]) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            str(path), [f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), [f"(top level): expected a JSON object, got {type(raw).__name__}"])
    return raw


def resolve_relative_paths(
    raw: dict[str, Any], base_dir: Path | str, fields: Iterable[str]
) -> dict[str, Any]:
    """Make relative paths absolute against ``base_dir`` (the config file's directory or URI prefix).

    A job directory can then hold its config and data side by side and be launched from any
    working directory; a config read from ``s3://bucket/job/`` resolves ``train.jsonl`` to
    ``s3://bucket/job/train.jsonl``. Values that are already URIs or absolute are left as they are.
    """
    out = dict(raw)
    for name in fields:
        value = out.get(name)
        if not isinstance(value, str) or not value or is_uri(value) or Path(value).is_absolute():
            continue
        if isinstance(base_dir, str) and is_uri(base_dir):
            scheme, _, rest = base_dir.partition("://")
            bucket, _, prefix = rest.partition("/")
            joined = posixpath.normpath(posixpath.join("/", prefix, value)).lstrip("/")
            out[name] = f"{scheme}://{bucket}/{joined}"
        else:
            out[name] = str((Path(base_dir) / value).resolve())
    return out


def config_parent(path: Path | str) -> Path | str:
    """The directory of a local config file, or the prefix of a config URI."""
    if isinstance(path, str) and is_uri(path):
        return path.rsplit("/", 1)[0]
    return Path(path).resolve().parent


def check_location(value: str) -> str:
    if is_uri(value) and not value.startswith(REMOTE_SCHEMES):
        raise ValueError("must be a local path or an s3:// URI")
    if value.startswith(REMOTE_SCHEMES) and not value.split("://", 1)[1].strip("/"):
        raise ValueError("an s3:// URI needs a bucket")
    return value


class StrictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
