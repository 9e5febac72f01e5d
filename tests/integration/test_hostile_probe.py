"""The hostile-input probe (tests/hostile_probe.py) in the suite: every bad spec, row, parameter and
tamper case ends in its named error or a verified repair; no silent success, no lost row, no leak."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hostile_probe  # noqa: E402


def test_every_hostile_input_gets_its_named_error(tmp_path, monkeypatch):
    for name in ("LLMOPS_PIPELINES_DIR", "LLMOPS_GX_DIR", "LLMOPS_LAKE_ROOT", "LLMOPS_LEDGER_URL"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    monkeypatch.setenv("LLMOPS_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("LLMOPS_LINEAGE_DIR", str(tmp_path / "lineage"))
    tally = hostile_probe.run_probe(tmp_path)
    print(json.dumps(tally.as_dict()))
    assert tally.silent == [] and tally.unclear == []
    assert tally.rows_lost == 0 and tally.leaks == []
    assert tally.clear == tally.tried >= 38


def test_the_leak_check_finds_a_planted_value(tmp_path):
    """The probe's leak check can fail: a planted value in the logs or a plaintext Parquet file of
    the lake is reported."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "lake" / "curated").mkdir(parents=True)
    pq.write_table(
        pa.table({"body": [hostile_probe.PLANTED[2]]}), tmp_path / "lake" / "curated" / "p.parquet"
    )
    assert hostile_probe._leaks(tmp_path, f"error: {hostile_probe.PLANTED[0]}") == [
        f"{hostile_probe.PLANTED[2]!r} in the plaintext lake",
        f"{hostile_probe.PLANTED[0]!r} in the logs",
    ]
