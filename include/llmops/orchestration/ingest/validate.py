"""The validate step of ingest: normalise the raw snapshots, check the contract and the GX suite,
quarantine failing rows and write the validated snapshot.

Rows of erased subjects (the pipeline's suppression list) are dropped before anything is written:
extraction already left them out of the raw snapshots; what an erasure listed since is dropped
here. The validated manifest (`suppression`) and the ledger (`rows_suppressed`) count both."""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.errors import PermanentError
from llmops.ledger import get_ledger, record
from llmops.ledger.events import ContractViolated, DatasetValidated, NoNewData
from llmops.settings import get_settings
from llmops.snapshots import QUARANTINE_REASON, SOURCE_COLUMN, SOURCE_ROW
from llmops.specs.pinned import run_spec

if TYPE_CHECKING:
    import pandas as pd

    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)


class QuarantineLimitExceeded(PermanentError, RuntimeError):
    """More rows failed validation than the spec tolerates; the source is probably broken."""


class RowsUnaccounted(PermanentError, RuntimeError):
    """Rows in != accepted + quarantined + deduplicated: a row vanished (or appeared) in validation."""


def key_problems(keys: pd.Series, key: str) -> dict[int, str]:
    """Rows (positions) whose key cannot identify them: null, or empty once trimmed. They are
    quarantined, never deduplicated away (NULLs compare equal in a dedupe)."""
    out = {}
    for row, value in enumerate(keys.tolist()):
        if value is None or value != value:  # None, NaN, NA
            out[row] = f"key({key}: null)"
        elif isinstance(value, str) and not value.strip():
            out[row] = f"key({key}: empty)"
    return out


def reconcile(rows_in: int, accepted: int, quarantined: int, deduplicated: int, suppressed: int = 0) -> None:
    """Every row read is accepted, quarantined, removed as a duplicate or suppressed (an erased
    subject's): raise when not."""
    if rows_in != accepted + quarantined + deduplicated + suppressed:
        raise RowsUnaccounted(
            f"row counts do not reconcile: {rows_in} in != {accepted} accepted + {quarantined} "
            f"quarantined + {deduplicated} deduplicated + {suppressed} suppressed"
        )


def _suppress(
    spec: PipelineSpec, df: pd.DataFrame, raw_manifests: list[dict[str, Any]]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop rows of erased subjects that reached this step (an erasure that completed after the
    extraction); count them with those the extraction already left out."""
    from llmops.governance.suppression import ROWS_SUPPRESSED, Suppression

    at_extract = sum(int(m["source"].get(ROWS_SUPPRESSED) or 0) for m in raw_manifests)
    suppression = Suppression.load(spec)
    if suppression is not None:
        df = suppression.drop_from(df).reset_index(drop=True)
    at_validate = suppression.rows_suppressed if suppression is not None else 0
    return df, {
        "rows_suppressed": at_extract + at_validate,
        "at_extract": at_extract,
        "at_validate": at_validate,
    }


def _normalise(
    df: pd.DataFrame, spec: PipelineSpec
) -> tuple[pd.DataFrame, dict[str, Any], dict[int, list[str]]]:
    """Normalise text and drop duplicates; also the rows (positions in the result) whose key is
    null or malformed, with the reason, for the caller to quarantine."""
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
    key = spec.dataset.key
    if rules.dedupe_on_key:
        before = len(df)
        df = df.drop_duplicates(subset=text_columns, keep="first")
        counts["exact_duplicates_removed"] = before - len(df)
        unkeyed = key_problems(df[key], key)
        keyed = df.iloc[[r for r in range(len(df)) if r not in unkeyed]]
        conflicts = keyed.index[keyed.duplicated(subset=[key], keep="first")]
        df = df.drop(index=conflicts)
        counts["key_conflicts_removed"] = len(conflicts)
    df = df.reset_index(drop=True)
    bad_keys = {row: [reason] for row, reason in key_problems(df[key], key).items()}
    counts["key_problems"] = len(bad_keys)
    counts["output_rows"] = len(df)
    counts["rows_deduplicated"] = counts.get("exact_duplicates_removed", 0) + counts.get(
        "key_conflicts_removed", 0
    )
    return df, counts, bad_keys


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
    """What validation records of a failing value: its shape only (llmops.privacy.pii.value_shape),
    never its content, in the ledger, the validation JSON and the reports."""
    from llmops.privacy.pii import value_shape

    return value_shape


def _undecodable_rows(frame: pd.DataFrame, key: str, manifest: dict[str, Any]) -> dict[int, str]:
    """Rows (positions) the extraction found not to be UTF-8, by key: they are quarantined."""
    from llmops.ingest.common import UNDECODABLE

    noted = manifest["source"].get(UNDECODABLE) or []
    if not noted or key not in frame.columns:
        return {}
    columns: dict[str, list[str]] = {}
    for entry in noted:
        columns.setdefault(str(entry["key"]), []).extend(entry["columns"])
    return {
        row: f"undecodable({', '.join(dict.fromkeys(columns[value]))}: not UTF-8)"
        for row, value in enumerate(frame[key].tolist())
        if value is not None and str(value) in columns
    }


def _read_and_check_contracts(
    spec: PipelineSpec, raw: list[dict[str, Any]], reference: Any, kek: Any, mask: Any
) -> tuple[list[pd.DataFrame], list[Any], dict[tuple[str, int], list[str]], list[dict[str, Any]]]:
    """Each raw snapshot as a frame tagged with its source and row, its contract outcome, the
    contract's row-level reasons by (source, row), and the snapshots' manifests."""
    from llmops.governance.integrity import check_snapshot
    from llmops.quality.contracts import evaluate_contract

    settings = get_settings()
    frames = []
    contracts = []
    contract_rows: dict[tuple[str, int], list[str]] = {}
    manifests = []
    for item in sorted(raw, key=lambda r: r["source"]):
        source = spec.source(item["source"])
        ref = snapshots.snapshot_ref(settings.lake_root, "raw", spec.name, source.name, item["snapshot_id"])
        manifest = check_snapshot(spec, ref)  # the ledger's record of it, not only its manifest
        manifests.append(manifest)
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
        for row, reason in _undecodable_rows(frame, spec.dataset.key, manifest).items():
            contract_rows.setdefault((source.name, row), []).insert(0, reason)
        frame[SOURCE_COLUMN] = source.name
        frame[SOURCE_ROW] = range(len(frame))
        frames.append(frame)
    return frames, contracts, contract_rows, manifests


def validate(pipeline: str, raw: list[dict[str, Any]], run_id: str, now: str | None = None) -> dict[str, Any]:
    """Normalise, check contracts and the GX suite, cast; quarantine failing rows; fail on blocking ones.

    `now` (ISO 8601) is the run's reference time for freshness: the data interval's end, so that a
    re-run judges freshness as the original run did.
    """
    from datetime import UTC, datetime

    import pandas as pd
    import pyarrow as pa

    from llmops.privacy.keys import get_key_ring
    from llmops.quality.contracts import ContractViolation
    from llmops.quality.expectations import BlockingExpectationFailed, load_suite, validate_dataframe
    from llmops.quality.metrics import metrics_trend, quality_metrics

    spec = run_spec(pipeline, run_id)
    settings = get_settings()
    reference = datetime.fromisoformat(now) if now else datetime.now(UTC)
    kek = get_key_ring()
    mask = pii_masker()
    frames, contracts, contract_rows, manifests = _read_and_check_contracts(spec, raw, reference, kek, mask)
    broken = [c for c in contracts if not c.ok]
    if broken:
        violations = [v for c in broken for v in c.table_violations]
        record(
            spec,
            ContractViolated(inputs=raw, contracts=[c.to_dict() for c in contracts], violations=violations),
            "contract",
            run_id,
        )
        raise ContractViolation(
            f"data contract violated ({len(violations)} violation(s)): " + "; ".join(violations)
        )
    if sum(len(f) for f in frames) == 0:
        record(spec, NoNewData(inputs=raw), "validate", run_id)
        return {"no_new_data": True}
    columns = list(dict.fromkeys(c for s in spec.sources for c in s.columns))
    df = pd.concat(
        [f.reindex(columns=[*columns, SOURCE_COLUMN, SOURCE_ROW]) for f in frames], ignore_index=True
    )
    rows_in = len(df)
    df, suppressed = _suppress(spec, df, manifests)
    df, normalisation, key_failures = _normalise(df, spec)
    origin = list(zip(df[SOURCE_COLUMN], df[SOURCE_ROW], strict=True))
    df = df.drop(columns=[SOURCE_ROW])

    outcome = validate_dataframe(
        df.drop(columns=[SOURCE_COLUMN]), load_suite(settings.gx_dir, spec.validation.suite), mask
    )
    row_failures = {row: list(reasons) for row, reasons in outcome.row_failures.items()}
    for row, reasons in key_failures.items():
        row_failures.setdefault(row, [])[:0] = reasons
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
    reasons = dict(Counter(reason for row_reasons in row_failures.values() for reason in row_reasons))

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
            "suppression": suppressed,
        },
        kek=kek,
        run_id=run_id,
        identity=identity,
    )
    dropped = normalisation["rows_deduplicated"] + suppressed["at_validate"]
    reconciled = rows_in == len(accepted) + len(quarantined) + dropped
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
        for r in get_ledger().records(pipeline=spec.name, event_type=DatasetValidated.name)
        if r.run_id != run_id and r.payload.get("quality")
    ]
    payload = {
        "inputs": identity["inputs"],
        "validated_snapshot_id": v_ref.snapshot_id,
        "quarantine_snapshot_id": q_ref.snapshot_id,
        "rows_in": rows_in,
        "rows_after_normalisation": normalisation["output_rows"],
        "rows_accepted": len(accepted),
        "rows_quarantined": len(quarantined),
        "rows_suppressed": suppressed["rows_suppressed"],
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
    record(spec, DatasetValidated(**payload), f"validated/{v_ref.snapshot_id}", run_id)
    from llmops import lineage

    lineage.emit_validate(spec, raw, payload)  # OpenLineage, failing checks included; never raises
    reconcile(
        rows_in,
        len(accepted),
        len(quarantined),
        normalisation["rows_deduplicated"],
        suppressed["at_validate"],
    )
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
