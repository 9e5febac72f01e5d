"""Run a training or evaluation job as a local subprocess, streaming its log lines.

The same module and arguments run in a Kubernetes pod in production; only the launcher differs.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """The job process exited non-zero; the message carries its last log lines."""


def job_command(module: str, config_path: str) -> list[str]:
    """The container/process arguments for a job: identical for every launcher."""
    return ["-m", module, "--config", config_path]


def run_local(
    module: str,
    config_path: Path,
    *,
    env: dict[str, str] | None = None,
    python: str | None = None,
    cwd: Path | None = None,
) -> None:
    from llmops.settings import get_settings

    settings = get_settings()
    command = [python or settings.python_executable, *job_command(module, str(config_path))]
    child_env = {**os.environ, **(env or {})}
    include_dir = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (include_dir, child_env.get("PYTHONPATH", "")) if p)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.setdefault("TOKENIZERS_PARALLELISM", "false")
    child_env.setdefault("HF_HUB_OFFLINE", "1")
    child_env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    log.info("launching: %s", " ".join(command))
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env,
        cwd=cwd,
        text=True,
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
            # Killed task or interrupt: never leave the job running behind us.
            proc.kill()
            proc.wait()
            raise
    if returncode != 0:
        raise JobFailed(f"{module} exited with code {returncode}; last lines:\n" + "\n".join(tail))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use llmops.launch.local.run_local from a task")
