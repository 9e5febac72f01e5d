"""``make airflow-ui PORT=<p> HOST=127.0.0.1`` as a user runs it: on a port that is not 8080, the API
answers there, on 127.0.0.1 only, tasks reach the execution API (a DAG's task succeeds), and Ctrl-C
stops every process it started and frees the port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest
from servers import free_port, reachable

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PROJECT = Path(__file__).resolve().parents[2]
BANNER = "Airflow is up:"
STOPPED = "stopped: nothing it started is left running"


def _user_env(home: Path, tickets_port: int) -> dict[str, str]:
    """The test's environment as a user's shell would have it: nothing of the test session's Airflow or
    llmops settings (scripts/env.sh sets those), a home of its own, the venv first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy")
        and not k.startswith(("AIRFLOW", "LLMOPS_", "MLFLOW_", "DEMO_TICKETS_", "PYTEST_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home / "airflow"),
            "LLMOPS_HOME": str(home / "llmops"),
            "DEMO_TICKETS_API_PORT": str(tickets_port),
            "PATH": f"{PROJECT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "NO_COLOR": "1",
        }
    )
    return env


def _wait_for(log_file: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_file.read_text(errors="replace"):
        if proc.poll() is not None:
            pytest.fail(f"make airflow-ui exited with {proc.returncode}:\n{_tail(log_file)}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} in {timeout:.0f} s:\n{_tail(log_file)}")
        time.sleep(0.5)


def _tail(log_file: Path, chars: int = 6000) -> str:
    return log_file.read_text(errors="replace")[-chars:]


def _started(root: psutil.Process) -> list[psutil.Process]:
    """Every process under ``root``, and every process in the sessions they run in (a task process
    moves to a process group of its own)."""
    tree = [root, *root.children(recursive=True)]
    sessions = set()
    for proc in tree:
        with contextlib.suppress(OSError):
            sessions.add(os.getsid(proc.pid))
    sessions.discard(os.getsid(0))
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(proc.pid) in sessions and proc not in tree:
                tree.append(proc)
    return tree


def _alive(procs: list[psutil.Process]) -> list[str]:
    alive = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
    return alive


def _other_local_addresses() -> list[str]:
    """IPv4 addresses of this machine other than 127.0.0.1 (127.0.0.2 is always one on Linux)."""
    addresses = {"127.0.0.2"}
    for addrs in psutil.net_if_addrs().values():
        addresses.update(a.address for a in addrs if a.family == socket.AF_INET and a.address != "127.0.0.1")
    return sorted(addresses)


def _task_reaches_execution_api(base_url: str, password: str, log_file: Path) -> None:
    """Unpause and trigger ``data_retention`` (a dry run), as the UI's Trigger does, and wait until
    its first task, ``pipelines`` (lists the specs), succeeds in a run: the task ran and reported
    its state through the execution API."""
    client = httpx.Client(base_url=base_url, timeout=30, trust_env=False)
    token = client.post("/auth/token", json={"username": "admin", "password": password})
    assert token.status_code == 201, token.text
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    deadline = time.monotonic() + 90
    while (dag := client.get("/api/v2/dags/data_retention")).status_code == 404:
        assert time.monotonic() < deadline, f"data_retention never parsed:\n{_tail(log_file)}"
        time.sleep(1)
    assert dag.status_code == 200, dag.text
    assert dag.json()["is_paused"], "DAGs start paused (the README says so)"
    assert client.patch("/api/v2/dags/data_retention", json={"is_paused": False}).status_code == 200
    run = client.post(
        "/api/v2/dags/data_retention/dagRuns",
        json={"logical_date": None, "conf": {"pipeline": "support_bot", "dry_run": True}},
    )
    assert run.status_code == 200, run.text
    deadline = time.monotonic() + 120
    states: list[str | None] = []
    while time.monotonic() < deadline:
        tis = client.get("/api/v2/dags/data_retention/dagRuns/~/taskInstances").json()["task_instances"]
        states = [ti["state"] for ti in tis if ti["task_id"] == "pipelines"]
        if "success" in states:
            return
        assert not {"failed", "up_for_retry"} & set(states), f"pipelines task: {states}\n{_tail(log_file)}"
        time.sleep(1)
    pytest.fail(f"no pipelines task succeeded in 120 s (states {states}):\n{_tail(log_file)}")


def test_make_airflow_ui_on_another_port_binds_loopback_runs_tasks_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    port, tickets_port = free_port(), free_port()
    assert port != 8080
    env = _user_env(tmp_path, tickets_port)
    # `llmops bootstrap-demo` trains the demo's base model (minutes) unless it exists: a stand-in
    # (it only has to exist; no task of this test loads it) keeps the test to Airflow.
    model = tmp_path / "llmops" / "base_models" / "tiny-support-base"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    log_file = tmp_path / "make-airflow-ui.log"
    with log_file.open("wb") as log:
        # -o venv: never reinstall the virtual environment from a test. A session of its own, as a
        # terminal's foreground job: Ctrl-C there is SIGINT to the whole group (make and the script).
        proc = subprocess.Popen(
            ["make", "-s", "-o", "venv", "airflow-ui", f"PORT={port}", "HOST=127.0.0.1"],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    started: list[psutil.Process] = []
    try:
        _wait_for(log_file, BANNER, proc, timeout=240)
        base_url = f"http://127.0.0.1:{port}"
        out = log_file.read_text(errors="replace")
        assert f"{BANNER} {base_url}" in out
        assert "DAGs start paused" in out and "Ctrl-C" in out
        passwords = tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated"
        assert str(passwords) in out

        health = httpx.get(f"{base_url}/api/v2/monitor/health", timeout=10, trust_env=False)
        assert health.status_code == 200, health.text
        assert health.json()["metadatabase"]["status"] == "healthy"

        listening = [
            c.laddr
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        assert listening and {a.ip for a in listening} == {"127.0.0.1"}, listening
        for address in _other_local_addresses():
            assert not reachable(address, port), f"the API answers on {address}:{port}"

        started = _started(psutil.Process(proc.pid))
        scheduler = next(p for p in started if p.cmdline()[-1:] == ["scheduler"])
        scheduler_env = scheduler.environ()
        assert scheduler_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{base_url}/execution/"
        assert scheduler_env["AIRFLOW__API__BASE_URL"] == base_url
        assert scheduler_env["AIRFLOW__CORE__PARALLELISM"] == str(max(2, len(os.sched_getaffinity(0))))

        _task_reaches_execution_api(base_url, json.loads(passwords.read_text())["admin"], log_file)
        assert reachable("127.0.0.1", tickets_port), "the demo tickets API is not running"
        started = _started(psutil.Process(proc.pid))  # the task processes too

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=90)
        assert STOPPED in _tail(log_file), _tail(log_file)
        # make re-raises the SIGINT it got itself, after its recipe (the script) ended
        assert proc.returncode in (0, -signal.SIGINT), _tail(log_file)
        deadline = time.monotonic() + 5
        while (alive := _alive(started)) and time.monotonic() < deadline:
            time.sleep(0.2)  # only zombies waiting for init to reap them get this grace
        assert not alive, f"still running after Ctrl-C: {alive}"
        assert not reachable("127.0.0.1", port) and not reachable("127.0.0.1", tickets_port)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        for leftover in started:
            with contextlib.suppress(psutil.Error):
                leftover.kill()


def test_make_airflow_ui_takes_port_and_host_from_the_command_line_only() -> None:
    def recipe(*args: str, env: dict[str, str] | None = None) -> str:
        out = subprocess.run(
            ["make", "-n", "-o", "venv", "-o", "airflow-db", "airflow-ui", *args],
            cwd=PROJECT,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return " ".join(out.replace("\\\n", " ").split())  # one line, continuations joined

    assert 'airflow_ui.py --port "9091" --host "127.0.0.5"' in recipe("PORT=9091", "HOST=127.0.0.5")
    # A PORT or HOST that the shell happens to export (tcsh exports HOST) does not move the UI.
    assert 'airflow_ui.py --port "8080" --host "127.0.0.1"' in recipe(env={"PORT": "5000", "HOST": "box"})
