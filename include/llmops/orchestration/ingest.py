"""Ingestion steps: plan, extract (per partition), commit, validate, curate.

Each function is the body of one task of the `<pipeline>__ingest` DAG. Rows only travel through
the lake (encrypted where they hold raw data); XCom carries plans, ids, hashes and counts.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.errors import PermanentError
from llmops.ledger import get_ledger
from llmops.orchestration.common import record
from llmops.settings import get_settings
from llmops.specs import load_pipeline

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)

SOURCE_COLUMN = "_source"
SOURCE_ROW = "_source_row"
QUARANTINE_REASON = "_quarantine_reason"
CURATED_DATASET = "records"
PII_TYPES = ("email", "phone", "payment_card", "iban", "us_ssn", "ip_address", "person_name")


class QuarantineLimitExceeded(PermanentError, RuntimeError):
    """More rows failed validation than the spec tolerates; the source is probably broken."""


class PiiResidualFound(PermanentError, RuntimeError):
    """PII of a handled type is still detectable after the privacy policy ran."""


def _source(spec: PipelineSpec, name: str) -> Any:
    for source in spec.sources:
        if source.name == name:
            return source
    raise ValueError(f"pipeline '{spec.name}' has no source '{name}'")


def raw_asset_uri(pipeline: str, source: str) -> str:
    return f"llmops://{pipeline}/raw/{source}"


# ------------------------------------------------------------------------------------------ plan


def plan(pipeline: str, run_id: str) -> list[dict[str, Any]]:
    """What this run extracts: one item per source partition, with fixed watermark ranges and bounds."""
    from llmops.ingest.sql import plan_sql
    from llmops.ingest.state import get_watermark

    spec = load_pipeline(pipeline)
    items: list[dict[str, Any]] = []
    for source in spec.sources:
        if source.kind == "sql":
            low = get_watermark(spec.name, source.name) if source.incremental else None
            items.extend(plan_sql(source, spec.dataset.key, low))
        else:
            sample = source.sample.model_dump() if source.sample else None
            items.append({"source": source.name, "partition": 0, "partitions": 1, "sample": sample})
    record(
        spec,
        "ingest.planned",
        "plan",
        run_id,
        {
            "items": len(items),
            "sources": {
                s.name: {
                    "partitions": sum(1 for i in items if i["source"] == s.name),
                    "watermark": next((i.get("watermark") for i in items if i["source"] == s.name), None),
                }
                for s in spec.sources
            },
        },
    )
    return items


# --------------------------------------------------------------------------------------- extract


def _table_sample(table: pa.Table, key: str, sample: dict[str, Any] | None) -> pa.Table:
    import pyarrow as pa

    from llmops.ingest.common import sample_batch

    if not sample:
        return table
    fraction = sample.get("fraction")
    if fraction is None and sample.get("rows"):
        fraction = min(1.0, sample["rows"] / table.num_rows) if table.num_rows else 1.0
    batches = [sample_batch(b, key, fraction, sample.get("seed", 0)) for b in table.to_batches()]
    return pa.Table.from_batches(batches, schema=table.schema)


def extract_partition(pipeline: str, item: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Extract one planned item into a staged, encrypted part; return its description."""
    import pyarrow as pa

    from llmops.privacy.keys import get_key_ring

    spec = load_pipeline(pipeline)
    source = _source(spec, item["source"])
    key = spec.dataset.key
    schema = pa.schema([(c, pa.string()) for c in source.columns])
    meta: dict[str, Any]
    if source.kind == "sql":
        from llmops.ingest.sql import describe_query, iter_sql_batches, sa_dialect, source_url

        url = source_url(source)
        batches: Any = iter_sql_batches(source, item, key, url)
        meta = {
            "kind": "sql",
            "dialect": sa_dialect(url),
            "table": source.table,
            "query": describe_query(source, item, key, url),
            "columns": list(source.columns),
        }
    else:
        if source.kind == "rest":
            from llmops.ingest.rest import extract_rest

            table, meta = extract_rest(source, order_by=key)
        else:
            from llmops.ingest.files import extract_files

            table, meta = extract_files(source, order_by=key)
        table = _table_sample(table, key, item.get("sample"))
        batches = table.cast(schema).to_batches()
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
    from llmops import lineage

    lineage.emit_extract(spec, source, meta)  # OpenLineage; never raises
    return {**part, "source": source.name, "item": item, "source_meta": meta}


def commit_raw(
    pipeline: str, parts: list[dict[str, Any]], run_id: str, sources: list[str] | None = None
) -> list[dict[str, Any]]:
    """Commit each source's staged parts as one immutable raw snapshot (all sources unless named)."""
    spec = load_pipeline(pipeline)
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
        if source.kind == "rest" or source.kind == "files":
            meta["row_count"] = sum(p["rows"] for p in mine)
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
            "snapshot.raw.created",
            f"raw/{source.name}/{ref.snapshot_id}",
            run_id,
            {
                "source": source.name,
                "kind": source.kind,
                "conn_id": source.conn_id,
                "location": meta.get("table") or meta.get("url") or meta.get("uri") or "query",
                "query": meta.get("query"),
                "snapshot_id": ref.snapshot_id,
                "uri": ref.uri,
                "row_count": manifest["row_count"],
                "files": [{k: f[k] for k in ("name", "rows", "sha256")} for f in manifest["files"]],
                "sha256": manifest["content_sha256"],
                "encryption": manifest["encryption"],
                "watermark": item.get("watermark"),
                "partitions": len(mine),
                "schema_drift": meta.get("schema_drift"),
                "governance": manifest["governance"],
            },
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


# -------------------------------------------------------------------------------------- validate


def _normalise(df: pd.DataFrame, spec: PipelineSpec) -> tuple[pd.DataFrame, dict[str, Any]]:
    rules = spec.dataset.normalization
    counts: dict[str, Any] = {"input_rows": len(df)}
    bookkeeping = (SOURCE_COLUMN, SOURCE_ROW)
    text_columns = [c for c in df.columns if c not in bookkeeping]
    changed: dict[str, int] = {}
    for column in text_columns:
        original = df[column]
        lower = column in rules.lowercase_columns

        def fix(value: Any, lower: bool = lower) -> Any:
            if not isinstance(value, str):
                return value
            if rules.unicode_nfc:
                value = unicodedata.normalize("NFC", value)
            if rules.trim:
                value = value.strip()
            if lower:
                value = value.lower()
            return value

        df[column] = original.map(fix)
        n = int((df[column].fillna("\0") != original.fillna("\0")).sum())
        if n:
            changed[column] = n
    counts["values_changed"] = sum(changed.values())
    counts["values_changed_by_column"] = changed
    if rules.dedupe_on_key:
        before = len(df)
        df = df.drop_duplicates(subset=text_columns, keep="first")
        counts["exact_duplicates_removed"] = before - len(df)
        before = len(df)
        df = df.drop_duplicates(subset=[spec.dataset.key], keep="first")
        counts["key_conflicts_removed"] = before - len(df)
    counts["output_rows"] = len(df)
    return df.reset_index(drop=True), counts


def _is_text(series: pd.Series) -> bool:
    from pandas.api.types import is_object_dtype, is_string_dtype

    return is_string_dtype(series.dtype) or is_object_dtype(series.dtype)


def _timestamp_column(spec: PipelineSpec) -> str | None:
    """The column freshness is measured on: a contract's freshness column, else a timestamp cast."""
    for source in spec.sources:
        if source.contract and source.contract.freshness:
            return source.contract.freshness.column
    casts = spec.dataset.normalization.casts
    return next((c for c, kind in casts.items() if kind in ("timestamp", "date")), None)


_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


def cast_column(values: pd.Series, kind: str) -> pd.Series:
    """Cast text to `kind`; a value that does not cast becomes null (the caller quarantines it)."""
    import pandas as pd

    if kind == "string":
        return values
    if kind in ("int", "float"):
        numbers = pd.to_numeric(values, errors="coerce")
        if kind == "float":
            return numbers.astype("Float64")
        whole = numbers.where(numbers.isna() | (numbers == numbers.round()))
        return whole.astype("Int64")
    if kind == "bool":
        lowered = values.str.lower()
        return lowered.map(lambda v: True if v in _TRUE else (False if v in _FALSE else None)).astype(
            "boolean"
        )
    stamps = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    if kind == "date":
        return stamps.dt.tz_convert(None).dt.normalize()
    return stamps


def _apply_casts(df: pd.DataFrame, casts: dict[str, str]) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    failures: dict[int, list[str]] = {}
    for column, kind in casts.items():
        if column not in df.columns:
            raise ValueError(f"dataset.normalization.casts: column '{column}' is not in the dataset")
        cast = cast_column(df[column], kind)
        bad = df[column].notna() & cast.isna()
        for row in df.index[bad]:
            failures.setdefault(int(row), []).append(f"cast({column}->{kind})")
        df[column] = cast
    return df, failures


def pii_masker() -> Any:
    """A function that masks every PII type in a string: used on validation samples."""
    from llmops.privacy.pii import redact_text

    actions = dict.fromkeys(PII_TYPES, "mask")

    def mask(value: str) -> str:
        return redact_text(value, actions, None)[0]

    return mask


def validate(pipeline: str, raw: list[dict[str, Any]], run_id: str, now: str | None = None) -> dict[str, Any]:
    """Normalise, check contracts and the GX suite, cast; quarantine failing rows; fail on blocking ones.

    `now` (ISO 8601) is the run's reference time for freshness: the data interval's end, so that a
    re-run judges freshness as the original run did.
    """
    from datetime import UTC, datetime

    import pandas as pd
    import pyarrow as pa

    from llmops.privacy.keys import get_key_ring
    from llmops.quality.contracts import ContractViolation, evaluate_contract
    from llmops.quality.expectations import BlockingExpectationFailed, load_suite, validate_dataframe
    from llmops.quality.metrics import metrics_trend, quality_metrics

    spec = load_pipeline(pipeline)
    settings = get_settings()
    reference = datetime.fromisoformat(now) if now else datetime.now(UTC)
    kek = get_key_ring()
    mask = pii_masker()
    frames = []
    contracts = []
    contract_rows: dict[tuple[str, int], list[str]] = {}
    for item in sorted(raw, key=lambda r: r["source"]):
        source = _source(spec, item["source"])
        ref = snapshots.snapshot_ref(settings.lake_root, "raw", spec.name, source.name, item["snapshot_id"])
        manifest = snapshots.read_manifest(ref)
        frame = snapshots.read_snapshot(ref, kek).to_pandas()
        outcome = evaluate_contract(
            source.name,
            source.contract,
            frame,
            list(source.columns),
            manifest["source"].get("schema_drift"),
            reference,
            mask=mask,
        )
        contracts.append(outcome)
        for row, reasons in outcome.row_violations.items():
            contract_rows[(source.name, row)] = list(reasons)
        frame[SOURCE_COLUMN] = source.name
        frame[SOURCE_ROW] = range(len(frame))
        frames.append(frame)
    broken = [c for c in contracts if not c.ok]
    if broken:
        violations = [v for c in broken for v in c.table_violations]
        record(
            spec,
            "dataset.contract_violated",
            "contract",
            run_id,
            {"inputs": raw, "contracts": [c.to_dict() for c in contracts], "violations": violations},
        )
        raise ContractViolation(
            f"data contract violated ({len(violations)} violation(s)): " + "; ".join(violations)
        )
    if sum(len(f) for f in frames) == 0:
        record(spec, "ingest.no_new_data", "validate", run_id, {"inputs": raw})
        return {"no_new_data": True}
    columns = list(dict.fromkeys(c for s in spec.sources for c in s.columns))
    df = pd.concat(
        [f.reindex(columns=[*columns, SOURCE_COLUMN, SOURCE_ROW]) for f in frames], ignore_index=True
    )
    df, normalisation = _normalise(df, spec)
    origin = list(zip(df[SOURCE_COLUMN], df[SOURCE_ROW], strict=True))
    df = df.drop(columns=[SOURCE_ROW])

    suite = load_suite(settings.gx_dir, spec.validation.suite)
    outcome = validate_dataframe(df.drop(columns=[SOURCE_COLUMN]), suite, mask)
    row_failures = {row: list(reasons) for row, reasons in outcome.row_failures.items()}
    for row, key in enumerate(origin):
        if key in contract_rows:
            row_failures.setdefault(row, [])[:0] = contract_rows[key]
    df, cast_failures = _apply_casts(df, dict(spec.dataset.normalization.casts))
    for row, reasons in cast_failures.items():
        row_failures.setdefault(row, []).extend(reasons)
    normalisation["cast_failures"] = len(cast_failures)

    failed_rows = sorted(row_failures)
    quarantined = df.iloc[failed_rows].copy()
    quarantined[QUARANTINE_REASON] = ["; ".join(row_failures[i]) for i in failed_rows]
    accepted = df.drop(index=failed_rows).reset_index(drop=True)
    reasons: dict[str, int] = {}
    for row_reasons in row_failures.values():
        for reason in row_reasons:
            reasons[reason] = reasons.get(reason, 0) + 1

    inputs = {r["source"]: {"snapshot_id": r["snapshot_id"], "watermark": r.get("watermark")} for r in raw}
    identity = {"inputs": sorted(r["snapshot_id"] for r in raw), "suite": spec.validation.suite}
    q_ref, _ = snapshots.write_snapshot(
        lake_root=settings.lake_root,
        zone="quarantine",
        pipeline=spec.name,
        dataset="rows",
        table=pa.Table.from_pandas(
            quarantined.astype({c: "string" for c in spec.dataset.normalization.casts}), preserve_index=False
        ),
        metadata={"reasons": reasons, "inputs": identity["inputs"]},
        kek=kek,
        run_id=run_id,
        identity=identity,
    )
    v_ref, v_manifest = snapshots.write_snapshot(
        lake_root=settings.lake_root,
        zone="raw",
        pipeline=spec.name,
        dataset="validated",
        table=pa.Table.from_pandas(accepted, preserve_index=False),
        metadata={
            "inputs": identity["inputs"],
            "inputs_by_source": inputs,
            "quarantine_snapshot_id": q_ref.snapshot_id,
        },
        kek=kek,
        run_id=run_id,
        identity=identity,
    )
    reconciled = normalisation["output_rows"] == len(accepted) + len(quarantined)
    quality = quality_metrics(
        df.drop(columns=[SOURCE_COLUMN]),
        key=spec.dataset.key,
        text_columns=[c for c in columns if _is_text(df[c])],
        timestamp_column=_timestamp_column(spec),
        now=reference,
        contract_valid_rows=len(accepted),
    )
    history = [
        r.payload["quality"]
        for r in get_ledger().records(pipeline=spec.name, event_type="dataset.validated")
        if r.run_id != run_id and r.payload.get("quality")
    ]
    payload = {
        "inputs": identity["inputs"],
        "validated_snapshot_id": v_ref.snapshot_id,
        "quarantine_snapshot_id": q_ref.snapshot_id,
        "rows_in": normalisation["input_rows"],
        "rows_after_normalisation": normalisation["output_rows"],
        "rows_accepted": len(accepted),
        "rows_quarantined": len(quarantined),
        "counts_reconcile": reconciled,
        "quarantine_reasons": reasons,
        "normalisation": normalisation,
        "contracts": [c.to_dict() for c in contracts],
        "validation": outcome.to_dict(),
        "quality": quality,
        "quality_trend": metrics_trend(history[-10:], quality),
    }
    storage.write_json(
        storage.join(settings.lake_root, "validation", spec.name, f"{v_ref.snapshot_id}.json"), payload
    )
    record(spec, "dataset.validated", f"validated/{v_ref.snapshot_id}", run_id, payload)
    from llmops import lineage

    lineage.emit_validate(spec, raw, payload)  # OpenLineage, failing checks included; never raises
    if not reconciled:
        raise RuntimeError("row counts do not reconcile: input != accepted + quarantined")
    if outcome.blocking_failures:
        raise BlockingExpectationFailed(
            f"suite '{spec.validation.suite}' failed {len(outcome.blocking_failures)} blocking expectation(s): "
            + "; ".join(outcome.blocking_failures)
        )
    fraction = len(quarantined) / max(normalisation["output_rows"], 1)
    if fraction > spec.validation.max_quarantine_fraction:
        raise QuarantineLimitExceeded(
            f"{len(quarantined)} of {normalisation['output_rows']} rows ({fraction:.1%}) were quarantined; "
            f"validation.max_quarantine_fraction is {spec.validation.max_quarantine_fraction:.1%}"
        )
    return {
        "validated_snapshot_id": v_ref.snapshot_id,
        "quarantine_snapshot_id": q_ref.snapshot_id,
        "rows_accepted": len(accepted),
        "rows_quarantined": len(quarantined),
        "row_count": v_manifest["row_count"],
    }


# ---------------------------------------------------------------------------------------- curate


def _carry_forward(spec: PipelineSpec, curated: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows of incremental sources stay curated until a newer version of the same key arrives."""
    import pandas as pd

    incremental = [s.name for s in spec.sources if getattr(s, "incremental", None)]
    if not incremental:
        return curated, 0
    try:
        previous_ref = snapshots.get_latest(get_settings().lake_root, "curated", spec.name, CURATED_DATASET)
    except snapshots.SnapshotError:
        return curated, 0
    previous = snapshots.read_snapshot(previous_ref).to_pandas()
    key = spec.dataset.key
    keep = previous[previous[SOURCE_COLUMN].isin(incremental) & ~previous[key].isin(curated[key])]
    merged = pd.concat([curated, keep.reindex(columns=curated.columns)], ignore_index=True)
    return merged.sort_values(key, kind="stable").reset_index(drop=True), len(keep)


def curate(pipeline: str, validated: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Apply the PII policy, publish the curated snapshot, and only then advance watermarks."""
    import pyarrow as pa

    from llmops.ingest.state import set_watermark
    from llmops.privacy.keys import get_key_ring, get_pseudonymisation_key
    from llmops.privacy.pii import Pseudonymiser, apply_privacy_policy, find_residual_pii

    spec = load_pipeline(pipeline)
    settings = get_settings()
    v_ref = snapshots.snapshot_ref(
        settings.lake_root, "raw", spec.name, "validated", validated["validated_snapshot_id"]
    )
    v_manifest = snapshots.read_manifest(v_ref)
    df = snapshots.read_snapshot(v_ref, get_key_ring()).to_pandas()
    pseudonymiser = Pseudonymiser(get_pseudonymisation_key(spec.privacy.pseudonymisation_conn_id))
    curated, report = apply_privacy_policy(df, spec.privacy, pseudonymiser)
    residual: dict[str, int] = {}
    if spec.privacy.free_text is not None:
        residual = {
            t: n
            for t, n in find_residual_pii(curated, list(spec.privacy.free_text.columns)).items()
            if n and t in spec.privacy.free_text.types
        }
    curated, carried = _carry_forward(spec, curated)
    governance = {s.name: s.governance.model_dump() for s in spec.sources}
    ref, manifest = snapshots.write_snapshot(
        lake_root=settings.lake_root,
        zone="curated",
        pipeline=spec.name,
        dataset=CURATED_DATASET,
        table=pa.Table.from_pandas(curated, preserve_index=False),
        metadata={
            "inputs": {"validated_snapshot_id": v_ref.snapshot_id, "carried_forward_rows": carried},
            "privacy": report.to_dict(),
            "governance": governance,
            "purpose": spec.purpose,
        },
        run_id=run_id,
        identity={"validated": v_ref.snapshot_id, "privacy_policy": spec.privacy.model_dump(mode="json")},
    )
    payload = {
        "validated_snapshot_id": v_ref.snapshot_id,
        "curated_snapshot_id": ref.snapshot_id,
        "uri": ref.uri,
        "row_count": manifest["row_count"],
        "carried_forward_rows": carried,
        "sha256": manifest["content_sha256"],
        "files": [{k: f[k] for k in ("name", "rows", "sha256")} for f in manifest["files"]],
        "columns": [c["name"] for c in manifest["schema"]],
        "privacy": report.to_dict(),
        "residual_pii": residual,
        "governance": governance,
    }
    record(spec, "pii.handled", f"curated/{ref.snapshot_id}", run_id, payload)
    if residual:
        raise PiiResidualFound(f"PII still detectable after redaction: {residual}")
    snapshots.set_latest(ref, settings.lake_root)
    record(
        spec,
        "snapshot.curated.published",
        f"curated/{ref.snapshot_id}",
        run_id,
        {"asset": spec.curated_asset_uri},
    )
    for source_name, item in (v_manifest.get("inputs_by_source") or {}).items():
        watermark = item.get("watermark")
        if watermark and watermark.get("high") is not None and not watermark.get("empty"):
            set_watermark(
                spec.name, source_name, watermark["column"], watermark["high"], item["snapshot_id"], run_id
            )
            record(
                spec,
                "watermark.advanced",
                f"watermark/{source_name}",
                run_id,
                {
                    "source": source_name,
                    "column": watermark["column"],
                    "from": watermark.get("low"),
                    "to": watermark["high"],
                },
            )
    from llmops import lineage

    lineage.emit_curate(spec, payload)  # OpenLineage: PII facet, masking column lineage; never raises
    return {"curated_snapshot_id": ref.snapshot_id, "row_count": manifest["row_count"], "uri": ref.uri}
