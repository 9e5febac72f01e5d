"""The erasure suppression list: keyed hashes only, added once, found again by normalised value."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from small_pipeline import GOVERNANCE, inline_kind, install, pipeline_spec

PIPELINE = "suppression_unit"
SUBJECT = "ana@example.com"
KEY_CONN = "llmops_pseudonymisation_key"


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from llmops.specs import load_pipeline

    source = {
        "kind": "inline",
        "name": "pasted",
        "rows": [{"ticket_id": "T-01", "customer": SUBJECT, "body": "late"}],
        "columns": ["ticket_id", "customer", "body"],
        "governance": GOVERNANCE,
    }
    dataset = {
        "key": "ticket_id",
        "subject_column": "customer",
        "normalization": {"lowercase_columns": ["customer"]},
    }
    with inline_kind():
        install(tmp_path, pipeline_spec(PIPELINE, [source], dataset=dataset), monkeypatch.setenv)
        yield load_pipeline(PIPELINE)


def _use_key(monkeypatch: pytest.MonkeyPatch, key: bytes) -> None:
    conn = {"conn_type": "generic", "password": base64.b64encode(key).decode()}
    monkeypatch.setenv(f"AIRFLOW_CONN_{KEY_CONN.upper()}", json.dumps(conn))


def test_adding_the_same_erasure_twice_adds_nothing_the_second_time(spec) -> None:
    """Expect a retried add to report no new entries and leave one row per entry."""
    from llmops.governance import suppression

    first = suppression.add_erased(spec, "req-1", SUBJECT, {"T-01", "T-02"})
    again = suppression.add_erased(spec, "req-1", SUBJECT, {"T-01", "T-02"})
    later = suppression.add_erased(spec, "req-2", SUBJECT, {"T-02", "T-03"})  # same subject, new key

    assert (first["entries"], first["added"]) == (3, 3)
    assert (again["entries"], again["added"]) == (3, 0)
    assert later["added"] == 1
    rows = suppression.listed(PIPELINE)
    assert len(rows) == 4
    assert sorted(r["kind"] for r in rows) == ["key", "key", "key", "subject"]
    assert {r["request_id"] for r in rows if r["kind"] == "subject"} == {"req-1"}, "the first add is kept"


def test_the_store_holds_no_plain_value(spec) -> None:
    """Expect neither the subject nor a record key in any row or in the database file."""
    from llmops.governance import suppression
    from llmops.settings import get_settings

    suppression.add_erased(spec, "req-1", SUBJECT, {"T-01"})

    rows = json.dumps(suppression.listed(PIPELINE))
    assert SUBJECT not in rows and "T-01" not in rows
    database = Path(sa.make_url(get_settings().ledger_url).database or "")
    assert SUBJECT.encode() not in database.read_bytes()
    assert all(len(r["digest"]) == 64 for r in suppression.listed(PIPELINE))


def test_lookup_matches_listed_rows_after_normalisation(spec) -> None:
    """Expect the subject found in any case and spacing, a key raw or trimmed, and nothing else."""
    from llmops.governance import suppression
    from llmops.governance.suppression import Suppression

    assert Suppression.load(spec) is None, "an empty list costs nothing"
    suppression.add_erased(spec, "req-1", SUBJECT, {"T-01"})
    loaded = Suppression.load(spec)
    assert loaded is not None

    hits = loaded.hits(
        {
            "customer": ["  ANA@example.com ", "bob@example.com", "bob@example.com", None],
            "ticket_id": ["T-09", " T-01", "T-02", "T-01"],
        },
        4,
    )
    assert hits == [True, True, False, True]


def test_a_stream_of_batches_loses_only_the_listed_rows(spec) -> None:
    """Expect the listed rows dropped batch by batch, counted, and their keys remembered in memory."""
    from llmops.governance import suppression
    from llmops.governance.suppression import Suppression

    suppression.add_erased(spec, "req-1", SUBJECT, set())
    loaded = Suppression.load(spec)
    schema = pa.schema([("ticket_id", pa.string()), ("customer", pa.string()), ("body", pa.string())])
    batches = [
        pa.record_batch([["T-01", "T-02"], [SUBJECT, "bob@example.com"], ["a", "b"]], schema=schema),
        pa.record_batch([["T-03"], ["Ana@Example.com"], ["c"]], schema=schema),
    ]

    kept = pa.Table.from_batches(list(loaded.stream(batches)), schema)

    assert kept.column("ticket_id").to_pylist() == ["T-02"]
    assert loaded.rows_suppressed == 2 and loaded.keys_dropped == {"T-01", "T-03"}


def test_another_pseudonymisation_key_gives_other_hashes_and_stops_ingest(spec, monkeypatch) -> None:
    """Expect different hashes under another key, and a load under it to refuse, naming the request."""
    from llmops.governance import suppression
    from llmops.governance.suppression import Suppression, SuppressionKeyChanged

    _use_key(monkeypatch, os.urandom(32))
    before = suppression.hasher_for(spec)
    suppression.add_erased(spec, "req-1", SUBJECT, {"T-01"})
    _use_key(monkeypatch, os.urandom(32))
    after = suppression.hasher_for(spec)

    assert before.key_id != after.key_id
    assert before.digest("subject", SUBJECT) != after.digest("subject", SUBJECT)
    assert before.digest("subject", "T-01") != before.digest("key", "T-01"), "kinds do not share hashes"
    with pytest.raises(SuppressionKeyChanged, match="req-1") as raised:
        Suppression.load(spec)
    assert SUBJECT not in str(raised.value) and before.key_id in str(raised.value)
