"""Monitoring time series: one row per (pipeline, Airflow run, metric), in the ledger's database.

Every number a monitoring run measures (drift per column, category drift, champion quality, row
counts) is written here with its threshold and whether it was crossed, so trends can be read back
(`history`), charted (any SQL client) and put in the audit report. The table lives next to the
ledger (same URL, same pooled engine: `LLMOPS_LEDGER_URL`), on SQLite or PostgreSQL.

Writes are idempotent per (pipeline, run id, metric): a retried task replaces its own rows
instead of adding duplicates (an upsert on SQLite and PostgreSQL; delete-then-insert in one
transaction elsewhere). Only numbers and ids are stored, never rows or text from the data.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

TABLE = "llmops_monitoring_metrics"

metadata = sa.MetaData()

monitoring_metrics = sa.Table(
    TABLE,
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("pipeline", sa.String(64), nullable=False),
    sa.Column("model_name", sa.String(255), nullable=True),
    sa.Column("model_version", sa.String(32), nullable=True),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("metric", sa.String(200), nullable=False),
    sa.Column("value", sa.Float(), nullable=False),
    sa.Column("threshold", sa.Float(), nullable=True),
    sa.Column("breached", sa.Boolean(), nullable=False),
    sa.UniqueConstraint("pipeline", "run_id", "metric", name="uq_llmops_monitoring_metric"),
    sa.Index("ix_llmops_monitoring_pipeline_time", "pipeline", "measured_at"),
)


@dataclass(frozen=True)
class Measurement:
    """One number of one monitoring run; `threshold` is None for figures without a limit."""

    metric: str
    value: float
    threshold: float | None = None
    breached: bool = False


def _utc(moment: datetime | str | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:  # stored values come back naive on SQLite: they are UTC
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class MetricStore:
    """The monitoring table in one database (the ledger's engine is reused, not a second pool)."""

    def __init__(self, url: str | None = None):
        from llmops.ledger import get_ledger

        self.engine = get_ledger(url).engine
        metadata.create_all(self.engine, checkfirst=True)

    def write(
        self,
        *,
        pipeline: str,
        run_id: str,
        measurements: Iterable[Measurement],
        model_name: str | None = None,
        model_version: str | None = None,
        measured_at: datetime | str | None = None,
    ) -> int:
        """Write one run's numbers; writing the same (pipeline, run id, metric) again replaces it."""
        moment = _utc(measured_at)
        rows: dict[str, dict[str, Any]] = {}
        for m in measurements:
            value = float(m.value)
            if not math.isfinite(value):
                raise ValueError(f"metric {m.metric!r}: value {value!r} is not a finite number")
            threshold = None if m.threshold is None else float(m.threshold)
            rows[m.metric] = {
                "pipeline": pipeline,
                "model_name": model_name,
                "model_version": None if model_version is None else str(model_version),
                "run_id": run_id,
                "measured_at": moment,
                "metric": m.metric,
                "value": value,
                "threshold": threshold,
                "breached": bool(m.breached),
            }
        if not rows:
            return 0
        values = list(rows.values())
        dialect = self.engine.dialect.name
        with self.engine.begin() as conn:
            if dialect in ("sqlite", "postgresql"):
                if dialect == "sqlite":
                    from sqlalchemy.dialects.sqlite import insert
                else:
                    from sqlalchemy.dialects.postgresql import insert
                statement = insert(monitoring_metrics)
                statement = statement.on_conflict_do_update(
                    index_elements=["pipeline", "run_id", "metric"],
                    set_={
                        c: statement.excluded[c]
                        for c in (
                            "model_name",
                            "model_version",
                            "measured_at",
                            "value",
                            "threshold",
                            "breached",
                        )
                    },
                )
                conn.execute(statement, values)
            else:  # portable fallback: replace this run's rows for these metrics atomically
                conn.execute(
                    monitoring_metrics.delete().where(
                        monitoring_metrics.c.pipeline == pipeline,
                        monitoring_metrics.c.run_id == run_id,
                        monitoring_metrics.c.metric.in_(list(rows)),
                    )
                )
                conn.execute(monitoring_metrics.insert(), values)
        log.info("monitoring: stored %d metric(s) of %s run %s", len(values), pipeline, run_id)
        return len(values)

    def history(
        self, pipeline: str, since: datetime | str | None = None, metric: str | None = None
    ) -> list[dict[str, Any]]:
        """The pipeline's stored numbers, oldest first (optionally from `since` on, or one metric)."""
        query = (
            sa.select(monitoring_metrics)
            .where(monitoring_metrics.c.pipeline == pipeline)
            .order_by(monitoring_metrics.c.measured_at, monitoring_metrics.c.id)
        )
        if since is not None:
            query = query.where(monitoring_metrics.c.measured_at >= _utc(since))
        if metric is not None:
            query = query.where(monitoring_metrics.c.metric == metric)
        with self.engine.connect() as conn:
            return [
                {
                    "pipeline": row.pipeline,
                    "model_name": row.model_name,
                    "model_version": row.model_version,
                    "run_id": row.run_id,
                    "measured_at": _utc(row.measured_at).isoformat(timespec="seconds"),
                    "metric": row.metric,
                    "value": row.value,
                    "threshold": row.threshold,
                    "breached": bool(row.breached),
                }
                for row in conn.execute(query)
            ]


_STORES: dict[str, MetricStore] = {}


def get_store(url: str | None = None) -> MetricStore:
    """A process-wide store per database URL (default: the ledger's, `LLMOPS_LEDGER_URL`)."""
    if url is None:
        from llmops.settings import get_settings

        url = get_settings().ledger_url
    if url not in _STORES:
        _STORES[url] = MetricStore(url)
    return _STORES[url]


def history(
    pipeline: str, since: datetime | str | None = None, url: str | None = None
) -> list[dict[str, Any]]:
    """The pipeline's monitoring time series, oldest first."""
    return get_store(url).history(pipeline, since=since)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per run (newest first) and the latest value of each metric, from `history` rows."""
    runs: dict[str, dict[str, Any]] = {}
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:  # oldest first, so later rows win
        run = runs.setdefault(
            row["run_id"],
            {
                "run_id": row["run_id"],
                "measured_at": row["measured_at"],
                "model_name": row["model_name"],
                "model_version": row["model_version"],
                "metrics": 0,
                "breaches": [],
            },
        )
        run["measured_at"] = max(run["measured_at"], row["measured_at"])
        run["metrics"] += 1
        if row["breached"]:
            run["breaches"].append(row["metric"])
        latest[row["metric"]] = {k: row[k] for k in ("metric", "value", "threshold", "breached", "run_id")}
    ordered = sorted(runs.values(), key=lambda r: r["measured_at"], reverse=True)
    return {
        "runs": ordered,
        "latest": [latest[k] for k in sorted(latest)],
    }
