"""Erased subjects stay erased: a full-refresh source that still holds them does not bring them back.

A real PostgreSQL table is the source; the real ingest steps, the real erasure and a real ledger
database (SQLite, and PostgreSQL as in production) hold the suppression list. The subject is
ingested, erased, and ingested again from the unchanged table: their rows reach no snapshot of the
new run, the count is recorded, and the list holds no plain identifier.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from small_pipeline import GOVERNANCE, ingest, install, pipeline_spec

from llmops import snapshots
from llmops.ledger import get_ledger
from llmops.ledger.events import DatasetValidated, ErasureSuppressed

pytestmark = [pytest.mark.integration]
PIPELINE = "suppressed_tickets"
SUBJECT = "ana@example.com"
OTHER = "bob@example.com"
SOURCE_CONN = "suppression_source_pg"
KEY_CONN = "llmops_pseudonymisation_key"
COLUMNS = ["ticket_id", "customer_email", "body"]
ROWS = [
    ("T-01", SUBJECT, "parcel one is late"),
    ("T-02", "  ANA@Example.com ", "refund for parcel two"),  # the subject, as another system wrote it
    ("T-03", SUBJECT, "address change"),
    *[(f"T-{i:02d}", OTHER if i % 2 else f"c{i}@example.org", f"question number {i}") for i in range(4, 13)],
]
SUBJECT_KEYS = {"T-01", "T-02", "T-03"}


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request, tmp_path: Path):
    """SQLite in a temp folder, or a fresh PostgreSQL schema (the production store)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"suppression_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield f"{base}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.fixture
def source(postgres_url: str, monkeypatch: pytest.MonkeyPatch):
    """The source system's table: full refresh, it keeps every row it ever had."""
    name = f"tickets_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(postgres_url)
    meta = sa.MetaData()
    table = sa.Table(name, meta, *(sa.Column(c, sa.Text, primary_key=c == "ticket_id") for c in COLUMNS))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [dict(zip(COLUMNS, row, strict=True)) for row in ROWS])
    url = sa.make_url(postgres_url)
    conn = {
        "conn_type": "postgres",
        "host": url.host,
        "port": url.port,
        "login": url.username,
        "password": url.password,
        "schema": url.database,
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{SOURCE_CONN.upper()}", json.dumps(conn))
    yield engine, table
    meta.drop_all(engine)
    engine.dispose()


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source, ledger_url: str):
    spec = pipeline_spec(
        PIPELINE,
        [
            {
                "kind": "sql",
                "name": "tickets",
                "conn_id": SOURCE_CONN,
                "table": str(source[1].name),
                "columns": COLUMNS,
                "governance": GOVERNANCE,
            }
        ],
        dataset={
            "key": "ticket_id",
            "subject_column": "customer_email",
            "normalization": {"lowercase_columns": ["customer_email"]},
        },
        privacy={
            "columns": {"customer_email": {"action": "pseudonymise"}},
            "free_text": {"columns": ["body"], "types": {"email": "mask"}},
        },
    )
    install(tmp_path, spec, monkeypatch.setenv)
    monkeypatch.setenv("LLMOPS_LEDGER_URL", ledger_url)
    key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{KEY_CONN.upper()}", json.dumps({"conn_type": "generic", "password": key})
    )
    yield source
    get_ledger(ledger_url).engine.dispose()


def _read(zone: str, dataset: str, snapshot_id: str):
    from llmops.privacy.keys import get_key_ring
    from llmops.settings import get_settings

    ref = snapshots.snapshot_ref(get_settings().lake_root, zone, PIPELINE, dataset, snapshot_id)
    return snapshots.read_manifest(ref), snapshots.read_snapshot(ref, get_key_ring()).to_pandas()


def _store_rows() -> list[dict]:
    from llmops.governance.suppression import suppression_entries

    with get_ledger().engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(suppression_entries))]


def test_an_erased_subject_is_not_ingested_again_from_a_full_refresh_source(pipeline) -> None:
    """Expect the subject's rows (every spelling, and a ticket written after the erasure) absent from
    the raw, validated and curated snapshots of the next run, counted in the raw and validated
    manifests, the ledger and the report's data section; the other customers' rows all there; and
    no plain identifier in the suppression list."""
    from llmops.governance.erasure import erase_subject
    from llmops.reports.version_data import validation_section
    from llmops.specs import load_pipeline

    first = ingest(PIPELINE, "manual__ingest_1")
    assert first["curated"]["row_count"] == len(ROWS)
    spec = load_pipeline(PIPELINE)

    summary = erase_subject(spec, SUBJECT, "DSR-1", "manual__erasure_1")
    assert summary["records_found"] == 3 and summary["suppression_entries"] == 4
    again = erase_subject(spec, SUBJECT, "DSR-1", "manual__erasure_2")  # the request run again
    assert again["rows_removed"] == 0
    (retried,) = get_ledger().records(event_type=ErasureSuppressed.name, run_id="manual__erasure_2")
    assert (retried.payload["entries"], retried.payload["added"]) == (1, 0), "no key left to find"
    assert len(_store_rows()) == 4

    engine, table = pipeline
    with engine.begin() as conn:  # the subject writes in again after the erasure, under a new ticket
        conn.execute(
            table.insert(), [{"ticket_id": "T-13", "customer_email": SUBJECT, "body": "hello again"}]
        )
    second = ingest(PIPELINE, "manual__ingest_2")

    gone = {*SUBJECT_KEYS, "T-13"}
    others = {row[0] for row in ROWS} - SUBJECT_KEYS
    (committed,) = second["committed"]
    raw_manifest, raw = _read("raw", "tickets", committed["snapshot_id"])
    assert raw_manifest["source"]["rows_suppressed"] == 4 and set(raw["ticket_id"]) == others
    v_manifest, validated = _read("raw", "validated", second["validated"]["validated_snapshot_id"])
    assert set(validated["ticket_id"]) == others and SUBJECT not in set(validated["customer_email"])
    assert v_manifest["suppression"] == {"rows_suppressed": 4, "at_extract": 4, "at_validate": 0}
    _, curated = _read("curated", snapshots.CURATED_DATASET, second["curated"]["curated_snapshot_id"])
    assert set(curated["ticket_id"]) == others and not gone & set(curated["ticket_id"])

    (record,) = get_ledger().records(event_type=DatasetValidated.name, run_id="manual__ingest_2")
    assert record.payload["rows_suppressed"] == 4 and record.payload["counts_reconcile"]
    assert validation_section(PIPELINE, record)["rows_suppressed"] == 4

    stored = json.dumps(_store_rows())
    assert SUBJECT not in stored and "ana@" not in stored.lower()
    assert not any(key in stored for key in gone)
    ledger_url = sa.make_url(get_ledger().url)
    if ledger_url.get_backend_name() == "sqlite":
        assert SUBJECT.encode() not in Path(ledger_url.database or "").read_bytes()


def test_a_subject_listed_while_a_run_is_in_flight_is_dropped_at_validation(pipeline) -> None:
    """Expect a subject listed after extraction (an erasure that has listed them and not yet swept)
    to be dropped by validation, counted there, with the row counts still reconciling; and a
    subject not listed kept whole."""
    from llmops.governance import suppression
    from llmops.orchestration.ingest import curate, validate
    from llmops.specs import load_pipeline

    committed = ingest(PIPELINE, "manual__ingest_1", until="commit")["committed"]
    suppression.add_erased(load_pipeline(PIPELINE), "DSR-2", OTHER, set())

    validated = validate.validate(PIPELINE, committed, "manual__ingest_1")
    curated = curate.curate(PIPELINE, validated, "manual__ingest_1")

    bob = {row[0] for row in ROWS if row[1] == OTHER}
    v_manifest, rows = _read("raw", "validated", validated["validated_snapshot_id"])
    assert v_manifest["suppression"] == {
        "rows_suppressed": len(bob),
        "at_extract": 0,
        "at_validate": len(bob),
    }
    assert not bob & set(rows["ticket_id"]) and SUBJECT_KEYS <= set(rows["ticket_id"])
    assert curated["row_count"] == len(ROWS) - len(bob)
    (record,) = get_ledger().records(event_type=DatasetValidated.name, run_id="manual__ingest_1")
    assert record.payload["counts_reconcile"] and record.payload["rows_in"] == len(ROWS)


def test_ingest_refuses_to_run_when_the_pseudonymisation_key_changed(pipeline, monkeypatch) -> None:
    """Expect the list made under one key not to match under another, and ingest to stop naming
    the request rather than let the erased subject back in."""
    from llmops.governance.erasure import erase_subject
    from llmops.governance.suppression import SuppressionKeyChanged
    from llmops.specs import load_pipeline

    ingest(PIPELINE, "manual__ingest_1")
    erase_subject(load_pipeline(PIPELINE), SUBJECT, "DSR-3", "manual__erasure_1")
    other_key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{KEY_CONN.upper()}", json.dumps({"conn_type": "generic", "password": other_key})
    )

    with pytest.raises(SuppressionKeyChanged, match="DSR-3") as raised:
        ingest(PIPELINE, "manual__ingest_2")
    assert SUBJECT not in str(raised.value)
