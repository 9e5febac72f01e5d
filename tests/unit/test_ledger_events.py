"""Ledger events: one typed model per event type, the only place an event name is written."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmops.ledger.events import (
    EVENT_TYPES,
    Event,
    ModelPromoted,
    ReportGenerated,
    TaskFailed,
    WatermarkAdvanced,
    record,
)
from llmops.specs import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
EVENTS_MODULE = ROOT / "include" / "llmops" / "ledger" / "events.py"


def _literal_event_names(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        if path == EVENTS_MODULE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in EVENT_TYPES:
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    return found


def test_no_event_name_is_written_out_anywhere_else() -> None:
    """Expect no string literal equal to an event name in the package, plugins, DAGs or bench."""
    paths = [p for folder in ("include", "plugins", "dags", "bench") for p in (ROOT / folder).rglob("*.py")]
    assert _literal_event_names(paths) == []


def test_the_literal_scan_sees_a_literal(tmp_path: Path) -> None:
    """Expect the scan to report a module that filters on a written-out event name."""
    module = tmp_path / "reader.py"
    module.write_text('rows = ledger.records(event_type="model.promoted")\n')
    assert _literal_event_names([module]) == ["reader.py:1: 'model.promoted'"]


def test_every_event_type_has_one_model() -> None:
    """Expect each concrete event class to be registered under its own, dotted, unique name."""
    concrete = [cls for cls in EVENT_TYPES.values() if issubclass(cls, Event)]
    assert len({cls.name for cls in concrete}) == len(concrete) == len(EVENT_TYPES)
    assert all("." in name for name in EVENT_TYPES)


def test_a_misspelt_or_missing_field_is_refused_at_the_call() -> None:
    """Expect an unknown field and a missing field to fail when the event is built."""
    with pytest.raises(ValidationError, match="vesion"):
        ModelPromoted(model_name="m", vesion="2", champion="2", previous="1")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="champion"):
        ModelPromoted(model_name="m", version="2", previous="1")  # type: ignore[call-arg]


def test_the_payload_holds_what_the_writer_set_under_the_recorded_names() -> None:
    """Expect defaults left out, values unchanged (ints stay ints), and keyword fields under
    their recorded names ("from", "to", "json")."""
    assert ModelPromoted(model_name="m", version="2", champion="2", previous=None).payload() == {
        "model_name": "m",
        "version": "2",
        "champion": "2",
        "previous": None,
    }
    assert WatermarkAdvanced(source="s", column="c", low=None, high=7).payload() == {
        "source": "s",
        "column": "c",
        "from": None,
        "to": 7,
    }
    report = ReportGenerated(html="a.html", json_uri="a.json", decision="promoted")
    assert report.payload() == {"html": "a.html", "json": "a.json", "decision": "promoted"}


def test_a_recorded_event_reads_back_as_its_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Expect record() to stamp the spec hash and read() to give the typed event back; reading a
    row as the wrong type is refused."""
    from llmops.ledger import get_ledger

    monkeypatch.setenv("LLMOPS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    spec = load_pipeline("support_bot")
    failed = TaskFailed(
        dag_id="d", task_id="t", map_index=-1, try_number=1, error_type="ValueError", error="bad"
    )
    row = record(spec, failed, "task/d/t/try-1", "run-1")
    assert row.event_type == "task.failed"
    assert set(row.payload) == {"spec_hash", *failed.payload()}
    (stored,) = get_ledger().records(pipeline="support_bot", event_type=TaskFailed.name)
    assert TaskFailed.read(stored) == failed
    with pytest.raises(ValueError, match="not a 'model.promoted'"):
        ModelPromoted.read(stored)


def test_a_row_written_before_a_field_existed_reads_with_it_as_none() -> None:
    """Expect read() to take rows as written: a field the row lacks reads as None, not an error."""
    from llmops.ledger.store import LedgerRecord

    old = LedgerRecord(
        seq=1,
        event_id="e",
        recorded_at="2026-01-01T00:00:00+00:00",
        pipeline="p",
        event_type=ModelPromoted.name,
        subject="model/m/2",
        run_id="r",
        actor="llmops",
        payload={"spec_hash": "h", "model_name": "m", "version": "2", "champion": "2"},
        prev_hash="0" * 64,
        record_hash="1" * 64,
    )
    promoted = ModelPromoted.read(old)
    assert (promoted.model_name, promoted.version, promoted.previous) == ("m", "2", None)
    assert promoted.payload() == {"model_name": "m", "version": "2", "champion": "2"}
