"""The pinned spec of a run: written once, read by every later task, refused when tampered with."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from llmops import storage
from llmops.specs import SpecError, spec_hash
from llmops.specs.pinned import pin_spec, pinned_spec_uri, run_spec

PROJECT = Path(__file__).resolve().parents[2]
ORCHESTRATION = PROJECT / "include" / "llmops" / "orchestration"
# Where reading the YAML is right: building DAGs at parse time, and recording a failure that
# happened before the run pinned its spec.
READS_YAML = {"factory.py", "failures.py"}


@pytest.fixture
def pipelines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    raw = yaml.safe_load((PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text())
    (folder / "support_bot.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LLMOPS_PIPELINES_DIR", str(folder))
    monkeypatch.setenv("LLMOPS_LAKE_ROOT", str(tmp_path / "lake"))
    return folder


def _edit(folder: Path) -> None:
    path = folder / "support_bot.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["gates"][0]["max"] = 99.0
    path.write_text(yaml.safe_dump(raw))


def test_later_reads_and_a_retried_pin_keep_the_spec_the_run_started_with(pipelines: Path) -> None:
    """Expect run_spec after a YAML edit, and pin_spec again (a retried first task), to return the
    pinned spec; another run gets the edited one."""
    first = pin_spec("support_bot", "run-1")
    _edit(pipelines)
    assert spec_hash(run_spec("support_bot", "run-1")) == spec_hash(first)
    assert spec_hash(pin_spec("support_bot", "run-1")) == spec_hash(first)
    assert run_spec("support_bot", "run-2").gates[0].max == 99.0


def test_a_pinned_copy_changed_in_the_lake_is_refused(pipelines: Path) -> None:
    """Expect a pinned spec whose content no longer matches its hash to fail, naming the file."""
    pin_spec("support_bot", "run-1")
    uri = pinned_spec_uri("support_bot", "run-1")
    document = json.loads(storage.read_bytes(uri))
    document["spec"]["privacy"]["free_text"] = None  # quietly switch off redaction
    storage.write_bytes(uri, json.dumps(document).encode())
    with pytest.raises(SpecError, match="does not match its recorded hash") as raised:
        run_spec("support_bot", "run-1")
    assert "spec.json" in str(raised.value)


def test_an_unreadable_pinned_copy_is_refused(pipelines: Path) -> None:
    """Expect a truncated pinned file to fail with a spec error, not a JSON traceback."""
    pin_spec("support_bot", "run-1")
    storage.write_bytes(pinned_spec_uri("support_bot", "run-1"), b'{"spec": {"name": ')
    with pytest.raises(SpecError, match="cannot be read"):
        run_spec("support_bot", "run-1")


def _yaml_readers(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "load_pipeline"
    ]


def test_no_task_step_reads_the_spec_from_yaml() -> None:
    """Expect every task step to read the run's pinned spec (run_spec / pin_spec), never the YAML."""
    offending = {
        str(path.relative_to(ORCHESTRATION)): lines
        for path in ORCHESTRATION.rglob("*.py")
        if path.name not in READS_YAML and (lines := _yaml_readers(path))
    }
    assert offending == {}
