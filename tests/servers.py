"""Helpers for tests that talk to real servers on 127.0.0.1: free ports, the skip-or-fail rule
for servers the machine should run, and an MLflow tracking server process.

Importable from every test module and conftest (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_server(name: str, port: int) -> None:
    """Skip (visibly) when a local server is absent; in CI a missing server is a failure."""
    if reachable("127.0.0.1", port):
        return
    message = f"{name} is not reachable on 127.0.0.1:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI must provide it)")
    pytest.skip(message)


@contextlib.contextmanager
def run_mlflow_server(
    root: Path, backend_store_uri: str, artifacts_destination: str, env: dict[str, str]
) -> Iterator[str]:
    """``mlflow server`` on a free loopback port (proxied artifacts, one worker); yields its URL
    once ``/health`` answers, and stops it afterwards. Its log is ``root/server.log``."""
    port = free_port()
    with (root / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                backend_store_uri,
                "--artifacts-destination",
                artifacts_destination,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{url}/health", timeout=2) as response,
                ):
                    if response.status == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
