"""Checks across pipeline specs: what one pipeline claims for itself, no other may claim too.

A spec can be valid on its own and still break another pipeline: two specs registering the same
`registry.model_name` promote over each other's champion (and roll back, deploy and erase each
other's versions); two batch-inference blocks writing the same table overwrite each other's
answers. `llmops validate-specs` reports these for every spec involved, and `llmops new-pipeline`
refuses to write a scaffold that would clash.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from llmops.specs.schema import PipelineSpec

#: Why each claimed field must be unique across the pipelines.
_WHY = {
    "registry.model_name": "each pipeline must register its own model, or one promotes over the other's "
    "champion (model names are compared ignoring case: they are folder names too)",
    "batch_inference.target_table": "each pipeline must write its own table, or one overwrites the other's "
    "answers",
}


def claims(spec: PipelineSpec) -> dict[str, tuple[tuple[str, ...], str]]:
    """What the spec claims for itself, by field: the key compared across specs, and how to show it."""
    found: dict[str, tuple[tuple[str, ...], str]] = {
        "registry.model_name": ((spec.registry.model_name.lower(),), repr(spec.registry.model_name)),
    }
    batch = spec.batch_inference
    if batch is not None:
        # A table is the same table when it is named in the same database: the same connection.
        conn_id = batch.target_conn_id or batch.conn_id
        schema = (batch.target_schema or "").lower()
        table = f"{batch.target_schema}.{batch.target_table}" if batch.target_schema else batch.target_table
        found["batch_inference.target_table"] = (
            (conn_id, schema, batch.target_table.lower()),
            f"{table!r} (connection {conn_id!r})",
        )
    return found


def cross_spec_problems(specs: Mapping[Path, PipelineSpec]) -> dict[Path, list[str]]:
    """For each spec file that claims what another one claims, one problem per clash naming the field
    and the other spec files; specs without a clash are absent."""
    holders: dict[tuple[str, tuple[str, ...]], list[Path]] = defaultdict(list)
    shown: dict[tuple[Path, str], str] = {}
    for path, spec in specs.items():
        for field, (key, display) in claims(spec).items():
            holders[(field, key)].append(path)
            shown[(path, field)] = display
    problems: dict[Path, list[str]] = defaultdict(list)
    for (field, _), paths in holders.items():
        if len(paths) < 2:
            continue
        for path in paths:
            others = ", ".join(str(p) for p in sorted(paths) if p != path)
            problems[path].append(
                f"{field}: {shown[(path, field)]} is also the {field} of {others}: {_WHY[field]}"
            )
    return {path: sorted(found) for path, found in sorted(problems.items())}
