"""Governance ledger: append-only, hash-chained, idempotent, and tamper-evident."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from llmops.ledger import Ledger
from llmops.ledger.store import metadata


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        yield Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        return
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    engine.dispose()
    store = Ledger(url)
    yield store
    metadata.drop_all(store.engine)
    store.engine.dispose()


def _append(ledger: Ledger, i: int, run_id: str = "run-1"):
    return ledger.append(pipeline="p", event_type="step", subject=f"s{i}", run_id=run_id, payload={"i": i})


def test_chain_verifies_and_links(ledger):
    """Expect that each record points at the previous one and the chain verifies."""
    records = [_append(ledger, i) for i in range(5)]
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert all(b.prev_hash == a.record_hash for a, b in zip(records, records[1:], strict=False))
    result = ledger.verify()
    assert result.ok and result.records == 5 and result.head_hash == records[-1].record_hash


def test_retried_event_is_not_duplicated(ledger):
    """Expect that recording the same event twice returns the first record and adds nothing."""
    first = _append(ledger, 1)
    again = ledger.append(
        pipeline="p", event_type="step", subject="s1", run_id="run-1", payload={"i": "changed"}
    )
    assert again == first
    assert len(ledger.records()) == 1


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (
            "UPDATE llmops_ledger_events SET payload = '{\"i\":99}' WHERE seq = 2",
            "record seq 2: content was altered",
        ),
        ("DELETE FROM llmops_ledger_events WHERE seq = 2", "record seq 2 is missing"),
        (
            "DELETE FROM llmops_ledger_events WHERE seq = 4",
            "head points at seq 4 but the chain ends at seq 3",
        ),
        (
            "UPDATE llmops_ledger_events SET actor = 'mallory' WHERE seq = 1",
            "record seq 1: content was altered",
        ),
    ],
)
def test_tampering_is_detected(ledger, tamper, problem):
    """Expect that editing or deleting any record breaks verification at that record."""
    for i in range(4):
        _append(ledger, i)
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(tamper)
    result = ledger.verify()
    assert not result.ok
    assert result.problem == problem


def test_concurrent_appends_keep_one_chain(ledger):
    """Expect that appends from many threads serialise into one unbroken chain."""
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                ledger.append(pipeline="p", event_type="step", subject=f"w{n}-{i}", run_id="r", payload={})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    result = ledger.verify()
    assert result.ok and result.records == 40


def test_records_filter(ledger):
    _append(ledger, 1, run_id="a")
    _append(ledger, 2, run_id="b")
    assert [r.subject for r in ledger.records(run_id="b")] == ["s2"]
    assert [r.payload for r in ledger.records(subject="s1")] == [{"i": 1}]
