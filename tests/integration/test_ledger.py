"""Governance ledger: append-only, hash-chained, idempotent, and tamper-evident."""

from __future__ import annotations

import json
import re
import threading

import pytest
import sqlalchemy as sa

from llmops.ledger import Ledger
from llmops.ledger.anchors import FileAnchorStore
from llmops.ledger.store import LedgerBlocked, metadata


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        yield Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        return
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    engine.dispose()
    # A dropped database is a removed chain to the anchors: each test gets its own anchor store.
    store = Ledger(url, anchors=FileAnchorStore(tmp_path / "anchors.jsonl"))
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
    assert result.problem.startswith(problem), result.problem


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


# ------------------------------------------------------------------------------ tamper stops appends


def _tamper(ledger: Ledger, sql: str) -> None:
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(sql)


def test_a_failed_verification_blocks_every_later_append(ledger):
    """An altered old row found by a full verification stops the pipelines: nothing is chained
    after it, and the block names the record."""
    for i in range(4):
        _append(ledger, i)
    _tamper(ledger, "UPDATE llmops_ledger_events SET payload = '{\"i\":99}' WHERE seq = 2")
    _append(ledger, 4)  # the cheap check looks at the last record only: this one still goes in
    assert not ledger.verify().ok
    with pytest.raises(LedgerBlocked, match=r"blocked since .*: record seq 2: content was altered"):
        _append(ledger, 5)
    assert ledger.verify(block_on_failure=False).records == 1
    assert [r.seq for r in ledger.records()][-1] == 5


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (
            "UPDATE llmops_ledger_events SET payload = '{\"i\":99}' WHERE seq = 3",
            "record seq 3 (the last verified) was altered or removed",
        ),
        ("DELETE FROM llmops_ledger_events WHERE seq = 3", "record seq 3 (the last verified) was altered"),
        (
            "INSERT INTO llmops_ledger_events (seq, event_id, recorded_at, pipeline, event_type, subject, run_id,"
            " actor, payload, prev_hash, record_hash, key_id) SELECT 4, 'forged', recorded_at, pipeline,"
            " event_type, 'forged', run_id, actor, payload, record_hash, record_hash, key_id"
            " FROM llmops_ledger_events WHERE seq = 3",
            "record seq 4: content was altered",
        ),
    ],
)
def test_an_append_finds_tamper_since_the_last_verified_record(ledger, tamper, problem):
    """No full verification needed: the append itself refuses to chain onto an altered, removed or
    forged record, and blocks the ledger."""
    for i in range(3):
        _append(ledger, i)
    _tamper(ledger, tamper)
    with pytest.raises(LedgerBlocked, match=re.escape(problem)):
        _append(ledger, 3)
    assert problem in ledger.blocked()


def test_unblock_needs_a_sound_chain(ledger):
    """The operator restores the row; only then does --unblock lift the block, and appends resume."""
    for i in range(3):
        _append(ledger, i)
    original = ledger.records()[1].payload
    _tamper(ledger, "UPDATE llmops_ledger_events SET payload = '{\"i\":99}' WHERE seq = 2")
    assert not ledger.verify().ok
    assert not ledger.unblock().ok and ledger.blocked()
    _tamper(
        ledger,
        f"UPDATE llmops_ledger_events SET payload = '{json.dumps(original, separators=(',', ':'))}' WHERE seq = 2",
    )
    assert ledger.unblock().ok and ledger.blocked() is None
    assert _append(ledger, 3).seq == 4 and ledger.verify().ok


def test_ledger_verify_reports_a_malformed_row_without_crashing(tmp_path, monkeypatch, capsys):
    """A payload that is not JSON is a finding of `llmops ledger-verify` (exit 2), not a traceback."""
    from llmops.cli import main

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("LLMOPS_LEDGER_URL", url)
    ledger = Ledger(url)
    for i in range(3):
        _append(ledger, i)
    _tamper(ledger, "UPDATE llmops_ledger_events SET payload = '{not json' WHERE seq = 2")
    assert main(["ledger-verify"]) == 2
    assert "ledger BROKEN: record seq 2: payload is not valid JSON" in capsys.readouterr().out
    assert main(["ledger-verify", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["problem"] == "record seq 2: payload is not valid JSON" and out["records"] == 1
    assert "record seq 2: payload is not valid JSON" in out["blocked"]


def test_a_ledger_from_before_the_state_table_checks_its_whole_chain_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    for i in range(3):
        _append(ledger, i)
    _tamper(ledger, "UPDATE llmops_ledger_events SET actor = 'mallory' WHERE seq = 1")
    _tamper(ledger, "DROP TABLE llmops_ledger_state")
    reopened = Ledger(url)  # as an upgraded deployment opens it
    with pytest.raises(LedgerBlocked, match="record seq 1: content was altered"):
        _append(reopened, 3)
