"""Run a training or evaluation job as a local subprocess, streaming its log lines.

The same module and arguments run in a Kubernetes pod in production (:mod:`llmops.launch.kubernetes`);
both build the command with :func:`llmops.launch.command.job_argv`, so only the launcher differs.

The child stays in the task's process group on purpose: Airflow 3's supervisor signals the task's
whole process group (SIGINT, then SIGTERM, then SIGKILL), which reaches the job even when the task
process itself dies before it can clean up. When the task is interrupted in Python (a killed or
timed-out task raises inside the reading loop), :func:`run_local` stops the child itself: SIGINT
first, so a trainer (or torchrun, which forwards it to its workers) can end its MLflow run, then
SIGKILL after `kill_grace_seconds`.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from llmops.launch.command import JOB_ENV_DEFAULTS, TORCHRUN, job_argv

if TYPE_CHECKING:
    from llmops.specs.schema import Distributed

log = logging.getLogger(__name__)

TAIL_LINES = 40


class JobFailed(RuntimeError):
    """The job process exited non-zero; the message carries its last log lines."""


def job_command(module: str, config_path: str) -> list[str]:
    """The job's arguments after the interpreter (kept for callers of the earlier API)."""
    return job_argv(module, config_path)[1:]


def _torchrun_for(python: str) -> str:
    """torchrun from the same environment as `python` (a venv's bin/ need not be on PATH)."""
    candidate = Path(python).parent / TORCHRUN  # not resolved: a venv's python is a symlink
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else TORCHRUN


def _stop(proc: subprocess.Popen[str], grace_seconds: float) -> None:
    """Interrupt the child, then kill it if it has not exited within the grace period."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        pass
    finally:
        # Also reached when a second interrupt arrives while waiting: never leave it running.
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_local(
    module: str,
    config_uri: str | os.PathLike[str],
    *,
    distributed: Distributed | None = None,
    env: dict[str, str] | None = None,
    python: str | None = None,
    cwd: Path | None = None,
    kill_grace_seconds: float = 10.0,
) -> None:
    """Run ``python -m MODULE --config CONFIG_URI`` to completion, logging each output line.

    Raises :class:`JobFailed` with the last lines of output when the job exits non-zero. If this
    call is interrupted (task killed, timed out, KeyboardInterrupt), the job is stopped before the
    exception propagates, so no training process outlives its task.
    """
    from llmops.settings import get_settings

    interpreter = python or get_settings().python_executable
    command = job_argv(module, os.fspath(config_uri), distributed, python=interpreter)
    if command[0] == TORCHRUN:
        command[0] = _torchrun_for(interpreter)
    child_env = {**os.environ, **(env or {})}
    include_dir = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (include_dir, child_env.get("PYTHONPATH", "")) if p)
    for key, value in JOB_ENV_DEFAULTS.items():
        child_env.setdefault(key, value)
    log.info("launching: %s", " ".join(command))
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env,
        cwd=cwd,
        text=True,
        errors="replace",  # a stray non-UTF-8 byte in a log must not abort a training run
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip()
                tail.append(line)
                log.info("[%s] %s", module, line)
            returncode = proc.wait()
        except BaseException:
            # Killed task, timeout or interrupt: never leave the job running behind us.
            log.warning("interrupted: stopping %s (pid %s)", module, proc.pid)
            _stop(proc, kill_grace_seconds)
            raise
    if returncode != 0:
        raise JobFailed(f"{module} exited with code {returncode}; last lines:\n" + "\n".join(tail))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use llmops.launch.local.run_local from a task")
