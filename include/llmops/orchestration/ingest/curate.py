"""The last ingest step: apply the privacy policy and publish the curated snapshot."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llmops import snapshots
from llmops.errors import PermanentError
from llmops.ledger import record
from llmops.ledger.events import CuratedSnapshotPublished, PiiHandled, WatermarkAdvanced
from llmops.privacy.pii import UnscannableColumn
from llmops.settings import get_settings
from llmops.snapshots import SOURCE_COLUMN
from llmops.specs.pinned import run_spec

if TYPE_CHECKING:
    import pandas as pd

    from llmops.privacy.pii import PrivacyReport
    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)


class PiiResidualFound(PermanentError, RuntimeError):
    """PII of a handled type is still detectable after the privacy policy ran."""


class PrivacyPolicyGap(PermanentError, ValueError):
    """A column the privacy policy does not name holds personal data that cannot be redacted in place."""


def _residual_check(spec: PipelineSpec, curated: pd.DataFrame, report: PrivacyReport) -> dict[str, Any]:
    """What a second, independent engine still finds in every column the policy redacted or scanned:
    the free-text types in free-text columns, every type in columns scanned by default."""
    from llmops.privacy import pii_types
    from llmops.privacy.residual import ResidualReport, check_residual

    privacy = spec.privacy
    handled = dict(privacy.free_text.types) if privacy.free_text else {}
    name_model = privacy.names.model  # read for suspected names wherever that pipeline is installed
    total = ResidualReport()
    for columns, types in (
        (report.free_text_columns, list(handled)),
        ([c for c in report.scanned_by_default if c != spec.dataset.key], list(pii_types.names())),
    ):
        if columns and types:
            part = check_residual(curated, columns, types, name_model)
            for column, found in part.by_column.items():
                total.by_column[column] = found
                for t, n in found.items():
                    total.found[t] = total.found.get(t, 0) + n
            total.suspected_names.update(part.suspected_names)
            total.name_rows_read += part.name_rows_read
    return total.to_dict()


def _carry_forward(spec: PipelineSpec, curated: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows of incremental sources stay curated until a newer version of the same key arrives."""
    import pandas as pd

    incremental = [s.name for s in spec.sources if getattr(s, "incremental", None)]
    if not incremental:
        return curated, 0
    try:
        previous_ref = snapshots.get_latest(
            get_settings().lake_root, "curated", spec.name, snapshots.CURATED_DATASET
        )
    except snapshots.SnapshotError:
        return curated, 0
    from llmops.governance.integrity import read_checked
    from llmops.privacy.keys import get_key_ring

    previous = read_checked(spec, previous_ref, get_key_ring()).to_pandas()  # it flows into the new snapshot
    key = spec.dataset.key
    keep = previous[previous[SOURCE_COLUMN].isin(incremental) & ~previous[key].isin(curated[key])]
    merged = pd.concat([curated, keep.reindex(columns=curated.columns)], ignore_index=True)
    return merged.sort_values(key, kind="stable").reset_index(drop=True), len(keep)


def curate(pipeline: str, validated: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Apply the PII policy, publish the curated snapshot, and only then advance watermarks."""
    import pyarrow as pa

    from llmops.ingest.state import set_watermark
    from llmops.privacy.keys import get_key_ring, get_pseudonymisation_key
    from llmops.privacy.pii import Pseudonymiser, apply_privacy_policy

    spec = run_spec(pipeline, run_id)
    settings = get_settings()
    v_ref = snapshots.snapshot_ref(
        settings.lake_root, "raw", spec.name, "validated", validated["validated_snapshot_id"]
    )
    v_manifest = snapshots.read_manifest(v_ref)
    kek = get_key_ring()
    df = snapshots.read_snapshot(v_ref, kek).to_pandas()
    pseudonymiser = Pseudonymiser(get_pseudonymisation_key(spec.privacy.pseudonymisation_conn_id))
    try:
        curated, report = apply_privacy_policy(
            df, spec.privacy, pseudonymiser, key_columns=[spec.dataset.key], system_columns=[SOURCE_COLUMN]
        )
    except UnscannableColumn as exc:
        raise PrivacyPolicyGap(str(exc)) from None
    residual_check = _residual_check(spec, curated, report)
    residual = dict(residual_check["found"])
    curated, carried = _carry_forward(spec, curated)
    governance = {s.name: s.governance.model_dump() for s in spec.sources}
    ref, manifest = snapshots.write_snapshot(
        lake_root=settings.lake_root,
        zone="curated",
        pipeline=spec.name,
        dataset=snapshots.CURATED_DATASET,
        table=pa.Table.from_pandas(curated, preserve_index=False),
        kek=kek,
        metadata={
            "inputs": {"validated_snapshot_id": v_ref.snapshot_id, "carried_forward_rows": carried},
            "privacy": {**report.to_dict(), "residual_check": residual_check},
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
        "privacy": {**report.to_dict(), "residual_check": residual_check},
        "residual_pii": residual,
        "governance": governance,
    }
    record(spec, PiiHandled(**payload), f"curated/{ref.snapshot_id}", run_id)
    if residual:
        raise PiiResidualFound(
            f"PII still detectable after redaction by an independent engine (counts per type and "
            f"column, never values): {residual_check['by_column']}"
        )
    snapshots.set_latest(ref, settings.lake_root)
    record(spec, CuratedSnapshotPublished(asset=spec.curated_asset_uri), f"curated/{ref.snapshot_id}", run_id)
    for source_name, item in (v_manifest.get("inputs_by_source") or {}).items():
        watermark = item.get("watermark")
        if watermark and watermark.get("high") is not None and not watermark.get("empty"):
            set_watermark(
                spec.name, source_name, watermark["column"], watermark["high"], item["snapshot_id"], run_id
            )
            record(
                spec,
                WatermarkAdvanced(
                    source=source_name,
                    column=watermark["column"],
                    low=watermark.get("low"),
                    high=watermark["high"],
                ),
                f"watermark/{source_name}",
                run_id,
            )
    from llmops import lineage

    lineage.emit_curate(spec, payload)  # OpenLineage: PII facet, masking column lineage; never raises
    return {"curated_snapshot_id": ref.snapshot_id, "row_count": manifest["row_count"], "uri": ref.uri}
