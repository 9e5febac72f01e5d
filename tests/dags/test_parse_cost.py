"""What parsing a DAG file costs: no YAML once the spec cache is warm, no llmops runtime module, and
the same DAGs whether the spec came from the cache or from its YAML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
DAGS_DIR = PROJECT / "dags"
DAG_FILES = sorted(str(p) for p in DAGS_DIR.glob("*.py"))

#: llmops modules a task imports when it runs, never a DAG file when it is parsed.
RUNTIME_ONLY = (
    "llmops.ledger",
    "llmops.storage",
    "llmops.lake",
    "llmops.ingest",
    "llmops.evaluation",
    "llmops.launch",
    "llmops.registry",
    "llmops.monitoring",
    "llmops.lineage",
    "llmops.reports",
    "llmops.snapshots",
    "llmops.quality",
    "llmops.privacy.crypto",
    "llmops.orchestration.failures",
    "llmops.orchestration.monitor",
    "llmops.orchestration.deploy",
)

_LOAD = """
import importlib.util, sys
for i, path in enumerate(sys.argv[1:]):
    spec = importlib.util.spec_from_file_location(f"dagfile{i}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
"""

_DESCRIBE = """
import json
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
bag = DagBag(dag_folder=%r)
assert not bag.import_errors, bag.import_errors
# What the DAG processor sends the scheduler: ids, tasks, wiring, params, access control, docs, schedules.
print(json.dumps({d: DagSerialization.to_dict(dag) for d, dag in sorted(bag.dags.items())}, sort_keys=True, default=str))
"""


def _run(code: str, *args: str, home: Path, **env: str) -> str:
    environ = {
        **os.environ,
        "PYTHONPATH": str(PROJECT / "include"),
        "LLMOPS_HOME": str(home),
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=environ, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def test_warm_cache_parse_reads_no_yaml_and_no_runtime_module(tmp_path):
    """Expect a parse after the first to take each spec from the cache (the YAML parser refuses to
    run), and no DAG file to import an llmops module that only tasks need."""
    _run(_LOAD, *DAG_FILES, home=tmp_path)  # fills the cache
    probe = (
        "import json, sys\n"
        "from llmops.specs import loader\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('spec YAML parsed despite a warm cache')\n"
        "loader._parse_yaml = refuse\n"
        + _LOAD
        + f"runtime = {RUNTIME_ONLY!r}\n"
        + "print(json.dumps(sorted(m for m in sys.modules if m in runtime or m.startswith(tuple(r + '.' for r in runtime)))))\n"
    )
    assert json.loads(_run(probe, *DAG_FILES, home=tmp_path)) == []


def test_dags_are_the_same_from_the_cache_as_from_yaml(tmp_path):
    """Expect identical DAGs (ids, tasks, wiring, params, access control, docs, schedules) with the
    spec cache off, cold and warm."""
    describe = _DESCRIBE % str(DAGS_DIR)
    off = _run(describe, home=tmp_path, LLMOPS_SPEC_CACHE="off")
    assert not (tmp_path / "cache").exists()
    cold = _run(describe, home=tmp_path)
    assert list((tmp_path / "cache" / "specs").glob("*.json"))
    warm = _run(describe, home=tmp_path)
    assert json.loads(off) == json.loads(cold) == json.loads(warm)
    assert {"support_bot__finetune", "northwind_kb__ingest", "data_retention"} <= set(json.loads(off))
