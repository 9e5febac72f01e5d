"""The process entrypoint of a job: ``sys.exit(run_job(main))`` in a job's ``__main__``.

A job is stopped with SIGINT first (:func:`llmops.launch.local.run_local`, torchrun), so it can end
its MLflow run and leave a result. Python turns SIGINT into KeyboardInterrupt only when the process
started with SIGINT not ignored, and an ignored SIGINT passes through fork and exec: a scheduler
started in the background by a non-interactive shell (``airflow scheduler &``), or any parent that
ignores it, would leave the job deaf to the interrupt until it is killed. So the job installs the
handler itself, whatever it inherited.

SIGTERM (a pod deleted, the supervisor's second signal) ends the job with exit status 143 through
``SystemExit``, so that its ``finally`` blocks still run: the private scratch folders that hold
decrypted inputs and plaintext outputs are removed (only SIGKILL leaves them behind).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def _exit_on_terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def listen_for_interrupts() -> None:
    """Turn SIGINT into KeyboardInterrupt and SIGTERM into SystemExit in this process, even when
    the parent ignored them."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_on_terminate)


def run_job(main: Callable[[], int | None]) -> int | None:
    """Run a job's main with interrupts enabled; its return value is the process's exit status."""
    listen_for_interrupts()
    return main()
