"""Validate OpenLineage events against the JSON schemas in ``schemas/`` (offline).

``schemas/`` holds the OpenLineage core spec 2-0-2 (the version openlineage-python 1.54.0 emits),
the standard facets llmops builds whose structure matters to audits (schema, data-quality
assertions, column lineage), and the llmops custom facets. An event is checked against the core
spec; then every facet whose ``_schemaURL`` names a document held here is checked against it.
Facets of other producers (the provider's ``airflow`` facets, say) are checked by the core spec
only. A facet that claims an llmops schema this module does not know is an error.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
CORE_SCHEMA_ID = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
LLMOPS_SCHEMA_PREFIX = "https://llmops.example/openlineage/"


@functools.cache
def schema_documents() -> dict[str, dict[str, Any]]:
    """Every schema held here, by its ``$id``."""
    docs = {}
    for path in sorted(SCHEMAS_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        docs[doc["$id"]] = doc
    return docs


@functools.cache
def _registry() -> Any:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    return Registry().with_resources(
        (uri, Resource.from_contents(doc, default_specification=DRAFT202012))
        for uri, doc in schema_documents().items()
    )


def _format_checker() -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker(formats=list(Draft202012Validator.FORMAT_CHECKER.checkers))
    checker.checks("uri")(lambda value: not isinstance(value, str) or bool(urlsplit(value).scheme))
    return checker


@functools.cache
def _validator(ref: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator({"$ref": ref}, registry=_registry(), format_checker=_format_checker())


def _facets(event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    out += [(f"run.facets.{k}", v) for k, v in ((event.get("run") or {}).get("facets") or {}).items()]
    out += [(f"job.facets.{k}", v) for k, v in ((event.get("job") or {}).get("facets") or {}).items()]
    for side in ("inputs", "outputs"):
        for i, dataset in enumerate(event.get(side) or []):
            for group in ("facets", "inputFacets", "outputFacets"):
                out += [(f"{side}[{i}].{group}.{k}", v) for k, v in (dataset.get(group) or {}).items()]
    return out


def event_errors(event: dict[str, Any]) -> list[str]:
    """Every schema violation in one event (as JSON): the core spec, then each facet it can check."""
    # A run event is held to RunEvent itself (the root's oneOf would only say "not valid under any").
    kind = str(event.get("schemaURL") or "").partition("#")[2]
    root = (
        f"{CORE_SCHEMA_ID}#{kind}"
        if kind in ("/$defs/RunEvent", "/$defs/DatasetEvent", "/$defs/JobEvent")
        else ""
    )
    if not root:
        root = f"{CORE_SCHEMA_ID}#/$defs/RunEvent" if "run" in event else CORE_SCHEMA_ID
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<event>'}: {e.message}"
        for e in _validator(root).iter_errors(event)
    ]
    known = schema_documents()
    for where, facet in _facets(event):
        url = facet.get("_schemaURL") if isinstance(facet, dict) else None
        if not isinstance(url, str):
            continue  # the core spec already reported it
        document = url.partition("#")[0]
        if document not in known:
            if url.startswith(LLMOPS_SCHEMA_PREFIX):
                errors.append(f"{where}: unknown llmops facet schema {url}")
            continue
        errors += [
            f"{where}/{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in _validator(url).iter_errors(facet)
        ]
    return errors


def validated_facet_schemas() -> list[str]:
    """The facet schemas (``$id``) this module checks facets against."""
    return sorted(uri for uri in schema_documents() if uri != CORE_SCHEMA_ID)
