"""Per-source extraction state: the high-water mark of incremental sources.

Kept beside the governance ledger (same database). A watermark only moves forward when the data
extracted up to it has been published as a curated snapshot, so a run that fails anywhere before
that re-reads the same range next time and loses nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

metadata = sa.MetaData()

source_state = sa.Table(
    "llmops_source_state",
    metadata,
    sa.Column("pipeline", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("watermark_column", sa.String(64), nullable=False),
    sa.Column("watermark", sa.Text(), nullable=False),
    sa.Column("snapshot_id", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(255), nullable=True),
    sa.Column("updated_at", sa.String(32), nullable=False),
)


def _engine() -> sa.Engine:
    from llmops.ledger import get_ledger

    engine = get_ledger().engine
    metadata.create_all(engine, checkfirst=True)
    return engine


def get_watermark(pipeline: str, source: str) -> str | None:
    with _engine().connect() as conn:
        row = conn.execute(
            sa.select(source_state.c.watermark).where(
                source_state.c.pipeline == pipeline, source_state.c.source == source
            )
        ).first()
    return row.watermark if row else None


def set_watermark(
    pipeline: str, source: str, column: str, value: str, snapshot_id: str, run_id: str | None
) -> None:
    """Upsert the source's watermark (portable: update, insert if nothing was updated)."""
    values = {
        "watermark_column": column,
        "watermark": value,
        "snapshot_id": snapshot_id,
        "run_id": run_id,
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with _engine().begin() as conn:
        updated = conn.execute(
            source_state.update()
            .where(source_state.c.pipeline == pipeline, source_state.c.source == source)
            .values(**values)
        ).rowcount
        if not updated:
            conn.execute(source_state.insert().values(pipeline=pipeline, source=source, **values))


def all_watermarks(pipeline: str) -> dict[str, dict[str, str]]:
    with _engine().connect() as conn:
        rows = conn.execute(sa.select(source_state).where(source_state.c.pipeline == pipeline)).all()
    return {
        r.source: {"column": r.watermark_column, "value": r.watermark, "snapshot_id": r.snapshot_id}
        for r in rows
    }
