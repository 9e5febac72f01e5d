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


#: A spec is a few kilobytes; anything near this is a mistake or an attack on the DAG processor.
MAX_SPEC_BYTES = 256 * 1024


#: Values a spec may hold once its aliases are expanded: a real spec has a few hundred.
MAX_SPEC_VALUES = 50_000


class _SpecYamlLoader(yaml.SafeLoader):
    """Safe YAML that also refuses alias bombs and duplicate keys.

    Aliases are fine (yaml.safe_dump writes them for a repeated block) until they multiply: a few
    kilobytes of nested aliases expand to billions of values, which kept the DAG processor busy for
    minutes. A duplicate key silently keeps the last value, so a reviewer reading the first one
    approves something else.
    """

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        values = _expanded_size(node, {})
        if values > MAX_SPEC_VALUES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"the aliases expand to {values:,} values; a spec may hold at most {MAX_SPEC_VALUES:,}",
                node.start_mark,
            )
        return self.construct_document(node)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # the base class reports an unhashable key
            if key in seen:
                first = seen[key].line + 1
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key '{key}' (first at line {first}): a spec must say each field once",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: Any, sizes: dict[int, int]) -> int:
    """How many values `node` stands for with every alias written out (each shared node counted
    once per reference, computed once)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = min(size, 10**12)  # no need to count past the budget by much
    return sizes[id(node)]


def _read_spec_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(path, [f"file is {size:,} bytes; a spec may be at most {MAX_SPEC_BYTES:,}"])
        return path.read_bytes()
    except OSError as exc:
        raise SpecError(path, [f"cannot read file: {exc.strerror}"]) from None


def _parse_yaml(path: Path, data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(path, [f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}"]) from None
    try:
        return yaml.load(text, Loader=_SpecYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        refused = isinstance(exc, yaml.composer.ComposerError | yaml.constructor.ConstructorError)
        kind = "YAML error" if refused else "YAML syntax error"
        raise SpecError(path, [f"{kind} at {where}: {problem}"]) from None
    except RecursionError:
        raise SpecError(path, ["YAML nesting is too deep"]) from None


def read_spec_yaml(path: Path | str) -> Any:
    """The YAML content of a spec file, or a SpecError naming the file and what is wrong with it."""
    path = Path(path)
    return _parse_yaml(path, _read_spec_bytes(path))


def load_spec(path: Path | str) -> PipelineSpec:
    """Read and validate one spec; its `name` must match the file name.

    A spec file whose exact bytes validated before (with the same llmops code) comes from the
    compiled-spec cache (:mod:`llmops.specs.cache`): no YAML parsing, and the cached JSON is still
    checked and validated by the models, so the result is the same spec.
    """
    from llmops.specs.cache import load_cached, store_cached

    path = Path(path)
    data = _read_spec_bytes(path)
    spec = load_cached(data)
    if spec is not None and spec.name == path.stem:
        return spec
    spec = parse_spec(_parse_yaml(path, data), path)
    if spec.name != path.stem:
        raise SpecError(path, [f"name: must match the file name '{path.stem}' (got {spec.name!r})"])
    store_cached(data, spec)
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
