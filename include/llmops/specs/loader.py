"""Load pipeline specs from YAML with errors that name the file, the field and what was wrong."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmops.errors import PermanentError
from llmops.specs.schema import PipelineSpec
from llmops.specs.sources import SOURCE_KINDS, ensure_plugins


class SpecError(PermanentError, ValueError):
    """A pipeline spec that cannot be used; the message lists every problem found."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"invalid pipeline spec {self.path}:\n" + "\n".join(f"  - {p}" for p in problems))


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(error: dict[str, Any], raw: Any) -> str:
    raw_loc = error["loc"]
    # A tagged union adds the tag (a source kind) after the list index: not a field name.
    loc = tuple(
        part
        for i, part in enumerate(raw_loc)
        if not (part in SOURCE_KINDS and i > 0 and isinstance(raw_loc[i - 1], int))
    )
    where = _field_path(loc)
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field (check its spelling or remove it)"
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    if error["type"] == "value_error" and isinstance(error.get("input"), dict):
        # A cross-field rule of a block names the field itself ("beta: only used by ..."): say
        # where, without dumping the whole block.
        problem = str(error.get("ctx", {}).get("error", message))
        head, sep, rest = problem.partition(": ")
        if sep and head.isidentifier():
            return f"{where}.{head}: {rest}" if loc else problem
        return f"{where}: {problem}"
    if "input" in error and error["type"] not in ("model_type", "union_tag_invalid"):
        shown = repr(error["input"])
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return f"{where}: {message} (got {shown})"
    return f"{where}: {message}"


def parse_spec(raw: Any, path: Path | str = "<spec>") -> PipelineSpec:
    """Validate already-parsed YAML content."""
    if not isinstance(raw, dict):
        raise SpecError(path, [f"(top level): expected a mapping of fields, got {type(raw).__name__}"])
    ensure_plugins()
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(e, raw) for e in exc.errors(include_url=False)]
        raise SpecError(path, problems) from None


def load_spec(path: Path | str) -> PipelineSpec:
    """Read and validate one spec; its `name` must match the file name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(path, [f"cannot read file: {exc.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(path, [f"YAML syntax error at {where}: {problem}"]) from None
    spec = parse_spec(raw, path)
    if spec.name != path.stem:
        raise SpecError(path, [f"name: must match the file name '{path.stem}' (got {spec.name!r})"])
    return spec


def spec_path(name: str, pipelines_dir: Path | None = None) -> Path:
    if pipelines_dir is None:
        from llmops.settings import get_settings

        pipelines_dir = get_settings().pipelines_dir
    return Path(pipelines_dir) / f"{name}.yaml"


def load_pipeline(name: str, pipelines_dir: Path | None = None) -> PipelineSpec:
    return load_spec(spec_path(name, pipelines_dir))


def spec_hash(spec: PipelineSpec) -> str:
    """Stable content hash of the resolved spec, recorded with every artifact it produced."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class UnknownModel(PermanentError, LookupError):
    """No pipeline spec registers a model of that name."""


def pipeline_of_model(model_name: str) -> PipelineSpec:
    """The spec of the pipeline that registers `model_name` (broken specs are passed over)."""
    from llmops.settings import get_settings

    known = []
    for path in sorted(get_settings().pipelines_dir.glob("*.yaml")):
        try:
            spec = load_spec(path)
        except SpecError:
            continue
        if spec.registry.model_name == model_name:
            return spec
        known.append(spec.registry.model_name)
    raise UnknownModel(
        f"no pipeline registers a model named {model_name!r}; known: {', '.join(known) or 'none'}"
    )
