"""Parse time of each DAG file, as Airflow's DAG processor pays it (fresh interpreter, warm disk).

Prints, per file, the median wall time over several runs of: interpreter start + `airflow.sdk`
import (the floor every DAG file pays, measured alone as the baseline) and the file's own cost on
top of it. Run: `source scripts/env.sh && .venv/bin/python bench/dag_parse_time.py`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
RUNS = 5

BASELINE = "import airflow.sdk"
LOAD_FILE = """
import importlib.util, sys
import airflow.sdk
spec = importlib.util.spec_from_file_location("dagfile", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
"""


def timed(code: str, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    baseline = statistics.median(timed(BASELINE) for _ in range(RUNS))
    print(f"baseline (python + airflow.sdk import): {baseline:.3f} s")
    for path in sorted((PROJECT / "dags").glob("*.py")):
        total = statistics.median(timed(LOAD_FILE, str(path)) for _ in range(RUNS))
        print(f"{path.name}: {total:.3f} s total, {total - baseline:.3f} s for the file itself")


if __name__ == "__main__":
    main()
