"""``make airflow-ui``: this project's DAGs in a local Airflow (``airflow standalone``) plus the demo's
tickets API, on one port and one bind address, and stopped together.

    python scripts/airflow_ui.py --port 8080 --host 127.0.0.1

Run it with the project's environment loaded (``source scripts/env.sh``; the Makefile does that).

What it sets, so that a changed port cannot break the tasks:

- ``AIRFLOW__API__PORT`` / ``AIRFLOW__API__HOST``: where the API server (and UI) listens;
- ``AIRFLOW__API__BASE_URL``: ``http://HOST:PORT``;
- ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL``: ``http://HOST:PORT/execution/``, where every task
  reports to (Airflow's default is ``http://localhost:8080/execution/`` whatever the port);
- ``AIRFLOW__CORE__PARALLELISM`` (the LocalExecutor's worker processes): the number of CPUs this
  process may use (at least 2), unless already set.

``airflow standalone`` and the tickets API each run in a session of their own. Ctrl-C (SIGINT) or
SIGTERM stops both, with every process of those sessions (task processes too), and then checks
that nothing listens on the port any more.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

STOP_GRACE_S = 25.0  # SIGTERM, then this long, then SIGKILL
READY_TIMEOUT_S = 300.0  # the API must answer by then
SCHEDULER_WAIT_S = 90.0  # after the API answers, how long the banner waits for a healthy scheduler
ANY_ADDRESS = {"0.0.0.0", "::", ""}


class Stop(Exception):
    """Raised by the signal handlers: leave the main loop and stop everything."""


def log(message: str) -> None:
    print(f"airflow-ui | {message}", flush=True)


def cpu_count() -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(2, count)


def url_host(host: str) -> str:
    """The host part of a URL that reaches a server bound to ``host`` from this machine."""
    if host in ANY_ADDRESS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def airflow_env(host: str, port: int, environ: dict[str, str]) -> dict[str, str]:
    """``environ`` plus the API address settings (all agree) and the executor's parallelism.

    Bound to every address (0.0.0.0), the API's base URL stays what it was (unset: relative), since
    ``http://127.0.0.1:PORT`` would send other machines' browsers to themselves after login; the
    tasks still reach the API on 127.0.0.1."""
    local_url = f"http://{url_host(host)}:{port}"
    env = dict(environ)
    env.update(
        {
            "AIRFLOW__API__HOST": host,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{local_url}/execution/",
        }
    )
    if host not in ANY_ADDRESS:
        env["AIRFLOW__API__BASE_URL"] = local_url
    if not any(
        k in environ
        for k in (
            "AIRFLOW__CORE__PARALLELISM",
            "AIRFLOW__CORE__PARALLELISM_CMD",
            "AIRFLOW__CORE__PARALLELISM_SECRET",
        )
    ):
        env["AIRFLOW__CORE__PARALLELISM"] = str(cpu_count())
    return env


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local server: never via a proxy


def health(base_url: str) -> dict | None:
    """The API's health document, or None while it does not answer."""
    try:
        with _NO_PROXY.open(f"{base_url}/api/v2/monitor/health", timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def session_processes(sid: int) -> list[int]:
    """Every live process of session ``sid`` (children that changed process group included)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        with contextlib.suppress(OSError):
            if os.getsid(pid) == sid and not _zombie(pid):
                pids.append(pid)
    return pids


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


class Component:
    """A command started in a session of its own; stopping it stops every process of that session."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        self.sid = self.proc.pid

    def exited(self) -> int | None:
        return self.proc.poll()

    def remaining(self) -> list[int]:
        self.proc.poll()  # reap the leader, so it does not count as alive
        return session_processes(self.sid)

    def signal_all(self, sig: int) -> None:
        for pid in self.remaining():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def stop_all(components: list[Component]) -> bool:
    """SIGTERM every process of every component, SIGKILL what is left after the grace period.
    True when everything ended on SIGTERM."""
    for component in components:
        component.signal_all(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    clean = True
    while True:
        left = {c.name: c.remaining() for c in components}
        if not any(left.values()):
            break
        if time.monotonic() > deadline:
            clean = False
            for component in components:
                if left[component.name]:
                    log(
                        f"{component.name}: still running after {STOP_GRACE_S:.0f} s, killing {left[component.name]}"
                    )
                    component.signal_all(signal.SIGKILL)
            time.sleep(0.5)
            if not any(c.remaining() for c in components):
                break
            deadline = time.monotonic() + 5
        time.sleep(0.2)
    for component in components:
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.proc.wait(timeout=5)
    return clean


def banner(base_url: str, env: dict[str, str], scheduler_ok: bool, tickets_url: str) -> str:
    airflow_home = Path(env["AIRFLOW_HOME"])
    passwords = env.get(
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
        str(airflow_home / "simple_auth_manager_passwords.json.generated"),
    )
    users = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    user_names = ", ".join(u.split(":")[0] for u in users.split(",") if u)
    if env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true":
        login = "no login (AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS is on)"
    else:
        login = f"user {user_names}, password in {passwords}"
    lines = [
        f"Airflow is up: {base_url}",
        f"Log in as {login}",
        "DAGs start paused; Trigger unpauses them (or use the toggle in the DAG list).",
        f"Demo tickets API: {tickets_url}",
        f"Tasks run {env['AIRFLOW__CORE__PARALLELISM']} at a time (AIRFLOW__CORE__PARALLELISM).",
        "Stop: Ctrl-C (stops Airflow, its task processes and the tickets API).",
    ]
    if not scheduler_ok:
        lines.insert(1, "The scheduler does not report healthy yet: runs start once it does.")
    width = max(len(line) for line in lines) + 4
    rule = "=" * width
    return "\n".join([rule, *(f"  {line}" for line in lines), rule])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8080, help="API server / UI port (default 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--skip-bootstrap", action="store_true", help="do not run `llmops bootstrap-demo` first"
    )
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1..65535, not {args.port}")
    for name in ("AIRFLOW_HOME", "LLMOPS_HOME"):
        if name not in os.environ:
            parser.error(f"{name} is not set: source scripts/env.sh first (the Makefile does)")
    return args


def preflight(host: str, port: int, tickets_port: int) -> bool:
    """Both ports free before anything starts (a taken port would otherwise fail deep in a log)."""
    if not port_free(host, port):
        log(f"cannot listen on {host}:{port}: the port is taken (or the address is not this machine's).")
        log("Stop what uses it, or pick another port: make airflow-ui PORT=8081")
        return False
    if not port_free("127.0.0.1", tickets_port):
        log(f"the demo tickets API port 127.0.0.1:{tickets_port} is taken: set DEMO_TICKETS_API_PORT")
        return False
    if host in ANY_ADDRESS:
        log(f"binding {host or 'every address'}: the UI is reachable from other machines")
    return True


def check_alive(components: list[Component]) -> None:
    for component in components:
        if component.exited() is not None:
            raise Stop(f"{component.name} exited with {component.proc.returncode}")


def wait_ready(base_url: str, components: list[Component]) -> bool:
    """Until the API answers and its scheduler is healthy (or ``SCHEDULER_WAIT_S`` after the API
    answered); True when the scheduler is healthy."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    answered_at: float | None = None
    while True:
        check_alive(components)
        doc = health(base_url)
        if doc is not None:
            if doc.get("scheduler", {}).get("status") == "healthy":
                return True
            answered_at = answered_at or time.monotonic()
            if time.monotonic() - answered_at > SCHEDULER_WAIT_S:
                return False
        if time.monotonic() > deadline:
            raise Stop(f"no answer on {base_url}/api/v2/monitor/health in {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.5)


def start(env: dict[str, str], tickets_port: int, *, bootstrap: bool, components: list[Component]) -> None:
    """Run ``llmops bootstrap-demo``, then start the tickets API and ``airflow standalone``; every
    process started is in ``components`` from its start on (for the clean-up)."""
    bindir = Path(sys.executable).parent
    if bootstrap:
        components.append(Component("bootstrap-demo", [str(bindir / "llmops"), "bootstrap-demo"], env))
        if components[-1].proc.wait() != 0:
            raise Stop(f"llmops bootstrap-demo failed (exit {components[-1].proc.returncode})")
        components.pop()
    tickets_data = Path(env["LLMOPS_HOME"]) / "demo" / "api_tickets.json"
    tickets = [sys.executable, "-m", "llmops.demo.tickets_api", "--data", str(tickets_data)]
    components.append(Component("tickets-api", [*tickets, "--port", str(tickets_port)], env))
    components.append(Component("airflow", [str(bindir / "airflow"), "standalone"], env))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    host, port = args.host, args.port
    tickets_port = int(os.environ.get("DEMO_TICKETS_API_PORT", "8765"))
    if not preflight(host, port, tickets_port):
        return 2
    env = airflow_env(host, port, dict(os.environ))
    base_url = f"http://{url_host(host)}:{port}"
    for key in ("HOST", "PORT", "BASE_URL"):
        log(f"AIRFLOW__API__{key}={env.get(f'AIRFLOW__API__{key}', '(unset)')}")
    for key in ("EXECUTION_API_SERVER_URL", "PARALLELISM"):
        log(f"AIRFLOW__CORE__{key}={env[f'AIRFLOW__CORE__{key}']}")

    components: list[Component] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:  # the first signal stops everything; later ones wait for that
            stopping = True
            raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    status, reason = 0, "exit"
    try:
        start(env, tickets_port, bootstrap=not args.skip_bootstrap, components=components)
        scheduler_ok = wait_ready(base_url, components)
        print(banner(base_url, env, scheduler_ok, f"http://127.0.0.1:{tickets_port}"), flush=True)
        while True:
            check_alive(components)
            time.sleep(0.5)
    except Stop as stop:
        stopping = True
        reason = str(stop)
        if reason not in ("SIGINT", "SIGTERM"):
            log(reason)
            status = 1
    finally:
        stopping = True
        if components:
            log(f"stopping ({reason}): {', '.join(c.name for c in components)}")
            if not stop_all(components):
                status = status or 1
            if not port_free(host, port):
                log(f"something still listens on {host}:{port}")
                status = status or 1
    log("stopped: nothing it started is left running" if status == 0 else "stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
