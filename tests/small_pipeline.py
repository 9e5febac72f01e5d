"""A small pipeline for tests that run the real ingest and finetune steps without Airflow: one
spec body, the project folders it needs (spec, GX suite, lake, ledger), and a source kind whose
rows are written in the spec itself.

The kind lives here, in the tests, on purpose: that a kind defined outside the package runs
through every step is what tests/unit/test_source_kinds.py proves.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any, Literal

import yaml

from llmops.specs.base import Governance, Identifier, StrictModel
from llmops.specs.sources import SourceKind, register_source_kind, unregister_source_kind

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

    import pyarrow as pa

GOVERNANCE = {"data_owner": "qa@example.com", "purposes": ["testing"], "lawful_basis": "contract"}
# A data subject with three of sixteen tickets (T-00..T-02), for erasure tests.
SUBJECT = "ana@example.com"
SUBJECT_ROWS = [
    {
        "ticket_id": f"T-{i:02d}",
        "customer": SUBJECT if i < 3 else f"c{i}@example.com",
        "body": f"parcel {i} late",
    }
    for i in range(16)
]


def pipeline_spec(name: str, sources: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """A valid spec for `sources` keyed by ticket_id, with e-mails masked in `body`."""
    spec: dict[str, Any] = {
        "name": name,
        "description": f"test pipeline {name}",
        "owner": "qa",
        "purpose": "testing",
        "schedule": None,
        "sources": sources,
        "dataset": {"key": "ticket_id"},
        "validation": {"suite": name, "max_quarantine_fraction": 0.5},
        "privacy": {"free_text": {"columns": ["body"], "types": {"email": "mask"}}},
        "training": {
            "base_model": {"uri": "unused"},
            "prompt_template": "{body}",
            "completion_column": "body",
            # Tiny inline data: held-out shares large enough that every split gets a row.
            "validation_fraction": 0.2,
            "test_fraction": 0.2,
        },
        "gates": [{"metric": "token_f1", "min": 0.1}],
        "registry": {"model_name": name},
    }
    spec.update(overrides)
    return spec


def install(
    root: Path,
    spec: dict[str, Any],
    setenv: Callable[[str, str], None],
    expectations: list[dict[str, Any]] | None = None,
) -> None:
    """Write the spec and its GX suite under `root` and point the settings at `root` (spec folder,
    suite folder, lake, SQLite ledger) through `setenv` (monkeypatch.setenv, or os.environ's)."""
    pipelines, gx = root / "pipelines", root / "gx" / "expectations"
    pipelines.mkdir(parents=True, exist_ok=True)
    gx.mkdir(parents=True, exist_ok=True)
    suite = spec["validation"]["suite"]
    (pipelines / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    (gx / f"{suite}.json").write_text(json.dumps({"name": suite, "expectations": expectations or []}))
    setenv("LLMOPS_PIPELINES_DIR", str(pipelines))
    setenv("LLMOPS_GX_DIR", str(root / "gx"))
    setenv("LLMOPS_LAKE_ROOT", str(root / "lake"))
    setenv("LLMOPS_LEDGER_URL", f"sqlite:///{root / 'ledger.db'}")


# --------------------------------------------------------------------------- a kind defined in tests


class InlineSource(StrictModel):
    """Rows written in the spec itself: a kind small enough to define in a test."""

    kind: Literal["inline"]
    name: Identifier
    rows: list[dict[str, str | None]]
    columns: list[Identifier]
    governance: Governance
    sample: None = None
    contract: None = None

    @property
    def partition_count(self) -> int:
        return 1


class InlineBehaviour:
    def plan(self, spec: Any, source: InlineSource) -> list[dict[str, Any]]:
        return [{"source": source.name, "partition": 0, "partitions": 1}]

    def extract(
        self, source: InlineSource, item: dict[str, Any], key: str, schema: pa.Schema
    ) -> tuple[Iterable[pa.RecordBatch], dict[str, Any]]:
        import pyarrow as pa

        table = pa.Table.from_pylist([{c: row.get(c) for c in source.columns} for row in source.rows], schema)
        return table.to_batches(), {"kind": "inline", "rows_declared": len(source.rows)}

    def location(
        self, source: InlineSource, meta: dict[str, Any] | None = None, url: Any = None
    ) -> tuple[str, str]:
        return "inline://spec", source.name


INLINE = SourceKind("inline", InlineSource, InlineBehaviour())


@contextlib.contextmanager
def inline_kind() -> Iterator[SourceKind]:
    """The inline kind, registered for the duration of the block."""
    register_source_kind(INLINE)
    try:
        yield INLINE
    finally:
        unregister_source_kind("inline")


def inline_source(
    name: str, rows: list[dict[str, str | None]], columns: tuple[str, ...] = ("ticket_id", "body")
) -> dict[str, Any]:
    return {
        "kind": "inline",
        "name": name,
        "rows": rows,
        "columns": list(columns),
        "governance": GOVERNANCE,
    }


def ingest(pipeline: str, run_id: str, *, until: str = "curate") -> dict[str, Any]:
    """Run plan, extract, commit, validate and (by default) curate as the DAG's tasks do."""
    from llmops.orchestration.ingest import curate, extract, validate

    parts = [extract.extract_partition(pipeline, item, run_id) for item in extract.plan(pipeline, run_id)]
    out: dict[str, Any] = {"committed": extract.commit_raw(pipeline, parts, run_id)}
    if until == "commit":
        return out
    out["validated"] = validate.validate(pipeline, out["committed"], run_id)
    if until == "validate":
        return out
    out["curated"] = curate.curate(pipeline, out["validated"], run_id)
    return out
