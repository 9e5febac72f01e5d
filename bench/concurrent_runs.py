"""Load and fault check: N ingest runs of two pipelines at once on a real Airflow deployment.

What runs: `airflow api-server`, `airflow scheduler` (LocalExecutor) and `airflow dag-processor`
over a PostgreSQL metadata DB, the governance ledger in PostgreSQL, the demo's tickets database
and REST API. Two pipelines (the demo spec and a copy under another name) each get N runs
triggered at the same moment through the REST API. Part way through, the scheduler is killed with
SIGKILL, which takes its LocalExecutor workers and their running tasks with it, and started again:
the orphaned task instances must be failed by the heartbeat timeout and retried.

Then it checks what a platform team would: every run succeeded; no ledger record is duplicated
(same pipeline, event, subject and run); the chain verifies; every run of a pipeline published the
same curated snapshot (identical inputs give identical outputs, killed or not); and it prints wall
time, runs per minute and the tries that the kill cost.

Run: `source scripts/env.sh && .venv/bin/python bench/concurrent_runs.py --runs 10`
(needs PostgreSQL on 127.0.0.1:5432 with trust auth; takes ~10-20 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

PROJECT = Path(__file__).resolve().parents[1]
PG = os.environ.get("LLMOPS_BENCH_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432")
PIPELINES = ("support_bot", "support_bot_eu")
DAG_FILE = '''"""Bench copy of a pipeline's Airflow DAGs (the DAG processor's safe mode looks for both words)."""

from llmops.orchestration.factory import build_pipeline_dags

build_pipeline_dags("{name}", globals())
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def prepare(work: Path, api_port: int, tickets_port: int, dbs: dict[str, str]) -> dict[str, str]:
    """The deployment's environment: pipelines and DAG files for both specs, Postgres stores."""
    pipelines, dags = work / "pipelines", work / "dags"
    pipelines.mkdir()
    dags.mkdir()
    source = (PROJECT / "include" / "pipelines" / "support_bot.yaml").read_text()
    for name in PIPELINES:
        text = source.replace("name: support_bot\n", f"name: {name}\n", 1)
        text = text.replace("model_name: support_bot\n", f"model_name: {name}\n", 1)
        (pipelines / f"{name}.yaml").write_text(text)
        (dags / f"{name}.py").write_text(DAG_FILE.format(name=name))
    users = {"bench": secrets.token_urlsafe(12)}
    (work / "passwords.json").write_text(json.dumps(users))
    home = work / "llmops"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LLMOPS_", "MLFLOW_"))}
    env.update(
        {
            "PYTHONPATH": str(PROJECT / "include"),
            "LLMOPS_PROJECT_DIR": str(PROJECT),
            "LLMOPS_HOME": str(home),
            "LLMOPS_PIPELINES_DIR": str(pipelines),
            "LLMOPS_LEDGER_URL": dbs["ledger"],
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "AIRFLOW_HOME": str(work / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": dbs["airflow"],
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(work / "no-plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "bench:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(work / "passwords.json"),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "45",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__OPENLINEAGE__DISABLED": "True",
            "TOKENIZERS_PARALLELISM": "false",
            "DEMO_TICKETS_API_TOKEN": "bench-token",
            "AIRFLOW_CONN_SUPPORT_TICKETS_DB": json.dumps(
                {"conn_type": "sqlite", "host": str(home / "demo" / "tickets.db")}
            ),
            "AIRFLOW_CONN_SUPPORT_TICKETS_API": json.dumps(
                {
                    "conn_type": "http",
                    "host": "127.0.0.1",
                    "port": tickets_port,
                    "schema": "http",
                    "password": "bench-token",
                }
            ),
        }
    )
    (work / "no-plugins").mkdir()
    env["BENCH_PASSWORD"] = users["bench"]
    return env


class Api:
    def __init__(self, base: str, password: str) -> None:
        self.base = base
        token = httpx.post(
            f"{base}/auth/token",
            json={"username": "bench", "password": password},
            timeout=30,
            trust_env=False,
        ).json()["access_token"]
        self.client = httpx.Client(
            base_url=f"{base}/api/v2",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            trust_env=False,
        )

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.patch(path, json=body)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(path, json=body)
        response.raise_for_status()
        return response.json()


def wait_for(what: str, check: Any, timeout: float, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            result = check()
            if result:
                return result
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def kill_scheduler_mid_run(api: Any, ingest: list[str], procs: dict[str, Any], started: float) -> float:
    """SIGKILL the scheduler (and its LocalExecutor workers) once a task runs; when it happened."""

    def running_tasks() -> list[str]:
        return [
            f"{ti['dag_id']}.{ti['task_id']}"
            for dag_id in ingest
            for ti in api.get(f"/dags/{dag_id}/dagRuns/~/taskInstances", state="running")["task_instances"]
        ]

    running = wait_for("a running task to kill", running_tasks, 300, every=0.5)
    kill_group(procs["scheduler"], signal.SIGKILL)
    killed_at = time.monotonic() - started
    print(f"killed the scheduler and its workers at {killed_at:.0f} s (running: {running})", flush=True)
    time.sleep(5)
    return killed_at


def ledger_checks(url: str) -> tuple[list[Any], int, list[Any]]:
    """Duplicate events, the record count and every curated publication, read from the ledger's tables."""
    from llmops.ledger.events import CuratedSnapshotPublished

    ledger = sa.create_engine(url)
    with ledger.connect() as conn:
        duplicates = conn.execute(
            sa.text(
                "SELECT pipeline, event_type, subject, run_id, count(*) FROM llmops_ledger_events "
                "GROUP BY pipeline, event_type, subject, run_id HAVING count(*) > 1"
            )
        ).all()
        records = conn.execute(sa.text("SELECT count(*) FROM llmops_ledger_events")).scalar()
        curated = conn.execute(
            sa.text(
                "SELECT pipeline, run_id, subject FROM llmops_ledger_events WHERE event_type = :event_type"
            ),
            {"event_type": CuratedSnapshotPublished.name},
        ).all()
    ledger.dispose()
    return duplicates, int(records or 0), curated


def summarise(
    states: dict[str, str],
    runs: int,
    wall: float,
    killed_at: float | None,
    tries: Counter,
    records: int,
    duplicates: list[Any],
    verified: bool,
    curated: list[Any],
) -> bool:
    """Print the figures as JSON; whether every check held."""
    published: dict[str, set[str]] = {}
    for pipeline, _, subject in curated:
        published.setdefault(pipeline, set()).add(subject)
    runs_with_curated = Counter(pipeline for pipeline, _, _ in curated)

    failed = sorted(r for r, s in states.items() if s != "success")
    print(
        json.dumps(
            {
                "runs": len(states),
                "triggered": 2 * runs,
                "succeeded": sum(1 for s in states.values() if s == "success"),
                "failed": failed,
                "wall_seconds": round(wall, 1),
                "runs_per_minute": round(len(states) / wall * 60, 2),
                "seconds_per_run_per_pipeline": round(wall / (len(states) / len(PIPELINES)), 1),
                "scheduler_killed_at_s": round(killed_at, 1) if killed_at else None,
                "task_instances_by_try_number": dict(sorted(tries.items())),
                "ledger_records": records,
                "ledger_duplicates": [list(map(str, d)) for d in duplicates],
                "ledger_verified": verified,
                "curated_snapshots_per_pipeline": {p: sorted(s) for p, s in published.items()},
                "runs_that_recorded_a_curated_snapshot": dict(runs_with_curated),
            },
            indent=2,
        )
    )
    ok = (
        not failed
        and not duplicates
        and verified
        and all(len(s) == 1 for s in published.values())
        and len(published) == len(PIPELINES)
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per pipeline, triggered at once")
    parser.add_argument(
        "--kill-after", type=float, default=45.0, help="seconds after triggering (0: no kill)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--keep", action="store_true", help="keep the work folder and databases")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="llmops-bench-runs-"))
    suffix = uuid.uuid4().hex[:8]
    dbs = {store: f"{PG}/llmops_bench_{store}_{suffix}" for store in ("airflow", "ledger")}
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for url in dbs.values():
            conn.execute(sa.text(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"'))
    api_port, tickets_port = free_port(), free_port()
    env = prepare(work, api_port, tickets_port, dbs)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        py = sys.executable
        subprocess.run([py, "-m", "llmops.cli", "demo-data"], env=env, check=True, capture_output=True)
        procs["tickets"] = start(
            [
                py,
                "-m",
                "llmops.demo.tickets_api",
                "--data",
                str(Path(env["LLMOPS_HOME"]) / "demo" / "api_tickets.json"),
                "--port",
                str(tickets_port),
            ],
            env,
            work / "tickets.log",
        )
        migrate = subprocess.run(
            [py, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True
        )
        if migrate.returncode:
            raise SystemExit(migrate.stderr[-3000:])
        airflow = [py, "-m", "airflow"]
        procs["api"] = start(
            [*airflow, "api-server", "-H", "127.0.0.1", "-p", str(api_port), "-w", "1"], env, work / "api.log"
        )
        procs["dag-processor"] = start([*airflow, "dag-processor"], env, work / "dag-processor.log")
        procs["scheduler"] = start([*airflow, "scheduler"], env, work / "scheduler.log")
        wait_for(
            "the API server",
            lambda: (
                httpx.get(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", trust_env=False).is_success
            ),
            120,
        )
        api = Api(f"http://127.0.0.1:{api_port}", env["BENCH_PASSWORD"])
        ingest = [f"{name}__ingest" for name in PIPELINES]
        wait_for(
            "both ingest DAGs to be parsed",
            lambda: {d["dag_id"] for d in api.get("/dags", dag_id_pattern="__ingest")["dags"]} >= set(ingest),
            300,
        )
        for dag_id in ingest:
            api.patch(f"/dags/{dag_id}", {"is_paused": False})

        started = time.monotonic()
        run_ids = {
            dag_id: [
                api.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None})["dag_run_id"]
                for _ in range(args.runs)
            ]
            for dag_id in ingest
        }
        print(f"triggered {args.runs} runs of each of {', '.join(ingest)}", flush=True)
        killed_at = None
        if args.kill_after > 0:
            time.sleep(args.kill_after)
            killed_at = kill_scheduler_mid_run(api, ingest, procs, started)
            procs["scheduler"] = start([*airflow, "scheduler"], env, work / "scheduler.log")

        def finished() -> dict[str, str] | None:
            states = {
                run["dag_run_id"]: run["state"]
                for dag_id in ingest
                for run in api.get(f"/dags/{dag_id}/dagRuns", limit=1000)["dag_runs"]
            }
            missing = [r for ids in run_ids.values() for r in ids if r not in states]
            if missing:
                raise SystemExit(f"triggered runs vanished: {missing}")
            # Unpausing also starts each DAG's latest scheduled run: it is counted with the rest.
            return states if all(s in ("success", "failed") for s in states.values()) else None

        states = wait_for("every run to finish", finished, args.timeout, every=5)
        wall = time.monotonic() - started

        tries = Counter()
        for dag_id in ingest:
            for ti in api.get(f"/dags/{dag_id}/dagRuns/~/taskInstances", limit=10000)["task_instances"]:
                tries[ti["try_number"]] += 1
        duplicates, records, curated = ledger_checks(dbs["ledger"])
        verify = subprocess.run(
            [py, "-m", "llmops.cli", "ledger-verify"], env=env, capture_output=True, text=True
        )
        ok = summarise(
            states, args.runs, wall, killed_at, tries, records, duplicates, verify.returncode == 0, curated
        )
        print("OK" if ok else f"PROBLEMS (logs in {work})")
        return 0 if ok else 1
    finally:
        for proc in procs.values():
            kill_group(proc)
        if not args.keep:
            with admin.connect() as conn:
                for url in dbs.values():
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
            shutil.rmtree(work, ignore_errors=True)
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
