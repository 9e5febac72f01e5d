"""A real ``airflow api-server`` on 127.0.0.1 for tests: the session's metadata DB, this project's
plugins, the simple auth manager with known users (or the FAB auth manager with users a test created
in its own database). Tests talk to it over HTTP like the UI does."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

PROJECT = Path(__file__).resolve().parents[2]
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


@dataclass(frozen=True)
class ApiServer:
    base_url: str
    users: dict[str, str]  # username -> password
    log_file: Path
    reports: list[dict[str, Any]] = field(default_factory=list)  # reports a test module wrote
    jwt_secret: str = ""  # what an executor in the test process signs task workloads with

    def token(self, username: str = "admin") -> str:
        response = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": username, "password": self.users[username]},
            timeout=30,
            trust_env=False,
        )
        assert response.status_code == 201, response.text
        return response.json()["access_token"]


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session, and its children."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def _simple_auth(work: Path, roles: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Users ``{name: role}`` of the simple auth manager (random passwords), and its settings."""
    users = {name: secrets.token_urlsafe(12) for name in roles}
    passwords = work / "passwords.json"
    passwords.write_text(json.dumps(users))
    return users, {
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{n}:{r}" for n, r in roles.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }


@contextlib.contextmanager
def run_api_server(
    work: Path,
    roles: dict[str, str],
    *,
    fab_users: dict[str, str] | None = None,
    env_overrides: dict[str, str] | None = None,
) -> Iterator[ApiServer]:
    """Start ``airflow api-server`` with simple-auth users ``{name: role}`` (random passwords), or,
    given ``fab_users`` ``{name: password}``, with the FAB auth manager and those users (already in
    the database ``env_overrides`` names); stop it after."""
    if fab_users is not None:
        users, auth_env = fab_users, {"AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER}
    else:
        users, auth_env = _simple_auth(work, roles)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    jwt_secret = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(
        {
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
            **auth_env,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            "AIRFLOW__API__BASE_URL": base_url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT / "include"), env.get("PYTHONPATH")])),
            **(env_overrides or {}),
        }
    )
    log_file = work / "api-server.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"airflow api-server exited with {proc.returncode}:\n{tail(log_file)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/api/v2/monitor/health", timeout=2, trust_env=False).is_success:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"airflow api-server did not answer on {base_url}:\n{tail(log_file)}")
            time.sleep(0.3)
        yield ApiServer(base_url=base_url, users=users, log_file=log_file, jwt_secret=jwt_secret)
    finally:
        stop_process_group(proc)
