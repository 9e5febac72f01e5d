"""Ingest steps before validation: plan the partitions, extract each one, commit raw snapshots.

Rows of subjects on the pipeline's erasure suppression list are dropped as they are extracted, so
they reach no staged part and no raw snapshot; the raw manifest counts them (`rows_suppressed`).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from llmops import snapshots
from llmops.governance.suppression import ROWS_SUPPRESSED, Suppression
from llmops.ledger import record
from llmops.ledger.events import ContractViolated, IngestPlanned, RawSnapshotCreated
from llmops.settings import get_settings
from llmops.specs.pinned import pin_spec, run_spec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)


@contextmanager
def _drift_recorded(spec: PipelineSpec, run_id: str, item: dict[str, Any] | None = None) -> Iterator[None]:
    """Record a source's schema drift as a broken contract before the task fails on it (no retry)."""
    from llmops.ingest.common import SchemaDrift
    from llmops.quality.contracts import check_contract

    try:
        yield
    except SchemaDrift as drift:
        result = check_contract(drift.source, drift.expected, drift.observed)
        # Case-insensitive matches are not drift: the extractor's list of missing columns decides.
        result = type(result)(drift.source, drift.expected, drift.observed, drift.missing, result.unexpected)
        inputs = [{"source": drift.source, **({"partition": item["partition"]} if item else {})}]
        record(
            spec,
            ContractViolated(inputs=inputs, contracts=[result.to_dict()], violations=result.violations),
            "contract",
            run_id,
        )
        raise


def raw_asset_uri(pipeline: str, source: str) -> str:
    return f"llmops://{pipeline}/raw/{source}"


def plan(pipeline: str, run_id: str) -> list[dict[str, Any]]:
    """What this run extracts: one item per source partition, with fixed watermark ranges and bounds."""
    from llmops.ingest.kinds import behaviour_of
    from llmops.specs.checks import check_ingest

    spec = pin_spec(pipeline, run_id)
    check_ingest(spec)
    items: list[dict[str, Any]] = []
    with _drift_recorded(spec, run_id):
        for source in spec.sources:
            items.extend(behaviour_of(source).plan(spec, source))
    record(
        spec,
        IngestPlanned(
            items=len(items),
            sources={
                s.name: {
                    "partitions": sum(1 for i in items if i["source"] == s.name),
                    "watermark": next((i.get("watermark") for i in items if i["source"] == s.name), None),
                }
                for s in spec.sources
            },
        ),
        "plan",
        run_id,
    )
    return items


def _note_suppressed(meta: dict[str, Any], suppression: Suppression) -> None:
    """Count the rows left out for erased subjects; drop the extractor's notes about those rows."""
    from llmops.ingest.common import UNDECODABLE

    meta[ROWS_SUPPRESSED] = suppression.rows_suppressed
    noted = meta.get(UNDECODABLE)
    if noted:
        noted[:] = [n for n in noted if str(n.get("key")) not in suppression.keys_dropped]


def extract_partition(pipeline: str, item: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Extract one planned item into a staged, encrypted part; return its description."""
    import pyarrow as pa

    from llmops.ingest.kinds import behaviour_of
    from llmops.privacy.keys import get_key_ring

    spec = run_spec(pipeline, run_id)
    source = spec.source(item["source"])
    key = spec.dataset.key
    schema = pa.schema([(c, pa.string()) for c in source.columns])
    suppression = Suppression.load(spec)
    with _drift_recorded(spec, run_id, item):
        batches, meta = behaviour_of(source).extract(source, item, key, schema)
        if suppression is not None:  # erased subjects' rows are never staged
            batches = suppression.stream(batches)
        part = snapshots.stage_part(
            lake_root=get_settings().lake_root,
            pipeline=spec.name,
            dataset=source.name,
            run_id=run_id,
            part=item["partition"],
            batches=batches,
            schema=schema,
            kek=get_key_ring(),
        )
    if suppression is not None:
        _note_suppressed(meta, suppression)
    from llmops import lineage

    lineage.emit_extract(spec, source, meta)  # OpenLineage; never raises
    return {**part, "source": source.name, "item": item, "source_meta": meta}


def commit_raw(
    pipeline: str, parts: list[dict[str, Any]], run_id: str, sources: list[str] | None = None
) -> list[dict[str, Any]]:
    """Commit each source's staged parts as one immutable raw snapshot (all sources unless named)."""
    from llmops.ingest.common import UNDECODABLE

    spec = run_spec(pipeline, run_id)
    settings = get_settings()
    out = []
    for source in spec.sources:
        if sources is not None and source.name not in sources:
            continue
        mine = sorted((p for p in parts if p["source"] == source.name), key=lambda p: p["part"])
        if len(mine) != source.partition_count:
            raise RuntimeError(
                f"source '{source.name}': {len(mine)} of {source.partition_count} partitions were extracted"
            )
        item = mine[0]["item"]
        meta = {
            **mine[0]["source_meta"],
            "partitions": len(mine),
            "partitioning": source.partitioning.model_dump()
            if getattr(source, "partitioning", None)
            else None,
            "watermark": item.get("watermark"),
            "sample": item.get("sample"),
        }
        meta["row_count"] = sum(p["rows"] for p in mine)  # what was committed, after any sampling
        if any(ROWS_SUPPRESSED in p["source_meta"] for p in mine):
            meta[ROWS_SUPPRESSED] = sum(p["source_meta"].get(ROWS_SUPPRESSED, 0) for p in mine)
        if any(UNDECODABLE in p["source_meta"] for p in mine):  # every partition's, for validation
            meta[UNDECODABLE] = [u for p in mine for u in p["source_meta"].get(UNDECODABLE) or []]
        ref, manifest = snapshots.commit_parts(
            lake_root=settings.lake_root,
            zone="raw",
            pipeline=spec.name,
            dataset=source.name,
            parts=mine,
            metadata={"source": meta, "governance": source.governance.model_dump()},
            run_id=run_id,
            identity={"watermark": item.get("watermark"), "sample": item.get("sample")},
        )
        record(
            spec,
            RawSnapshotCreated(
                source=source.name,
                kind=source.kind,
                conn_id=getattr(source, "conn_id", None),
                location=meta.get("table") or meta.get("url") or meta.get("uri") or "query",
                query=meta.get("query"),
                snapshot_id=ref.snapshot_id,
                uri=ref.uri,
                row_count=manifest["row_count"],
                files=[{k: f[k] for k in ("name", "rows", "sha256")} for f in manifest["files"]],
                sha256=manifest["content_sha256"],
                encryption=manifest["encryption"],
                watermark=item.get("watermark"),
                partitions=len(mine),
                schema_drift=meta.get("schema_drift"),
                governance=manifest["governance"],
            ),
            f"raw/{source.name}/{ref.snapshot_id}",
            run_id,
        )
        out.append(
            {
                "source": source.name,
                "snapshot_id": ref.snapshot_id,
                "row_count": manifest["row_count"],
                "watermark": item.get("watermark"),
            }
        )
    from llmops import lineage

    lineage.emit_commit(spec, out)  # OpenLineage: sources -> raw snapshots; never raises
    return out
