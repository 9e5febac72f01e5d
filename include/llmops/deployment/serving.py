"""MLflow's scoring server around a registered version, and a smoke test through its API.

``mlflow models serve -m models:/<model>@champion`` is the standard way to put a pyfunc behind
HTTP: ``POST /invocations`` with ``{"dataframe_records": [{"prompt": "..."}]}`` (or
``{"inputs": ["..."]}``) answers ``{"predictions": ["..."]}``; ``GET /ping`` says whether it is up.
The server resolves the alias when it starts, so a long-running server picks up a new champion on
restart (the ``promoted`` / ``rolled_back`` webhooks are the signal to restart it).

The deploy step uses this module to prove that the version it just made champion loads and
answers through that API: it starts the server on the worker's loopback (``--env-manager local``:
the worker's own Python, which has everything the model needs), sends one request, records the
answer and the latency, and stops the server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

LOG_TAIL_CHARS = 3000


class ScoringServerError(RuntimeError):
    """The scoring server did not start, or did not answer the smoke request as expected."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def serve_command(
    model_uri: str, *, host: str = "127.0.0.1", port: int = 5001, workers: int = 1, timeout: int = 60
) -> list[str]:
    """The argv of MLflow's scoring server for ``model_uri`` (the same the docs tell people to run)."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        host,
        "-p",
        str(port),
        "-w",
        str(workers),
        "-t",
        str(timeout),
    ]


def interpreter_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with this interpreter's scripts folder first on PATH.

    `mlflow models serve` starts ``uvicorn`` by name through a shell; a venv run without being
    activated (``.venv/bin/llmops demo``) has no such script on PATH, so name the one beside
    ``sys.executable`` (not resolved: a venv's python is a symlink into the base install).
    """
    scripts = str(Path(sys.executable).parent)
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != scripts]
    return {**env, "PATH": os.pathsep.join([scripts, *rest])}


@dataclass
class ScoringServer:
    url: str
    process: subprocess.Popen[bytes]
    log_file: Path
    started_in_s: float

    def log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its uvicorn workers (its own process group), politely first."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def scoring_server(
    model_uri: str,
    *,
    tracking_uri: str,
    startup_timeout: float = 300.0,
    request_timeout: int = 120,
    env: dict[str, str] | None = None,
) -> Iterator[ScoringServer]:
    """Run ``mlflow models serve`` for ``model_uri`` on a free loopback port until the block ends.

    Waits for ``/ping`` to answer 200; a server that exits or stays silent past ``startup_timeout``
    raises `ScoringServerError` with the tail of its log. The server runs in its own process group,
    which is stopped whatever happens in the block.
    """
    import requests

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    folder = Path(tempfile.mkdtemp(prefix="llmops-serve-"))
    log_file = folder / "server.log"
    package_root = str(Path(__file__).resolve().parents[2])  # include/: the model's code path too
    child_env = interpreter_env(
        {
            **os.environ,
            **(env or {}),
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_REGISTRY_URI": tracking_uri,
            "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p),
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    started = time.monotonic()
    with open(log_file, "wb") as out:
        process = subprocess.Popen(
            serve_command(model_uri, port=port, timeout=request_timeout),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=folder,
            start_new_session=True,  # its own process group: stopped with its workers
        )
    server = ScoringServer(url=url, process=process, log_file=log_file, started_in_s=0.0)
    try:
        while True:
            if process.poll() is not None:
                raise ScoringServerError(
                    f"mlflow models serve for {model_uri} exited with status {process.returncode} "
                    f"before answering:\n{server.log_tail()}"
                )
            try:
                response = requests.get(f"{url}/ping", timeout=2)
                if response.status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - started > startup_timeout:
                raise ScoringServerError(
                    f"mlflow models serve for {model_uri} did not answer /ping within {startup_timeout:.0f}s:"
                    f"\n{server.log_tail()}"
                )
            time.sleep(0.5)
        server.started_in_s = round(time.monotonic() - started, 3)
        log.info("scoring server for %s up at %s after %.1fs", model_uri, url, server.started_in_s)
        yield server
    finally:
        _stop(process)


def invoke(url: str, prompts: list[str], *, timeout: float = 120.0, **params: Any) -> dict[str, Any]:
    """POST prompts to a scoring server's /invocations; returns predictions, status and latency."""
    import requests

    body: dict[str, Any] = {"dataframe_records": [{"prompt": p} for p in prompts]}
    if params:
        body["params"] = params
    started = time.perf_counter()
    response = requests.post(f"{url.rstrip('/')}/invocations", json=body, timeout=timeout)
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    try:
        payload = response.json()
    except ValueError:
        payload = {"error": response.text[:500]}
    return {"status": response.status_code, "latency_ms": latency_ms, "body": payload}


def smoke_test(
    model_uri: str,
    prompt: str,
    *,
    tracking_uri: str,
    startup_timeout: float = 300.0,
    request_timeout: float = 120.0,
    max_latency_ms: float | None = None,
) -> dict[str, Any]:
    """Serve ``model_uri``, ask it ``prompt`` once, and say whether it answered as a champion must.

    Passed: HTTP 200 with one non-empty string prediction (and within ``max_latency_ms`` when
    set). The first request is the one timed: it is what a caller meets after a restart.
    """
    with scoring_server(
        model_uri,
        tracking_uri=tracking_uri,
        startup_timeout=startup_timeout,
        request_timeout=int(request_timeout),
    ) as server:
        answered = invoke(server.url, [prompt], timeout=request_timeout)
        tail = server.log_tail() if answered["status"] != 200 else ""
    predictions = answered["body"].get("predictions") if isinstance(answered["body"], dict) else None
    answer = predictions[0] if isinstance(predictions, list) and len(predictions) == 1 else None
    problems = []
    if answered["status"] != 200:
        problems.append(f"HTTP {answered['status']}: {str(answered['body'])[:300]}")
    elif not isinstance(answer, str) or not answer.strip():
        problems.append(f"expected one non-empty answer, got {str(predictions)[:200]}")
    if max_latency_ms is not None and answered["latency_ms"] > max_latency_ms:
        problems.append(f"latency {answered['latency_ms']} ms is above max_latency_ms {max_latency_ms}")
    result = {
        "passed": not problems,
        "problems": problems,
        "http_status": answered["status"],
        "latency_ms": answered["latency_ms"],
        "startup_s": server.started_in_s,
        "prompt_chars": len(prompt),
        "answer": answer[:500] if isinstance(answer, str) else None,
    }
    if tail:
        result["server_log_tail"] = tail[-1000:]
    return result
