"""Erasure reaches the copies outside the snapshots: staged parts of an extraction that never
committed, the record-bearing files of the job folders of runs that read the subject's data, and
the batch-inference answers for the subject's records. What does not hold the subject stays."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest
from small_pipeline import SUBJECT, SUBJECT_ROWS, inline_kind, inline_source, install, pipeline_spec

from llmops import snapshots, storage
from llmops.encrypted_files import write_encrypted
from llmops.privacy.keys import get_key_ring

if TYPE_CHECKING:
    from pathlib import Path

PIPELINE = "erasure_copies"
ROWS = SUBJECT_ROWS
FINETUNE_RUN = "manual__ft_1"


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The subject in raw, curated and training snapshots; a batch table and its answers in SQLite."""
    from small_pipeline import ingest

    from llmops.orchestration.finetune.data import prepare_training_data, start_finetune

    db = tmp_path / "helpdesk.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tickets (ticket_id TEXT PRIMARY KEY, customer TEXT, body TEXT)")
        # B-99 is the subject's too, but newer than the lake: found by the batch table's subject column.
        rows = [(r["ticket_id"], r["customer"], r["body"]) for r in ROWS]
        conn.executemany("INSERT INTO tickets VALUES (?, ?, ?)", [*rows, ("B-99", " Ana@Example.com", "hi")])
    conn.close()
    monkeypatch.setenv("AIRFLOW_CONN_HELPDESK_DB", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    source = inline_source("pasted", ROWS, ("ticket_id", "customer", "body"))
    spec = pipeline_spec(
        PIPELINE,
        [source],
        dataset={
            "key": "ticket_id",
            "subject_column": "customer",
            "normalization": {"trim": True, "lowercase_columns": ["customer"]},
        },
        batch_inference={
            "conn_id": "helpdesk_db",
            "table": "tickets",
            "key_column": "ticket_id",
            "target_table": "answers",
        },
    )
    with inline_kind():
        install(tmp_path, spec, monkeypatch.setenv)
        curated = ingest(PIPELINE, "manual__ingest_1")["curated"]["curated_snapshot_id"]
        start_finetune(PIPELINE, curated, {}, FINETUNE_RUN)
        prepare_training_data(PIPELINE, curated, FINETUNE_RUN)
        yield {"root": str(tmp_path / "lake"), "db": db}


def _answers(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        keys = {k for (k,) in conn.execute("SELECT record_key FROM answers")}
    conn.close()
    return keys


def _write_answers(db: Path, keys: list[str]) -> None:
    import sqlalchemy as sa

    from llmops.deployment.batch import results_table
    from llmops.specs import load_pipeline

    engine = sa.create_engine(f"sqlite:///{db}")
    metadata = sa.MetaData()
    table = results_table(load_pipeline(PIPELINE).batch_inference, metadata)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(table),
            [
                {
                    "record_key": k,
                    "model_name": PIPELINE,
                    "model_version": "1",
                    "prompt_sha256": "0" * 64,
                    "answer": "we are on it",
                    "airflow_run_id": "manual__batch_1",
                    "scored_at": "2026-12-01T00:00:00+00:00",
                }
                for k in keys
            ],
        )
    engine.dispose()


def _stage(root: str, run_id: str, customers: list[str]) -> str:
    """One encrypted part staged by an extraction that never committed; returns its folder."""
    table = pa.table(
        {
            "ticket_id": [f"S-{i}" for i in range(len(customers))],
            "customer": customers,
            "body": ["late" for _ in customers],
        }
    )
    info = snapshots.stage_part(
        lake_root=root,
        pipeline=PIPELINE,
        dataset="pasted",
        run_id=run_id,
        part=0,
        batches=table.to_batches(),
        schema=table.schema,
        kek=get_key_ring(),
    )
    return info["staging_uri"].rsplit("/", 1)[0]


def test_erasure_removes_staged_parts_job_files_and_batch_answers(lake) -> None:
    from llmops.governance import erasure
    from llmops.orchestration.finetune.jobs import job_root
    from llmops.specs import load_pipeline

    spec = load_pipeline(PIPELINE)
    root = lake["root"]
    holding = _stage(root, "manual__ingest_crashed", ["c1@example.com", "ANA@example.com "])
    clean = _stage(root, "manual__ingest_running", ["c2@example.com"])
    prompts = storage.join(job_root(spec, FINETUNE_RUN), "probe_prompts.jsonl.enc")
    write_encrypted(prompts, b'{"prompt": "parcel 1 late", "kind": "record"}\n', get_key_ring())
    result = storage.join(job_root(spec, FINETUNE_RUN), "train", "result.json")
    storage.write_json(result, {"train_loss": 1.0})
    other = storage.join(job_root(spec, "manual__ft_unrelated"), "probe_prompts.jsonl.enc")
    write_encrypted(other, b'{"prompt": "parcel 9 late", "kind": "record"}\n', get_key_ring())
    _write_answers(lake["db"], ["T-00", "T-01", "T-05", "B-99"])

    summary = erasure.erase_subject(spec, SUBJECT, "req-1", "manual__erasure_1")

    assert not storage.exists(holding) and storage.exists(clean)
    assert summary["staging_folders_removed"] == 1
    assert not storage.exists(prompts) and not storage.exists(prompts + ".key.json")
    assert storage.exists(result), "metrics and weights stay; the model version is flagged instead"
    assert storage.exists(other), "a run that never read the subject's data keeps its files"
    assert summary["job_files_removed"] == 2
    assert _answers(lake["db"]) == {"T-05"}
    assert summary["batch_answers_removed"] == 3
    assert summary["records_found"] == 4  # T-00..T-02 and the staged S-1


def test_a_staged_part_that_cannot_be_read_is_removed(lake) -> None:
    """A half-written or damaged staged part cannot be shown to be free of the subject."""
    from llmops.governance import erasure
    from llmops.specs import load_pipeline

    folder = _stage(lake["root"], "manual__ingest_killed", ["c3@example.com"])
    (part,) = [u for u in storage.list_files(folder) if not u.endswith(".key.json")]
    storage.write_bytes(part, storage.read_bytes(part)[:40])

    summary = erasure.erase_subject(load_pipeline(PIPELINE), SUBJECT, "req-2", "manual__erasure_2")
    assert not storage.exists(folder) and summary["staging_folders_removed"] == 1
