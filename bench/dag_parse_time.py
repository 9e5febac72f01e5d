"""Parse time of the DAG files, as Airflow's DAG processor pays it.

Times are CPU seconds (user + system), what the scheduler host pays; wall time on a busy machine
mostly measures the other processes.

1. Per file, in a fresh interpreter (warm disk): the median CPU time over several runs of the file's
   own execution after `import airflow.sdk` (the floor every DAG file pays), with the compiled-spec
   cache off, cold (emptied before each run) and warm (filled by an earlier parse); the warm figure
   is also split into Airflow's own first-use costs (the operator modules, timetables and asset URI
   handlers the DAGs need, imported first) and what is left: the llmops part.
2. A DagBag of N generated pipelines (`llmops new-pipeline`'s spec and DAG file, N times, in a temp
   dir), in one fresh interpreter, with a warm spec cache and with it off; both also for N/2, to show
   whether the cost grows linearly.

Run: `source scripts/env.sh && .venv/bin/python bench/dag_parse_time.py [--runs 3] [--pipelines 100]`.
`LLMOPS_SPEC_CACHE=off` in the environment of a parse turns the spec cache off (the path before it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]

LOAD_FILE = """
import importlib, importlib.util, json, sys, time
import airflow.sdk
floor = 0.0
if sys.argv[2]:  # Airflow's own part first, timed apart: what is left is the llmops part
    started = time.process_time()
    for name in sys.argv[2].split(","):
        importlib.import_module(name)
    airflow.sdk.Asset(name="floor", uri="llmops://floor/curated")
    floor = time.process_time() - started
started = time.process_time()
spec = importlib.util.spec_from_file_location("dagfile", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps({"file": time.process_time() - started, "floor": floor}))
"""
AIRFLOW_USED = """
import importlib.util, json, sys
import airflow.sdk
before = set(sys.modules)
for i, path in enumerate(sys.argv[1:]):
    spec = importlib.util.spec_from_file_location(f"dagfile{i}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith("airflow."))))
"""
DAGBAG = """
import json, sys, time
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
started = time.process_time()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.process_time() - started
assert not bag.import_errors, bag.import_errors
print(json.dumps({"seconds": elapsed, "dags": len(bag.dags), "tasks": sum(len(d.tasks) for d in bag.dags.values())}))
"""


def airflow_modules(env: dict[str, str]) -> list[str]:
    """The Airflow modules that building the DAGs imports beyond `airflow.sdk` (operators,
    timetables, the asset URI handlers of the installed providers)."""
    out = subprocess.run(
        [sys.executable, "-c", AIRFLOW_USED, *map(str, sorted((PROJECT / "dags").glob("*.py")))],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def per_file(runs: int, env: dict[str, str], cache_dir: Path) -> None:
    """CPU time of each file's own execution, measured inside a fresh interpreter right after
    `import airflow.sdk` (no interpreter start-up in the figure, nothing subtracted)."""
    modules = ",".join(airflow_modules(env))

    def median(path: Path, floor: str = "", run_env: dict[str, str] = env, cold: bool = False) -> dict:
        samples = []
        for _ in range(runs):
            if cold:
                shutil.rmtree(cache_dir, ignore_errors=True)
            out = subprocess.run(
                [sys.executable, "-c", LOAD_FILE, str(path), floor],
                check=True,
                capture_output=True,
                text=True,
                env=run_env,
            ).stdout
            samples.append(json.loads(out.strip().splitlines()[-1]))
        return {key: statistics.median(s[key] for s in samples) for key in ("file", "floor")}

    print(f"CPU ms per DAG file beyond `import airflow.sdk`, fresh interpreter, median of {runs}:")
    print(
        f"{'file':22s} {'cache off':>9s} {'cold':>9s} {'warm':>9s}   of warm: Airflow's own part "
        "(operator modules, timetables, asset URI handlers) + the llmops part"
    )
    off_env = {**env, "LLMOPS_SPEC_CACHE": "off"}
    for path in sorted((PROJECT / "dags").glob("*.py")):
        off = median(path, run_env=off_env)["file"]
        cold = median(path, cold=True)["file"]
        warm = median(path)["file"]
        split = median(path, floor=modules)
        print(
            f"{path.name:22s} "
            + " ".join(f"{c * 1000:7.0f}ms" for c in (off, cold, warm))
            + f"   {split['floor'] * 1000:5.0f}ms + {split['file'] * 1000:4.0f}ms"
        )


def generate(root: Path, count: int) -> tuple[Path, Path]:
    """`count` pipelines as `llmops new-pipeline` writes them: a spec and a thin DAG file each."""
    sys.path.insert(0, str(PROJECT / "include"))
    from llmops.cli import scaffold_dag_source, scaffold_spec_text

    template = (PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text(encoding="utf-8")
    pipelines, dags = root / "pipelines", root / "dags"
    pipelines.mkdir(parents=True)
    dags.mkdir()
    for i in range(count):
        name = f"gen_bot_{i:03d}"
        (pipelines / f"{name}.yaml").write_text(scaffold_spec_text(name, template), encoding="utf-8")
        (dags / f"{name}.py").write_text(scaffold_dag_source(name), encoding="utf-8")
    return pipelines, dags


def dagbag(runs: int, count: int, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[tuple[int, str], float] = {}
        for n in (count // 2, count):
            pipelines, dags = generate(Path(tmp) / str(n), n)
            bag_env = {**env, "LLMOPS_PIPELINES_DIR": str(pipelines)}
            for mode in ("off", "on"):
                mode_env = {**bag_env, "LLMOPS_SPEC_CACHE": mode}
                if mode == "on":  # warm the cache once: the steady state every later parse sees
                    subprocess.run(
                        [sys.executable, "-c", DAGBAG, str(dags)],
                        check=True,
                        capture_output=True,
                        env=mode_env,
                    )
                seconds = []
                for _ in range(runs):
                    out = subprocess.run(
                        [sys.executable, "-c", DAGBAG, str(dags)],
                        check=True,
                        capture_output=True,
                        text=True,
                        env=mode_env,
                    ).stdout
                    result = json.loads(out.strip().splitlines()[-1])
                    seconds.append(result["seconds"])
                results[n, mode] = statistics.median(seconds)
                print(
                    f"DagBag of {n} pipelines ({result['dags']} DAGs, {result['tasks']} tasks), spec cache "
                    f"{mode:3s}: {results[n, mode]:.2f} CPU s (median of {runs}; {results[n, mode] / n * 1000:.1f} ms a pipeline)"
                )
        for mode in ("off", "on"):
            ratio = results[count, mode] / results[count // 2, mode]
            print(f"cache {mode}: {count} vs {count // 2} pipelines: x{ratio:.2f} (2.00 is linear)")
        print(
            f"warm cache vs off, {count} pipelines: x{results[count, 'off'] / results[count, 'on']:.2f} faster"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pipelines", type=int, default=100)
    parser.add_argument("--skip-files", action="store_true")
    parser.add_argument("--skip-dagbag", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        # A private LLMOPS_HOME: the cache starts empty and the bench leaves nothing behind.
        env = {**os.environ, "LLMOPS_HOME": home, "PYTHONPATH": str(PROJECT / "include")}
        if not args.skip_files:
            per_file(args.runs, env, Path(home) / "cache")
        if not args.skip_dagbag:
            dagbag(args.runs, args.pipelines, env)


if __name__ == "__main__":
    main()
