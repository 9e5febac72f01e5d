"""Monitoring time series: one row per (pipeline, run, metric), idempotent writes, history reads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from llmops.monitoring.store import (
    Measurement,
    MetricStore,
    get_store,
    history,
    monitoring_metrics,
    summarise,
)

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store(request, tmp_path):
    if request.param == "sqlite":
        return MetricStore(f"sqlite:///{tmp_path / 'ledger.db'}")
    return MetricStore(request.getfixturevalue("postgres_url"))


@pytest.fixture
def pipeline(store):
    """A pipeline name of this test only (the PostgreSQL database is shared); its rows removed after."""
    name = f"p_{uuid.uuid4().hex[:12]}"
    yield name
    with store.engine.begin() as conn:
        conn.execute(monitoring_metrics.delete().where(monitoring_metrics.c.pipeline == name))


def _run(store, pipeline, run_id, at, psi=0.05, f1=0.7):
    return store.write(
        pipeline=pipeline,
        run_id=run_id,
        model_name="bot",
        model_version="3",
        measured_at=at,
        measurements=[
            Measurement("text.body.length_psi", psi, 0.2, psi > 0.2),
            Measurement("quality.token_f1", f1, 0.6, f1 < 0.6),
            Measurement("rows.current", 120),
        ],
    )


def _count(store, pipeline) -> int:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(monitoring_metrics.c.pipeline == pipeline)
        ).scalar_one()


def test_retried_write_replaces_instead_of_duplicating(store, pipeline):
    """Expect a second write of the same run to update its rows, not add rows."""
    assert _run(store, pipeline, "scheduled__1", T0, psi=0.05) == 3
    assert _run(store, pipeline, "scheduled__1", T0 + timedelta(minutes=2), psi=0.31) == 3
    assert _count(store, pipeline) == 3
    (row,) = [r for r in store.history(pipeline) if r["metric"] == "text.body.length_psi"]
    assert row["value"] == 0.31 and row["breached"] is True and row["threshold"] == 0.2
    assert row["measured_at"] == (T0 + timedelta(minutes=2)).isoformat()
    assert row["model_name"] == "bot" and row["model_version"] == "3" and row["run_id"] == "scheduled__1"


def test_history_is_ordered_and_filtered_by_time(store, pipeline):
    """Expect history oldest first, `since` to cut earlier runs, and other pipelines kept apart."""
    _run(store, pipeline, "scheduled__2", T0 + timedelta(days=1), psi=0.4)
    _run(store, pipeline, "scheduled__1", T0, psi=0.1)
    rows = store.history(pipeline)
    assert len(rows) == 6
    assert [r["run_id"] for r in rows] == ["scheduled__1"] * 3 + ["scheduled__2"] * 3
    recent = store.history(pipeline, since=T0 + timedelta(hours=12))
    assert {r["run_id"] for r in recent} == {"scheduled__2"}
    assert {r["run_id"] for r in store.history(pipeline, since=(T0 + timedelta(hours=12)).isoformat())} == {
        "scheduled__2"
    }
    assert store.history(f"{pipeline}_other") == []
    assert [r["value"] for r in store.history(pipeline, metric="text.body.length_psi")] == [0.1, 0.4]


def test_summary_gives_latest_values_and_breaches_per_run(store, pipeline):
    """Expect the newest run first with its breach names, and each metric's latest value."""
    _run(store, pipeline, "scheduled__1", T0, psi=0.1, f1=0.8)
    _run(store, pipeline, "scheduled__2", T0 + timedelta(days=1), psi=0.4, f1=0.5)
    summary = summarise(store.history(pipeline))
    assert [r["run_id"] for r in summary["runs"]] == ["scheduled__2", "scheduled__1"]
    assert sorted(summary["runs"][0]["breaches"]) == ["quality.token_f1", "text.body.length_psi"]
    assert summary["runs"][1]["breaches"] == []
    latest = {m["metric"]: m for m in summary["latest"]}
    assert latest["text.body.length_psi"]["value"] == 0.4 and latest["text.body.length_psi"]["breached"]
    assert latest["rows.current"]["threshold"] is None


def test_rejects_non_finite_values(store, pipeline):
    with pytest.raises(ValueError, match="not a finite number"):
        store.write(pipeline=pipeline, run_id="r", measurements=[Measurement("x", float("nan"))])
    assert _count(store, pipeline) == 0


def test_default_store_lives_in_the_ledger_database(tmp_path, monkeypatch):
    """Expect the default store to use LLMOPS_LEDGER_URL, next to the ledger's tables."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("LLMOPS_LEDGER_URL", url)
    get_store().write(pipeline="p", run_id="r1", measurements=[Measurement("rows.current", 5)])
    assert [r["value"] for r in history("p")] == [5.0]
    tables = set(sa.inspect(sa.create_engine(url)).get_table_names())
    assert {"llmops_monitoring_metrics", "llmops_ledger_events"} <= tables
